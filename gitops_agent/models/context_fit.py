"""Fit a request's output budget into a server's context window.

A local server (llama.cpp, vLLM) runs a model with a fixed context, often small (llama-server
``-c 8192``). The prompt and the answer share it: asking a role's default output budget (the
planner's 8,192 tokens) of an 8k context lets a weak model fill it with junk, and the next
request, which carries that reply, no longer fits. So, when the server says how large its
context is, the output budget is cut to what is left after the prompt.

- The window is read once from ``GET /models``: llama.cpp gives ``meta.n_ctx`` (the slot's
  context), vLLM ``max_model_len``; others say nothing, and nothing is cut.
- And an answer takes at most a quarter of the window (never less than 1,024 tokens): a plan or
  a code cell is short, and a small model that writes on past it is writing junk (seen: 7,500
  tokens, 230 s, from a 270M model asked for a plan).
- The prompt's size is estimated from its characters; the ratio of characters to tokens is
  learnt from each answer's ``prompt_tokens``, so the estimate follows the model's tokenizer.
"""

from __future__ import annotations

import json
from typing import Any

# Characters per token before any answer has been seen: low, so the first estimate of the
# prompt is high and the output budget errs small.
FIRST_CHARS_PER_TOKEN = 3.0
MIN_OUTPUT_TOKENS = 64
# the quarter-of-the-window cap is never below this; below it the prompt has (nearly) filled the
# context: let the server say so
SHARE_FLOOR = 1024
SAFETY = 0.08  # the estimate may be this much short, and a chat template adds its markers


def window_of(models: Any, name: str | None = None) -> int | None:
    """The context window a ``GET /models`` answer states for ``name``, or for its only model
    (a router listing many models says nothing about the one asked)."""
    data = getattr(models, "data", None)
    data = data if isinstance(data, list) else []
    if len(data) > 1:
        data = [m for m in data if getattr(m, "id", None) == name]
    for m in data:
        extra = dict(getattr(m, "model_extra", None) or {})
        meta = extra.get("meta") if isinstance(extra.get("meta"), dict) else {}
        for value in (meta.get("n_ctx"), extra.get("max_model_len"), extra.get("context_length")):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


class ContextFit:
    """The learnt state of one endpoint: its window (None: unknown) and characters per token."""

    def __init__(self, window: int | None = None) -> None:
        self.window = window
        self.chars_per_token = FIRST_CHARS_PER_TOKEN

    @staticmethod
    def prompt_chars(params: dict[str, Any]) -> int:
        return len(json.dumps(params.get("messages", []), ensure_ascii=False)) + len(
            json.dumps(params.get("tools", []), ensure_ascii=False)
        )

    def estimate(self, params: dict[str, Any]) -> int:
        return int(self.prompt_chars(params) / self.chars_per_token * (1 + SAFETY)) + 32

    def output_budget(self, params: dict[str, Any], asked: int) -> int:
        """``asked``, or less when the context would not hold the prompt and that many tokens."""
        if not self.window:
            return asked
        room = self.window - self.estimate(params)
        return min(asked, max(MIN_OUTPUT_TOKENS, min(room, max(SHARE_FLOOR, self.window // 4))))

    def learn(self, params: dict[str, Any], prompt_tokens: int) -> None:
        """Follow the tokenizer: the characters per token of the prompt just answered."""
        if prompt_tokens > 0:
            self.chars_per_token = min(6.0, max(1.0, self.prompt_chars(params) / prompt_tokens))
