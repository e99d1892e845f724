"""Plays the planner and the executors on the wire: given a Messages API request body (as the
fake Anthropic server receives it), tell who is asking and answer with a scripted reply.

Who asks is read from the prompt the engine sent, the way a real model would see it: the
planner's system prompt says "You are the planner"; an executor's first message starts with
"# Node <id>:".
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Callable

Reply = dict[str, Any]
Handler = Callable[[dict, str], Reply]  # (request body, all prompt text) -> reply


def prompt_text(body: dict) -> str:
    parts: list[str] = []
    sysp = body.get("system")
    if isinstance(sysp, str):
        parts.append(sysp)
    elif isinstance(sysp, list):
        parts += [b.get("text", "") for b in sysp]
    for m in body.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
            continue
        for b in c:
            if b.get("type") == "text":
                parts.append(b["text"])
            elif b.get("type") == "tool_result":
                cc = b.get("content")
                parts.append(cc if isinstance(cc, str) else json.dumps(cc))
            elif b.get("type") == "tool_use":
                parts.append(json.dumps(b.get("input")))
    return "\n".join(parts)


def who(body: dict) -> str:
    text = prompt_text(body)
    if "You are the planner" in text:
        return "planner"
    first = body["messages"][0]["content"]
    first_text = first if isinstance(first, str) else next((b.get("text", "") for b in first if b.get("type") == "text"), "")
    m = re.match(r"# Node ([A-Za-z][A-Za-z0-9_-]*):", first_text)
    return f"executor:{m.group(1)}" if m else "unknown"


def last_stdout(body: dict) -> str:
    for m in reversed(body["messages"]):
        c = m.get("content")
        if isinstance(c, list):
            for b in reversed(c):
                if b.get("type") == "tool_result":
                    cc = b.get("content")
                    text = cc if isinstance(cc, str) else "".join(x.get("text", "") for x in cc or [])
                    if "<stdout>" in text:
                        return text.split("<stdout>", 1)[1].split("</stdout>", 1)[0].strip()
                    return text
    return ""


def tool(name: str, **input: Any) -> Reply:
    return {"content": [{"type": "tool_use", "name": name, "input": input}], "stop_reason": "tool_use"}


def text_and_tool(text: str, name: str, **input: Any) -> Reply:
    return {
        "content": [{"type": "text", "text": text}, {"type": "tool_use", "name": name, "input": input}],
        "stop_reason": "tool_use",
    }


class AgentResponder:
    """Routes each request to the handler of its role: `handlers["planner"]`,
    `handlers["executor:n1"]`, … Each handler gets (body, prompt text) and the number of
    times it was called before (via self.calls)."""

    def __init__(self, handlers: dict[str, Callable[..., Reply]]):
        self.handlers = handlers
        self.calls: dict[str, int] = {}
        self.log: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, body: dict) -> Reply:
        key = who(body)
        with self._lock:
            n = self.calls.get(key, 0)
            self.calls[key] = n + 1
            self.log.append(key)
        h = self.handlers.get(key)
        if h is None:
            return {"content": [{"type": "text", "text": f"(no handler for {key})"}], "stop_reason": "end_turn"}
        return h(body, prompt_text(body), n)
