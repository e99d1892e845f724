"""Prompts are Jinja2 templates in prompts/ (overridable per repo), rendered strictly:
an undefined variable is an error, never an empty string."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from agent.core.errors import ConfigError


@lru_cache(maxsize=16)
def _env(dirs: tuple[Path, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )
    env.filters["tail"] = lambda s, n=2000: s if len(s) <= n else "[…]" + s[-n:]
    env.filters["head"] = lambda s, n=2000: s if len(s) <= n else s[:n] + "[…]"
    return env


def render(dirs: list[Path], name: str, **ctx: Any) -> str:
    try:
        return _env(tuple(dirs)).get_template(name).render(**ctx).strip() + "\n"
    except jinja2.TemplateNotFound:
        raise ConfigError(f"prompt template {name!r} not found in {[str(d) for d in dirs]}") from None
    except jinja2.UndefinedError as e:
        raise ConfigError(f"prompt template {name!r}: {e.message}") from None
