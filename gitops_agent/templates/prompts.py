"""Prompts are Jinja2 templates in prompts/ (overridable per repo on agent/brain), rendered
strictly (an undefined variable is an error, never an empty string) and always in Jinja2's
``ImmutableSandboxedEnvironment``: a template from a branch, or one a model proposed to
``evolve``, is text someone else wrote -- it may not reach Python internals (``__class__``,
``__globals__``, ``os``) or mutate what it is given.

What a render may cost is bounded by what it produces, not operator by operator:

* every render streams its output and stops past ``MAX_OUTPUT`` characters;
* a template that is not the packaged one (``agent/brain``, an evolve proposal, a recording's
  brain) renders in a child process (``gitops_agent/templates/worker.py``) whose address space is
  capped (``CHILD_MEMORY_MB`` above its start) and which is killed past ``RENDER_SECONDS``: a
  line that builds gigabytes, or loops for hours, ends that child, never the step process that
  holds the token and the keys;
* in-process, repetition (``*``) and concatenation (``+``) are refused past ``MAX_VALUE``
  characters, counted over the items of a list, so the packaged templates stay cheap too
  (gitops_agent/templates/env.py).

Every place that renders a template takes its environment from ``template_env``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SecurityError

from gitops_agent.core.errors import ConfigError
from gitops_agent.templates.env import MAX_OUTPUT, bounded_render, template_env
from gitops_agent.templates.worker import render_in_child

__all__ = ["MAX_OUTPUT", "packaged_prompts_dir", "render", "render_raw", "template_env"]


def packaged_prompts_dir() -> Path:
    """prompts/: beside the package in a source checkout, inside it (agent/_prompts) when installed."""
    here = Path(__file__).resolve().parents[1]  # the agent package
    for candidate in (here.parent / "prompts", here / "_prompts"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"cannot find the packaged prompts/ directory next to {here}")


def _untrusted(dirs: tuple[Path, ...]) -> bool:
    """Whether a template could come from anywhere but the packaged prompts: a directory before
    or beside them that holds templates (a brain checkout, a proposal under validation). Not
    cached: a directory is listed at each render (a proposal's folder is filled, then checked)."""
    packaged = packaged_prompts_dir().resolve()
    return any(Path(d).resolve() != packaged and any(Path(d).glob("*.j2")) for d in dirs)


@lru_cache(maxsize=16)
def _env(dirs: tuple[Path, ...]) -> jinja2.Environment:
    return template_env(dirs)


def render_raw(dirs: list[Path] | tuple[Path, ...], name: str, ctx: dict[str, Any]) -> str:
    """``name`` rendered with ``ctx``; a template from outside the package renders in the child
    process. Jinja2's own exceptions (not found, undefined, syntax, security) and RenderLimit
    come out as they are."""
    key = tuple(Path(d) for d in dirs)
    if _untrusted(key):
        return render_in_child(key, name, ctx)
    return bounded_render(_env(key).get_template(name), ctx)


def render(dirs: list[Path], name: str, **ctx: Any) -> str:
    try:
        return render_raw(dirs, name, ctx).strip() + "\n"
    except jinja2.TemplateNotFound:
        raise ConfigError(f"prompt template {name!r} not found in {[str(d) for d in dirs]}") from None
    except jinja2.UndefinedError as e:
        raise ConfigError(f"prompt template {name!r}: {e.message}") from None
    except SecurityError as e:
        raise ConfigError(f"prompt template {name!r} tried something templates may not do: {e}") from None
    except jinja2.TemplateError as e:
        raise ConfigError(f"prompt template {name!r}: {e.message or e}") from None
