"""The Anthropic Messages API (gitops_agent/models/anthropic_model.py)."""

from __future__ import annotations

from typing import Any

from gitops_agent.models.registry import Provider


def _build(name: str, endpoint: str | None, timeouts: Any, kw: dict[str, Any]) -> Any:
    from gitops_agent.models.anthropic_model import AnthropicModel  # the SDK only when a model is built

    return AnthropicModel(name, timeouts=timeouts, **kw)


PROVIDER = Provider(
    "anthropic",
    _build,
    keys=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
    keys_hint="ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a proxy)",
    claims=("claude",),
    example="anthropic:claude-haiku-4-5",
)
