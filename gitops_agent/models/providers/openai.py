"""Any OpenAI-compatible endpoint: OpenAI, Ollama, vLLM, llama.cpp, OpenRouter, DeepSeek
(gitops_agent/models/openai_model.py). A trusted spec may name the endpoint: ``openai:MODEL@URL``."""

from __future__ import annotations

from typing import Any

from gitops_agent.models.registry import Provider


def _build(name: str, endpoint: str | None, timeouts: Any, kw: dict[str, Any]) -> Any:
    from gitops_agent.models.openai_model import OpenAIModel  # the SDK only when a model is built

    if endpoint:
        kw.setdefault("base_url", endpoint)
    return OpenAIModel(name, timeouts=timeouts, **kw)


PROVIDER = Provider("openai", _build, endpoint=True, example="openai:gpt-4o-mini")
