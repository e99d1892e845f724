"""Read a streamed chat.completions answer (SSE) into the shape of a non-streamed one.

Streaming bounds the wait between bytes (``model_timeout.idle_s``) instead of the whole
answer, which a slow CPU model needs, and lets a caller stop an answer that runs past the
task's wall budget (``deadline``) instead of waiting for all of it. Tool calls arrive as
pieces keyed by ``index``: the id and name once, the arguments in fragments.

A small model often falls into a loop (the same few characters again and again, in its text or
inside a tool call's arguments) and would write on until its output budget is spent, minutes
on a CPU. An answer whose last LOOP_SPAN characters are one short piece repeated is cut there:
it ends as if its budget ran out (``length``), so the caller treats it as a truncated reply.
The server reports no usage for a cut answer; its output is counted at the characters per
token of the prompt (``chars_per_token``).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from gitops_agent.core.errors import ModelError

LOOP_SPAN = 600  # characters that must be one repeated piece
LOOP_UNIT = 80  # the longest such piece


def looping(tail: str) -> bool:
    """``tail`` ends in LOOP_SPAN characters made of one piece of at most LOOP_UNIT characters."""
    if len(tail) < LOOP_SPAN:
        return False
    span = tail[-LOOP_SPAN:]
    for unit in range(1, LOOP_UNIT + 1):
        if span[unit:] == span[:-unit]:  # periodic with period `unit`
            return True
    return False


def read_stream(
    stream: Any, deadline: float | None, where: str, chars_per_token: float = 3.0, prompt_tokens: int = 0
) -> SimpleNamespace:
    """The answer of ``stream`` (an openai.Stream of chunks) as an object with ``choices[0].message``
    (content, tool_calls), ``finish_reason``, ``usage`` and ``model``, like a ChatCompletion;
    ``cut`` says why it was cut short (None: it was not)."""
    text: list[str] = []
    tail = ""  # the last characters written, text and arguments alike
    since_check = 0
    cut = None
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
                        tail, since_check = (tail + delta.content)[-2 * LOOP_SPAN :], since_check + len(delta.content)
                    for tc in delta.tool_calls or []:
                        slot = calls.setdefault(
                            tc.index if tc.index is not None else len(calls), {"id": None, "name": "", "args": []}
                        )
                        slot["id"] = slot["id"] or tc.id
                        fn = tc.function
                        if fn is not None:
                            slot["name"] = slot["name"] or (fn.name or "")  # sent once; a repeat is not appended
                            if fn.arguments:
                                slot["args"].append(fn.arguments)
                                tail, since_check = (tail + fn.arguments)[-2 * LOOP_SPAN :], since_check + len(fn.arguments)
                if choice.finish_reason:
                    finish = choice.finish_reason
            if since_check >= 100:
                since_check = 0
                if looping(tail):
                    cut, finish = "loop", "length"
                    break
            if deadline is not None and time.monotonic() > deadline:
                raise ModelError(
                    f"the answer from {where} was still coming when the task's wall budget ran out "
                    f"({sum(map(len, text))} characters so far); stopped"
                )
    finally:
        stream.close()
    if finish is None and cut is None:
        raise ModelError(f"the answer from {where} stopped before it ended (no finish_reason)", retryable=True)
    tool_calls = [
        SimpleNamespace(id=c["id"], function=SimpleNamespace(name=c["name"], arguments="".join(c["args"])))
        for _, c in sorted(calls.items())
        if c["name"]
    ]
    message = SimpleNamespace(content="".join(text) or None, tool_calls=tool_calls or None)
    if cut and usage is None:  # what the server would have counted, near enough
        written = sum(map(len, text)) + sum(len(a) for c in calls.values() for a in c["args"])
        out = max(1, round(written / chars_per_token))
        usage = SimpleNamespace(prompt_tokens=prompt_tokens, completion_tokens=out, prompt_tokens_details=None)
    return SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason=finish)], usage=usage, model=model, cut=cut)
