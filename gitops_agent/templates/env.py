"""The sandboxed Jinja2 environment every template renders in, and the bounds on what one
render may build and produce (gitops_agent/templates/prompts.py says which templates render where)."""

from __future__ import annotations

import inspect
import operator
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from pydantic import BaseModel

from gitops_agent.safety.chars import quote

MAX_POWER = 1000
MAX_VALUE = 2_000_000  # characters one value built by `*` or `+` may hold
MAX_OUTPUT = 8_000_000  # characters one render may produce (40 results of 100,000 fit twice)
RENDER_SECONDS = 10.0
CHILD_MEMORY_MB = 768


class RenderLimit(SecurityError):
    """A render went past what a template may produce or use."""


def _size(x: Any) -> int:
    """Characters ``x`` stands for when printed: a list counts its items' lengths, not its own."""
    if isinstance(x, (str, bytes)):
        return len(x)
    if isinstance(x, (list, tuple)):
        return len(x) + sum(len(i) if isinstance(i, (str, bytes, list, tuple)) else 1 for i in x)
    return 1


# Values whose methods a template may call (the immutable sandbox refuses the mutating ones).
_PLAIN = (str, bytes, int, float, bool, list, tuple, dict, type(None))


def _jinja_own(obj: Any) -> bool:
    """Jinja2's runtime objects (loop, cycler, joiner, namespace, macros, the safe range)."""
    kind = obj if isinstance(obj, type) else type(obj)
    owner = getattr(obj, "__self__", None)
    return kind.__module__.startswith("jinja2.") or (owner is not None and type(owner).__module__.startswith("jinja2."))


class _Env(ImmutableSandboxedEnvironment):
    """The sandbox, narrowed to data: a template reads fields and properties of what it is given
    and calls methods of plain values only (``'x'.format``, ``d.items()``) -- never a method of a
    model object (pydantic's ``parse_raw`` unpickles what it is handed: one call would be Python
    on the host) -- plus bounds on ``**`` and on what ``*`` and ``+`` build."""

    intercepted_binops = frozenset(["**", "*", "+"])

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, _PLAIN) or _jinja_own(obj):
            return True
        if isinstance(obj, BaseModel):
            cls = type(obj)
            return attr in cls.model_fields or isinstance(inspect.getattr_static(cls, attr, None), property)
        return not callable(value)  # any other object: its data, never a method or a class

    def is_safe_callable(self, obj: Any) -> bool:
        if not super().is_safe_callable(obj):
            return False
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, _PLAIN) and not isinstance(owner, type):
            return True  # a method of a plain value
        return obj is dict or _jinja_own(obj)

    def call_binop(self, context, operator_name, left, right):  # noqa: ANN001 - jinja2's signature
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
                raise SecurityError(f"a power of {right} is more than templates may compute")
            return operator.pow(left, right)
        if operator_name == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and _size(seq) * max(n, 0) > MAX_VALUE:
                    raise RenderLimit("a repetition that large is more than templates may build")
            return operator.mul(left, right)
        if operator_name == "+":
            if isinstance(left, (str, bytes, list, tuple)) and _size(left) + _size(right) > MAX_VALUE:
                raise RenderLimit("a concatenation that large is more than templates may build")
            return operator.add(left, right)
        return super().call_binop(context, operator_name, left, right)


def _tail(s, n=2000):
    return s if len(s) <= n else "[…]" + s[-n:]


def _head(s, n=2000):
    return s if len(s) <= n else s[:n] + "[…]"


def template_env(dirs: list[Path] | tuple[Path, ...] = (), **options: Any) -> jinja2.Environment:
    """A sandboxed, strict environment loading from ``dirs`` (first wins)."""
    opts: dict[str, Any] = dict(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, autoescape=False
    )
    opts.update(options)
    env = _Env(loader=jinja2.FileSystemLoader([str(d) for d in dirs]) if dirs else None, **opts)
    env.filters["tail"] = _tail
    env.filters["head"] = _head
    env.filters["quote"] = quote  # untrusted text inside a <question>/<memory> block
    return env


def bounded_render(template: jinja2.Template, ctx: dict[str, Any], limit: int = MAX_OUTPUT) -> str:
    """The template's output, streamed, stopped past ``limit`` characters."""
    parts, size = [], 0
    for piece in template.generate(**ctx):
        size += len(piece)
        if size > limit:
            raise RenderLimit(f"the template produced more than {limit:,} characters")
        parts.append(piece)
    return "".join(parts)
