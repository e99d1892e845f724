"""Prompts are Jinja2 templates in prompts/ (overridable per repo on agent/brain), rendered
strictly (an undefined variable is an error, never an empty string) and always in Jinja2's
``ImmutableSandboxedEnvironment``: a template from a branch, or one a model proposed to
``evolve``, is text someone else wrote -- it may not reach Python internals (``__class__``,
``__globals__``, ``os``), mutate what it is given, or burn the job's time with huge powers and
repetitions. Every place that renders a template takes its environment from ``template_env``.
"""

from __future__ import annotations

import operator
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from agent.core.errors import ConfigError
from agent.safety.chars import quote

MAX_POWER = 1000
MAX_REPEAT = 1_000_000


class _Env(ImmutableSandboxedEnvironment):
    """The sandbox, plus bounds on ``**`` and on sequence repetition (``'x' * 10**9``)."""

    intercepted_binops = frozenset(["**", "*"])

    def call_binop(self, context, operator_name, left, right):  # noqa: ANN001 - jinja2's signature
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
                raise SecurityError(f"a power of {right} is more than templates may compute")
            return operator.pow(left, right)
        if operator_name == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > MAX_REPEAT:
                    raise SecurityError("a repetition that large is more than templates may build")
            return operator.mul(left, right)
        return super().call_binop(context, operator_name, left, right)


def _tail(s, n=2000):
    return s if len(s) <= n else "[…]" + s[-n:]


def _head(s, n=2000):
    return s if len(s) <= n else s[:n] + "[…]"


def template_env(dirs: list[Path] | tuple[Path, ...] = (), **options: Any) -> jinja2.Environment:
    """A sandboxed, strict environment loading from ``dirs`` (first wins)."""
    opts: dict[str, Any] = dict(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                keep_trailing_newline=False, autoescape=False)
    opts.update(options)
    env = _Env(loader=jinja2.FileSystemLoader([str(d) for d in dirs]) if dirs else None, **opts)
    env.filters["tail"] = _tail
    env.filters["head"] = _head
    env.filters["quote"] = quote  # untrusted text inside a <question>/<memory> block
    return env


@lru_cache(maxsize=16)
def _env(dirs: tuple[Path, ...]) -> jinja2.Environment:
    return template_env(dirs)


def render(dirs: list[Path], name: str, **ctx: Any) -> str:
    try:
        return _env(tuple(dirs)).get_template(name).render(**ctx).strip() + "\n"
    except jinja2.TemplateNotFound:
        raise ConfigError(f"prompt template {name!r} not found in {[str(d) for d in dirs]}") from None
    except jinja2.UndefinedError as e:
        raise ConfigError(f"prompt template {name!r}: {e.message}") from None
    except SecurityError as e:
        raise ConfigError(f"prompt template {name!r} tried something templates may not do: {e}") from None
