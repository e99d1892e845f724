"""The spending ledger on its own (gitops_agent/runtime/spending.py), on a real repository: a call
waits for others' holds, then goes on or stops saying why; a dead job's hold counts in full once
stale; a damaged ledger file never blocks anyone."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from gitops_agent.core.errors import SpendCapReached
from gitops_agent.git.repo import GitRepo
from gitops_agent.runtime import spending
from gitops_agent.runtime.spending import BRANCH, SpendGate
from tests.helpers import git, make_repo


@pytest.fixture
def store(tmp_path):
    return GitRepo(make_repo(tmp_path))


def ledger(repo: GitRepo) -> dict:
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    return json.loads(repo.read_file(BRANCH, f"spend/{month}.json"))


def test_a_call_blocked_by_a_hold_goes_on_once_it_settles(store):
    a, b = SpendGate(store, 0.10, None, wait_s=30), SpendGate(store, 0.10, None, wait_s=30)
    first = a.reserve(0.12)  # the most this call can cost is above the cap: nobody starts beside it
    got: list = []
    t = threading.Thread(target=lambda: got.append(b.reserve(0.08)))
    t.start()
    time.sleep(0.5)
    assert got == [], "0.12 held against 0.10: the second call waits"
    a.settle(first, 0.01)
    t.join(30)
    assert got and got[0] is not None
    assert ledger(store)["holds"].keys() == {got[0]}


def test_a_call_that_waited_too_long_stops_and_says_why(store):
    SpendGate(store, 0.10, None).reserve(0.20)  # a job holding more than the cap, still in flight
    with pytest.raises(SpendCapReached) as e:
        SpendGate(store, 0.10, None, wait_s=0.3).reserve(0.01)
    assert "left no room" in str(e.value) and "spending.wait_minutes" in str(e.value)


def test_spent_at_the_cap_stops_at_once_naming_the_setting(store):
    g = SpendGate(store, 0.10, 5.0)
    g.settle(g.reserve(0.05), 0.10)
    t0 = time.monotonic()
    with pytest.raises(SpendCapReached) as e:
        SpendGate(store, 0.10, 5.0, wait_s=60).reserve(0.01)
    assert time.monotonic() - t0 < 30, "nothing to wait for"
    assert "daily spending cap" in str(e.value) and "spending.daily_usd" in str(e.value)
    assert g.problem() is not None
    assert SpendGate(store, 1.0, 0.10).problem().period == "monthly"


def test_a_dead_jobs_hold_counts_in_full_once_stale(store, monkeypatch):
    g = SpendGate(store, 1.0, None)
    g.reserve(0.30)  # its job dies: never settled
    later = datetime.now(timezone.utc) + spending.STALE + timedelta(minutes=1)
    monkeypatch.setattr(spending, "_now", lambda: later)
    hid = g.reserve(0.01)
    d = ledger(store)
    assert list(d["holds"]) == [hid] and abs(sum(d["days"].values()) - 0.30) < 1e-9


def test_a_damaged_ledger_is_rewritten_not_a_crash(store):
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    store.create_branch(BRANCH, None, {})
    store.commit_files(BRANCH, {f"spend/{month}.json": b"{not json"}, "x", {})
    g = SpendGate(store, 1.0, None)
    g.settle(g.reserve(0.02), 0.01)
    assert ledger(store)["days"]


def test_free_calls_and_no_cap_write_nothing(store):
    assert SpendGate(store, 1.0, None).reserve(0.0) is None
    assert SpendGate(store, None, None).reserve(0.5) is None
    assert git(store.repo, "branch", "--list", BRANCH).strip() == ""
