"""Model providers behind one protocol (agent.seams.Model), chosen by a spec string.

    anthropic:claude-haiku-4-5        the Anthropic Messages API (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL)
    claude-sonnet-4-6                 same (a bare claude-* id means Anthropic)
    openai:gpt-4o-mini                any OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY)
    openai:qwen2.5-coder@http://localhost:11434/v1   an endpoint given inline (Ollama, vLLM, …)
    scripted:demo                     the shipped demo script
    scripted:path/to/script.yaml      a scripted/replay model
"""

from __future__ import annotations

from pathlib import Path

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.messages import Message, ModelRequest, ModelResponse, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock

__all__ = [
    "Message", "ModelRequest", "ModelResponse", "TextBlock", "ToolResultBlock", "ToolSpec", "ToolUseBlock",
    "make_model", "model_id",
]

DEMO_SCRIPT = Path(__file__).resolve().parent.parent / "demo" / "script.yaml"


def model_id(spec: str) -> str:
    """The bare model id of a spec, used for pricing and trailers."""
    provider, _, rest = spec.partition(":")
    if not rest:
        return spec
    if provider == "scripted":
        return "scripted"
    return rest.split("@", 1)[0]


def make_model(spec: str, timeouts=None, **kw):
    """Build a model from its spec string; a bad spec is a ConfigError naming it. ``timeouts``
    (gitops_agent.models.retry.TimeoutPolicy) bounds the calls of the HTTP providers."""
    spec = (spec or "").strip()
    if not spec:
        raise ConfigError("empty model spec; use e.g. anthropic:claude-haiku-4-5, openai:gpt-4o-mini or scripted:demo")
    provider, sep, rest = spec.partition(":")
    if not sep:
        if spec.startswith("claude"):
            provider, rest = "anthropic", spec
        else:
            raise ConfigError(f"model spec {spec!r} has no provider; use anthropic:{spec}, openai:{spec} or scripted:FILE")
    if provider == "anthropic":
        from gitops_agent.models.anthropic_model import AnthropicModel

        return AnthropicModel(rest, timeouts=timeouts, **kw)
    if provider == "openai":
        from gitops_agent.models.openai_model import OpenAIModel

        name, _, url = rest.partition("@")
        if url:
            kw.setdefault("base_url", url)
        return OpenAIModel(name, timeouts=timeouts, **kw)
    if provider == "scripted":
        from gitops_agent.models.scripted import ScriptedModel

        path = DEMO_SCRIPT if rest == "demo" else Path(rest)
        return ScriptedModel.from_file(path, **kw)
    raise ConfigError(f"unknown model provider {provider!r} in {spec!r}; use anthropic, openai or scripted")
