"""Read a streamed chat.completions answer (SSE) into the shape of a non-streamed one.

Streaming bounds the wait between bytes (``model_timeout.idle_s``) instead of the whole
answer, which a slow CPU model needs, and lets a caller stop an answer that runs past the
task's wall budget (``deadline``) instead of waiting for all of it. Tool calls arrive as
pieces keyed by ``index``: the id and name once, the arguments in fragments.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from agent.core.errors import ModelError


def read_stream(stream: Any, deadline: float | None, where: str) -> SimpleNamespace:
    """The answer of ``stream`` (an openai.Stream of chunks) as an object with ``choices[0].message``
    (content, tool_calls), ``finish_reason``, ``usage`` and ``model``, like a ChatCompletion."""
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage = None
    model = None
    try:
        for chunk in stream:
            model = getattr(chunk, "model", None) or model
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in getattr(chunk, "choices", None) or []:
                delta = choice.delta
                if delta is not None:
                    if delta.content:
                        text.append(delta.content)
                    for tc in delta.tool_calls or []:
                        slot = calls.setdefault(tc.index if tc.index is not None else len(calls), {"id": None, "name": "", "args": []})
                        slot["id"] = slot["id"] or tc.id
                        fn = tc.function
                        if fn is not None:
                            slot["name"] = slot["name"] or (fn.name or "")  # sent once; a repeat is not appended
                            if fn.arguments:
                                slot["args"].append(fn.arguments)
                if choice.finish_reason:
                    finish = choice.finish_reason
            if deadline is not None and time.monotonic() > deadline:
                raise ModelError(f"the answer from {where} was still coming when the task's wall budget ran out "
                                 f"({sum(map(len, text))} characters so far); stopped")
    finally:
        stream.close()
    if finish is None and usage is None:
        raise ModelError(f"the answer from {where} stopped before it ended (no finish_reason)", retryable=True)
    tool_calls = [
        SimpleNamespace(id=c["id"], function=SimpleNamespace(name=c["name"], arguments="".join(c["args"])))
        for _, c in sorted(calls.items()) if c["name"]
    ]
    message = SimpleNamespace(content="".join(text) or None, tool_calls=tool_calls or None)
    return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason=finish)], usage=usage, model=model)
