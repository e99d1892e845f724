"""The repository's spending cap: what all its tasks spend together, per UTC day and month.

The running total is a file per month on the ``agent/spend`` branch (``spend/2026-12.json``), so
jobs on different runners agree: every write is a compare-and-swap commit of that one file, and a
writer that loses the race reads again. Before each paid call the job reserves the most that call
can cost (its request's size and ``max_tokens`` at the model's price: a *hold*); after it, the hold
becomes what the call really cost. A call may start only while what is spent plus every hold in
flight is below the cap, so the total overshoots the cap by at most one call's worth:

* spent alone reaches the cap: no further call, the task stops and says why;
* spent plus others' holds reaches it: the call waits for them to settle (``wait_minutes``), as
  a queue at the till, then goes on or stops.

A hold whose job died is counted as spent at its full amount once it is an hour old. The branch is
written by the agent only; its contents are numbers, read as a pydantic model (a bad file counts
as nothing spent and is rewritten whole by the next write).
"""

from __future__ import annotations

import random
import secrets
import time
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gitops_agent.core.cancel import CANCEL
from gitops_agent.core.errors import AgentError, PushConflict, SpendCapReached
from gitops_agent.core.seams import GitStore

BRANCH = "agent/spend"
STALE = timedelta(hours=1)  # longer than any call with its retries (model_timeout, model_retry)
TRAILERS = {"Agent-Role": "spend"}


class Hold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd: float = Field(ge=0)
    at: datetime
    task: str = ""


class MonthLedger(BaseModel):
    """One month's spending: settled dollars per UTC day, and the holds of calls in flight."""

    model_config = ConfigDict(extra="forbid")
    days: dict[str, float] = Field(default_factory=dict)
    holds: dict[str, Hold] = Field(default_factory=dict)

    def expire(self, now: datetime) -> None:
        for hid, h in list(self.holds.items()):
            if now - h.at > STALE:  # its job died mid-call: count it all, the provider may have billed it
                day = h.at.date().isoformat()
                self.days[day] = self.days.get(day, 0.0) + h.usd
                del self.holds[hid]

    def held(self) -> float:
        return sum(h.usd for h in self.holds.values())


class SpendGate:
    """Reserve before a paid call, settle after it (``gitops_agent/runtime/context.py`` does both
    around every model call of a task on GitHub)."""

    def __init__(
        self, git: GitStore, daily_usd: float | None, monthly_usd: float | None, wait_s: float = 600, task: str = ""
    ) -> None:
        self.git, self.daily, self.monthly, self.wait_s, self.task = git, daily_usd, monthly_usd, wait_s, task

    # ---- reading ---------------------------------------------------------------------------
    def _read(self, now: datetime) -> tuple[str | None, str, MonthLedger]:
        path = f"spend/{now:%Y-%m}.json"
        tip = self.git.tip(BRANCH)
        raw = self.git.read_file(tip, path) if tip else None
        try:
            ledger = MonthLedger.model_validate_json(raw) if raw else MonthLedger()
        except ValidationError:
            ledger = MonthLedger()
        ledger.expire(now)
        return tip, path, ledger

    def _over(self, ledger: MonthLedger, now: datetime, extra: float = 0.0) -> SpendCapReached | None:
        today = ledger.days.get(now.date().isoformat(), 0.0) + extra
        month = sum(ledger.days.values()) + extra
        if self.daily is not None and today >= self.daily:
            return SpendCapReached("daily", today, self.daily)
        if self.monthly is not None and month >= self.monthly:
            return SpendCapReached("monthly", month, self.monthly)
        return None

    def problem(self, now: datetime | None = None) -> SpendCapReached | None:
        """Why no new task may start now (intake asks), or None."""
        return self._over(self._read(now or _now())[2], now or _now())

    # ---- writing ---------------------------------------------------------------------------
    def _write(self, tip: str | None, path: str, ledger: MonthLedger, subject: str) -> bool:
        """One compare-and-swap commit of the month's file; False when another job wrote first."""
        data = ledger.model_dump_json(indent=1).encode() + b"\n"
        try:
            if tip is None:
                self.git.create_branch(BRANCH, None, TRAILERS)
                tip = self.git.tip(BRANCH)
            self.git.commit_files(
                BRANCH, {path: data}, subject, {**TRAILERS, **({"Agent-Task": self.task} if self.task else {})}, base=tip
            )
            return True
        except PushConflict:
            return False
        except AgentError as e:
            if "exists" in str(e):  # another job created the branch first
                return False
            raise

    def reserve(self, usd: float) -> str | None:
        """Hold ``usd`` for one call; its id (None when the call costs nothing). Raises
        SpendCapReached when the cap is reached, or stays blocked by others for ``wait_s``."""
        if usd <= 0 or (self.daily is None and self.monthly is None):
            return None
        waited_until = time.monotonic() + self.wait_s
        backoff = 0.05
        while True:
            CANCEL.check()
            now = _now()
            tip, path, ledger = self._read(now)
            stop = self._over(ledger, now)
            if stop is not None:
                raise stop
            blocked = self._over(ledger, now, extra=ledger.held())
            if blocked is None:
                hid = secrets.token_hex(6)
                ledger.holds[hid] = Hold(usd=round(usd, 6), at=now, task=self.task)
                if self._write(tip, path, ledger, f"agent(spend): hold ${usd:.4f}"):
                    return hid
                backoff = 0.05  # lost a race: read again at once
            elif time.monotonic() >= waited_until:
                raise SpendCapReached(
                    blocked.period,
                    blocked.used,
                    blocked.limit,
                    f"the repository's {blocked.period} spending cap (${blocked.limit:.2f}) left no room for this "
                    f"call: ${blocked.used:.4f} spent or held by calls in flight, and none settled within "
                    f"{self.wait_s / 60:g} minutes (spending.wait_minutes)",
                )
            else:
                backoff = min(5.0, backoff * 2)
            time.sleep(backoff * random.uniform(0.5, 1.5))

    def settle(self, hid: str | None, usd: float) -> None:
        """The call held as ``hid`` cost ``usd``."""
        if hid is None:
            return
        for _ in range(100):
            now = _now()
            tip, path, ledger = self._read(now)
            hold = ledger.holds.pop(hid, None)
            if hold is None:
                return  # expired: already counted at its full amount
            day = hold.at.date().isoformat()  # a call is billed to the day it started
            if hold.at.strftime("%Y-%m") != now.strftime("%Y-%m"):
                return  # held last month, settled this one: last month's file counts it in full
            ledger.days[day] = round(ledger.days.get(day, 0.0) + usd, 6)
            if self._write(tip, path, ledger, f"agent(spend): ${usd:.4f} (held ${hold.usd:.4f})"):
                return
            time.sleep(0.02 * random.uniform(0.5, 1.5))
        raise AgentError("could not record a call's cost on agent/spend: 100 writers in a row got there first")


def _now() -> datetime:
    return datetime.now(timezone.utc)
