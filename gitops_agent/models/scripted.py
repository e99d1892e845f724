"""A scripted model, shipped with the package for tests and the offline demo (the format, with
a worked example that runs: docs/scripted.md).

A script maps a *key* to a queue of responses. The key is chosen by whoever asks
(``request.meta["script_key"]``: ``planner``, ``executor:<node-id>``, …), so parallel
executors each get their own queue and a run is deterministic whatever the scheduling.

    planner:
      - tool: update_plan
        input: {nodes: [{id: n1, title: Load, goal: ...}], note: first plan}
      - tool: finish
        input: {answer: "The average is {{ results.n1 }}", summary: one line}
    executor:n1:
      - text: I will read the file.
        tool: run_python
        input: {code: "print(1 + 1)"}
      - tool: finish_step
        input: {result: "{{ last_output }}", status: done}

An entry with ``when: <jinja expression>`` is used only when the expression is true for the
request (the first fitting entry of the queue is taken).

String values are Jinja2 templates rendered with ``meta`` (e.g. ``results``: the result.md of
finished nodes, given to the planner) and ``last_output``: the stdout of the latest tool
result in the conversation. So the answer carries numbers the code really computed.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import jinja2
import yaml

from gitops_agent.core.errors import ConfigError, ModelError
from gitops_agent.core.messages import ModelRequest, ModelResponse, TextBlock, ToolResultBlock, ToolUseBlock
from gitops_agent.core.state import Usage
from gitops_agent.templates.env import template_env

_env = template_env(keep_trailing_newline=True)


@functools.lru_cache(maxsize=512)
def _compiled(expr: str):
    return _env.compile_expression(expr)


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def last_tool_output(request: ModelRequest) -> str:
    """The stdout part of the newest tool_result, or its whole text."""
    for msg in reversed(request.messages):
        for block in reversed(msg.content):
            if isinstance(block, ToolResultBlock):
                text = block.content
                if "<stdout>" in text and "</stdout>" in text:
                    return text.split("<stdout>", 1)[1].split("</stdout>", 1)[0].strip()
                return text.strip()
    return ""


class ScriptedModel:
    """Replays a script of responses; deterministic, free, offline."""

    def __init__(self, script: dict[str, list[dict[str, Any]]], name: str = "scripted", latency_s: float = 0.0):
        if not isinstance(script, dict) or not all(isinstance(v, list) for v in script.values()):
            raise ConfigError("a model script is a mapping from key (planner, executor:<node>) to a list of responses")
        self.name = name
        self.latency_s = latency_s
        self._queues = {k: list(v) for k, v in script.items()}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.calls: list[ModelRequest] = []

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> "ScriptedModel":
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"model script not found: {p}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        return cls(data or {}, **kw)

    def remaining(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self._queues.items() if v}

    def query(self, request: ModelRequest) -> ModelResponse:
        key = str(request.meta.get("script_key", ""))
        with self._lock:
            self.calls.append(request)
            queue = self._queues.get(key)
            if not queue:
                # executor:n1 falls back to a shared "executor" queue
                queue = self._queues.get(key.split(":", 1)[0])
            if not queue:
                raise ModelError(f"scripted model: no response left for {key!r}")
            ctx = dict(request.meta)
            ctx["last_output"] = last_tool_output(request)
            for i, candidate in enumerate(queue):
                cond = candidate.get("when")
                if cond is None or _compiled(str(cond))(**ctx):
                    entry = queue.pop(i)
                    break
            else:
                raise ModelError(f"scripted model: no response for {key!r} fits this request (all have unmet `when`)")
            call_id = next(self._ids)
        if self.latency_s:
            time.sleep(self.latency_s)
        try:
            return self._respond(entry, ctx, call_id, request)
        except jinja2.TemplateError as e:
            raise ModelError(f"scripted model: response for {key!r} does not render: {e}") from None

    def _respond(self, entry: dict[str, Any], ctx: dict[str, Any], call_id: int, request: ModelRequest) -> ModelResponse:
        content: list[Any] = []
        if entry.get("text"):
            content.append(TextBlock(text=self._render(entry["text"], ctx)))
        if entry.get("tool"):
            raw = entry.get("input", {})
            content.append(ToolUseBlock(id=f"toolu_scripted_{call_id}", name=entry["tool"], input=self._render(raw, ctx)))
        if not content:
            content.append(TextBlock(text=""))
        prompt_chars = len(request.system) + sum(len(b.model_dump_json()) for m in request.messages for b in m.content)
        out_chars = sum(len(b.model_dump_json()) for b in content)
        usage = Usage(input_tokens=_approx_tokens(" " * prompt_chars), output_tokens=_approx_tokens(" " * out_chars))
        return ModelResponse(
            content=content,
            stop_reason="tool_use" if entry.get("tool") else "end_turn",
            usage=usage,
            model=self.name,
            latency_ms=int(self.latency_s * 1000),
        )

    def _render(self, value: Any, ctx: dict[str, Any]) -> Any:
        if isinstance(value, str):
            return _env.from_string(value).render(**ctx) if "{{" in value or "{%" in value else value
        if isinstance(value, dict):
            return {k: self._render(v, ctx) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, ctx) for v in value]
        return value
