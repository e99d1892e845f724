"""Model providers, each declared once. A module in ``gitops_agent/models/providers/`` holds
``PROVIDER = Provider(...)``: its name (the part of a spec before ``:``), how to build a model,
the environment variables its credential may be in, and whether a spec may name an endpoint
(``name:model@URL``). Adding a provider is one such module (its SDK imported only when a model
is built) and its test; a provider with its own secret also needs the workflow's plumbing.

    anthropic:claude-haiku-4-5        the Anthropic Messages API (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL)
    claude-sonnet-4-6                 same (a bare id a provider claims: claude-* is Anthropic's)
    openai:gpt-4o-mini                any OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY)
    openai:qwen2.5-coder@http://localhost:11434/v1   an endpoint given inline (Ollama, vLLM, …)
    scripted:demo                     the shipped demo script
    scripted:path/to/script.yaml      a scripted/replay model
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.seams import Model
from gitops_agent.models.pricing import PRICES, Price


@dataclass(frozen=True)
class Provider:
    name: str
    #: (model name, endpoint or None, timeouts, extra keyword arguments) -> the model
    build: Callable[[str, str | None, Any, dict[str, Any]], Model]
    #: environment variables that hold its credential (any one will do); none: it needs none
    keys: tuple[str, ...] = ()
    #: what to tell a user whose environment has none of them
    keys_hint: str = ""
    #: bare model ids that start with one of these mean this provider (``claude-…``)
    claims: tuple[str, ...] = ()
    #: a spec may name where it is served (``@URL``), in the trusted settings only
    endpoint: bool = False
    #: a spec of a branch-held file (a brain) may name it; scripted models only by a given name
    in_data: bool = True
    example: str = ""
    #: its models' prices (USD per million tokens), added to the table when the registry loads
    prices: dict[str, Price] = field(default_factory=dict)


@lru_cache(maxsize=1)
def providers() -> dict[str, Provider]:
    """Every provider module's PROVIDER, by name (imported once; SDKs are not imported here)."""
    from gitops_agent.models import providers as package

    out: dict[str, Provider] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        p = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), "PROVIDER", None)
        if isinstance(p, Provider):
            out[p.name] = p
            for model, price in p.prices.items():
                PRICES.setdefault(model, price)
    return out


def split(spec: str) -> tuple[Provider, str, str | None]:
    """(provider, model name, endpoint) of a spec; a ConfigError naming what is wrong."""
    spec = (spec or "").strip()
    known = providers()
    examples = ", ".join(p.example for p in known.values() if p.example)
    if not spec:
        raise ConfigError(f"empty model spec; use e.g. {examples}")
    name, sep, rest = spec.partition(":")
    if not sep:
        if spec in known:  # `--model scripted`: a provider, no model
            raise ConfigError(f"model spec {spec!r} names a provider but no model; use {_model_of(known[spec])}")
        claimed = next((p for p in known.values() if spec.startswith(p.claims) and p.claims), None)
        if claimed is None:
            if spec.endswith(_SCRIPT_SUFFIXES):
                raise ConfigError(f"model spec {spec!r} has no provider; a script of answers is scripted:{spec} ({SCRIPTED_DOC})")
            raise ConfigError(
                f"model spec {spec!r} has no provider; use "
                + ", ".join(f"{p}:{spec}" for p in known if p != "scripted")
                + f", or scripted:FILE.yaml for a script of answers ({SCRIPTED_DOC})"
            )
        return claimed, spec, None
    provider = known.get(name)
    if provider is None:
        raise ConfigError(f"unknown model provider {name!r} in {spec!r}; use {', '.join(sorted(known))}")
    model, at, url = rest.partition("@")
    if name != "scripted" and (model.split(":", 1)[0] == "scripted" or model.endswith(_SCRIPT_SUFFIXES)):
        # `anthropic:scripted`, `openai:answers.yaml`: a script was meant, a hosted model is asked for
        scripted = _model_of(known["scripted"])
        raise ConfigError(f"model spec {spec!r} asks {name} for a model named {model!r}; for a scripted model use {scripted}")
    if at and not provider.endpoint:
        raise ConfigError(f"model spec {spec!r}: {name} takes no endpoint")
    return provider, (model if provider.endpoint else rest), (url or None) if at else None


#: where the scripted model's file format is described, with a worked example
SCRIPTED_DOC = "docs/scripted.md describes it, with an example"
_SCRIPT_SUFFIXES = (".yaml", ".yml")


def _model_of(provider: Provider) -> str:
    if provider.name == "scripted":
        return f"scripted:FILE.yaml, a script of the model's answers ({SCRIPTED_DOC}), or scripted:demo"
    return f"{provider.name}:MODEL, e.g. {provider.example or provider.name + ':MODEL'}"


def make_model(spec: str, timeouts: Any = None, **kw: Any) -> Model:
    """Build a model from its spec string; a bad spec is a ConfigError naming it. ``timeouts``
    (gitops_agent.models.retry.TimeoutPolicy) bounds the calls of the HTTP providers."""
    provider, name, endpoint = split(spec)
    return provider.build(name, endpoint, timeouts, kw)


def model_id(spec: str) -> str:
    """The bare model id of a spec, used for pricing and trailers."""
    provider, _, rest = spec.partition(":")
    if not rest:
        return spec
    if provider == "scripted":
        return "scripted"
    return rest.split("@", 1)[0]


def check_credentials(spec: str) -> None:
    """Fail early, and clearly, when the provider of ``spec`` has no credential here."""
    provider = split(spec)[0]
    if provider.keys and not any(os.environ.get(k) for k in provider.keys):
        raise ConfigError(
            f"model {spec!r} needs {provider.keys_hint or ' or '.join(provider.keys)}; or pick another model: "
            "--model openai:MODEL@URL, or --model scripted:FILE.yaml (offline; docs/scripted.md; or `gitops-agent demo`)"
        )
