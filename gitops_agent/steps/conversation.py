"""The one loop of every model exchange: the planner's, each executor's, evolve's and the eval
judge's. It builds each request, rolls the cache breakpoints, asks the model, prices the call,
records the turn and its usage, hands the reply to the role, sends back what the role answers (a
tool's result, or a correction when the reply does not fit), and checks the cancel flag and the
budget before every further call. The roles keep only what their tools mean.

A role's ``handle(resp, turn)`` does one of three things:

* returns ``Done(value)``: the exchange is over (a plan, a finished node, a proposal);
* returns the blocks to send back (the results of the tools it ran) and the exchange goes on;
* raises ``FormatError``: the reply does not fit; its message goes back to the model as the
  error result of each tool call (the reply itself trimmed when it was long), and the exchange
  goes on.

How it ends is typed (``Exit``), never read from the wording of an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gitops_agent.core.cancel import CANCEL
from gitops_agent.core.errors import BudgetExceeded, FatalModelError, FormatError, ModelError
from gitops_agent.core.messages import Message, ModelRequest, ModelResponse, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
from gitops_agent.core.seams import Model
from gitops_agent.core.state import Turn, Usage

TRIM_TEXT = 2000  # characters of a refused reply's text sent back with the correction
TRIM_INPUT = 4000  # characters of a refused tool call's arguments


class Exit(str, Enum):
    """How an exchange ended."""

    done = "done"  # the role took a reply
    budget = "budget"  # the budget was spent after a paid call: no further call
    rejected = "rejected"  # the last call allowed was answered with a reply that does not fit
    turns = "turns"  # the last call allowed went by without a finishing reply
    model_error = "model_error"  # the provider failed, its retries spent
    fatal = "fatal"  # the provider will never answer this (a refused key, an unknown model)


@dataclass
class Done:
    value: Any = None


@dataclass
class Outcome:
    exit: Exit
    value: Any = None
    #: what stopped it: the budget problem, the last correction, the provider's error
    why: str | None = None
    error: BaseException | None = None
    calls: int = 0


Price = Callable[[str, Usage], float]
Budget = Callable[[float, int], Any]  # (dollars, tokens spent so far) -> a problem, or None


@dataclass
class Conversation:
    model: Model
    system: str
    tools: Sequence[ToolSpec]
    price: Price
    max_tokens: int
    #: the request's meta for call number n (1-based): who asks, for scripted and recorded models
    meta: Callable[[int], dict[str, Any]] = lambda n: {}
    budget: Budget = lambda usd, tokens: None
    #: seconds the next call may take (what is left of a wall budget), or None
    timeout: Callable[[], float | None] = lambda: None
    tool_choice: str = "required"
    #: the turns of this exchange; a cascade passes the list of the attempts before (their spend
    #: counts against the budget, their numbering goes on)
    turns: list[Turn] = field(default_factory=list)
    #: spent before the first turn (a plan step whose commit lost a race)
    carried: tuple[Usage, float] = (Usage(), 0.0)
    #: cache breakpoints on the first message, the previous turn's end and this turn's end (a
    #: long exchange); else on the first message only
    rolling_cache: bool = False
    #: a refused reply goes back with long text and arguments cut (evolve keeps its proposal whole:
    #: the model mends it)
    trim_refused: bool = True

    @property
    def cost(self) -> float:
        return self.carried[1] + sum(t.cost_usd for t in self.turns)

    @property
    def usage(self) -> Usage:
        return sum((t.usage for t in self.turns), self.carried[0])

    def run(self, messages: list[Message], handle: Callable[[ModelResponse, Turn], Any], max_calls: int) -> Outcome:
        messages = list(messages)
        corrected: str | None = None
        for n in range(1, max_calls + 1):
            CANCEL.check()
            try:
                resp = self.model.query(self._request(messages, n))
            except BudgetExceeded as e:  # the repository's spending cap (gitops_agent/runtime/spending.py)
                return Outcome(Exit.budget, why=str(e), error=e, calls=n - 1)
            except ModelError as e:  # FatalModelError included
                said = "model error (not retryable)" if isinstance(e, FatalModelError) else "model error"
                self.turns.append(Turn(turn=len(self.turns) + 1, model=self.model.name, error=f"{said}: {e}"))
                return Outcome(Exit.fatal if isinstance(e, FatalModelError) else Exit.model_error, why=str(e), error=e, calls=n)
            turn = self._record(resp)
            try:
                answer = handle(resp, turn)
            except FormatError as e:
                corrected = str(e)
                turn.error = turn.error or corrected
                said = trimmed(resp.content) if self.trim_refused else resp.content
                messages += [Message(role="assistant", content=said), correction(resp, corrected)]
            else:
                CANCEL.check()  # a tool stopped by Ctrl-C: nothing of this turn is kept
                if isinstance(answer, Done):
                    return Outcome(Exit.done, value=answer.value, calls=n)
                corrected = None
                messages += [Message(role="assistant", content=resp.content), Message(role="user", content=list(answer))]
            problem = self.budget(self.cost, self.usage.total)
            if problem:
                return Outcome(
                    Exit.budget, why=str(problem), error=problem if isinstance(problem, BaseException) else None, calls=n
                )
        return Outcome(Exit.rejected if corrected else Exit.turns, why=corrected, calls=max_calls)

    def _request(self, messages: list[Message], n: int) -> ModelRequest:
        if self.rolling_cache:  # the node's prompt, the previous turn's end (a read of what it wrote) and this turn's end
            last = len(messages) - 1
            messages = [m.model_copy(update={"cache": i in (0, last, last - 2)}) for i, m in enumerate(messages)]
        timeout = self.timeout()
        return ModelRequest(
            system=self.system,
            messages=messages,
            tools=list(self.tools),
            tool_choice=self.tool_choice,
            max_tokens=self.max_tokens,
            timeout_s=max(1.0, timeout) if timeout is not None else None,
            meta=self.meta(n),
        )

    def _record(self, resp: ModelResponse) -> Turn:
        cost = self.price(self.model.name, resp.usage)
        turn = Turn(
            turn=len(self.turns) + 1,
            model=resp.model or self.model.name,
            text=resp.text,
            usage=resp.usage,
            cost_usd=cost,
            latency_ms=resp.latency_ms,
        )
        self.turns.append(turn)
        return turn


def correction(resp: ModelResponse, error: str) -> Message:
    """The error, as the result of each tool call of the refused reply (or as text when it called none)."""
    uses = resp.tool_uses
    if uses:
        return Message(
            role="user", content=[ToolResultBlock(tool_use_id=u.id, content=f"Error: {error}", is_error=True) for u in uses]
        )
    return Message.user(f"Error: {error}")


def trimmed(content: list[Any]) -> list[Any]:
    """A refused reply as it goes back with its correction: long text and arguments cut (a small
    model's 7,000 tokens of junk, sent back whole, overflowed its context)."""
    out: list[Any] = []
    for b in content:
        if isinstance(b, TextBlock) and len(b.text) > TRIM_TEXT:
            cut = len(b.text) - TRIM_TEXT
            out.append(
                b.model_copy(update={"text": f"{b.text[: TRIM_TEXT - 500]}\n[… {cut:,} characters cut …]\n{b.text[-500:]}"})
            )
        elif isinstance(b, ToolUseBlock) and len(json.dumps(b.input)) > TRIM_INPUT:
            out.append(b.model_copy(update={"input": {"_cut": f"{len(json.dumps(b.input)):,} characters of arguments cut"}}))
        else:
            out.append(b)
    return out


def one_call(resp: ModelResponse, names: Sequence[str]) -> ToolUseBlock:
    """The reply's single tool call, one of ``names``; a FormatError for the model otherwise."""
    uses = resp.tool_uses
    wanted = " or ".join(f"`{n}`" for n in names)
    if not uses:
        raise FormatError(f"reply with exactly one tool call: {wanted}")
    if len(uses) > 1:
        raise FormatError(f"reply with exactly one tool call, not {len(uses)}")
    if uses[0].name not in names:
        raise FormatError(f"unknown tool `{uses[0].name}`; use {wanted}")
    if "_raw" in uses[0].input:
        raise FormatError(f"the arguments of `{uses[0].name}` are not valid JSON: {str(uses[0].input['_raw'])[:200]}")
    return uses[0]
