"""The repository's spending cap (settings `spending`, gitops_agent/runtime/spending.py): ten
questions at once against a daily cap of $0.05 spend at most the cap plus one call, counted by
the model server itself; the tasks it stops say so on their issue, a question asked after it is
reached is not started, and the running total lives on the agent/spend branch."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from gitops_agent.core.state import Usage
from gitops_agent.models.pricing import price_of
from tests.github.test_github_flow import Harness, _write_config, issue_event, world  # noqa: F401 - fixture
from tests.helpers import git

CAP = 0.05


def served_cost(llm) -> list[float]:
    """What each answered call cost, from the model server's own usage log, at list prices."""
    out = []
    for u in llm.usage_log:
        usage = Usage(
            input_tokens=u.get("input_tokens", 0),
            output_tokens=u.get("output_tokens", 0),
            cache_read_tokens=u.get("cache_read_input_tokens", 0),
            cache_write_tokens=u.get("cache_creation_input_tokens", 0),
        )
        out.append(price_of(u["model"], usage))
    return out


def run_all(h: Harness, first: list[tuple[str, dict]], workers: int = 4) -> None:
    """Every job, ``workers`` runners at once, each dispatch becoming a job as GitHub would make it."""
    lock = threading.Lock()
    seen = len(h.gh.dispatches)
    with ThreadPoolExecutor(workers) as pool:
        pending = [pool.submit(h.run, name, ev) for name, ev in first]
        while pending:
            done = [f for f in pending if f.done()]
            for f in done:
                assert f.result() == 0
                pending.remove(f)
            with lock:
                new, seen = h.gh.dispatches[seen:], len(h.gh.dispatches)
            for d in new:
                ev = {
                    "action": d["event_type"],
                    "client_payload": d["client_payload"],
                    "sender": {"login": "github-actions[bot]", "type": "Bot"},
                }
                pending.append(pool.submit(h.run, "repository_dispatch", ev))
            if not done and not new:
                threading.Event().wait(0.05)


def test_ten_questions_at_once_spend_at_most_the_daily_cap_plus_one_call(world):
    h, top, value, llm = world
    _write_config(h, f"spending: {{daily_usd: {CAP}}}\ngithub: {{inline_steps: false}}\n")
    events = [issue_event(h.gh, "alice", title=f"Question {i}: who is our top customer by revenue?") for i in range(10)]
    run_all(h, [("issues", ev) for ev in events])

    costs = served_cost(llm)
    assert costs and sum(costs) <= CAP + max(costs), (sum(costs), max(costs))
    assert sum(costs) >= CAP * 0.5, "the cap was meant to be reached in this test"
    # every issue heard how it ended: an answer, or why it stopped
    stopped = 0
    for ev in events:
        bodies = " ".join(c.body for c in h.gh.comments("o/r", ev["issue"]["number"]))
        pulls = [p for p in h.gh.repo("o/r").pulls.values() if f"#{ev['issue']['number']}" in p.body]
        if "spending cap" in bodies or any("spending cap" in p.body for p in pulls):
            stopped += 1
            assert "spending.daily_usd" in bodies + " ".join(p.body for p in pulls)
        else:
            assert pulls and top in pulls[0].body, f"issue #{ev['issue']['number']}: neither answered nor told why"
    print("SPENT", sum(costs), max(costs), len(costs), "stopped", stopped)
    assert stopped >= 5

    # the running total is in git, and it agrees with what the server served
    month = git(h.bare, "log", "-1", "--format=%cd", "--date=format:%Y-%m", "agent/spend").strip()
    ledger = json.loads(git(h.bare, "show", f"agent/spend:spend/{month}.json"))
    assert ledger["holds"] == {}, "every call's hold was settled"
    assert abs(sum(ledger["days"].values()) - sum(costs)) < 1e-4

    # a question asked now is not started, and says why
    n = len(h.gh.dispatches)
    late = issue_event(h.gh, "alice", title="One more question")
    assert h.run("issues", late) == 0
    assert len(h.gh.dispatches) == n and len(llm.usage_log) == len(costs)
    said = " ".join(c.body for c in h.gh.comments("o/r", late["issue"]["number"]))
    assert "Not started" in said and "daily spending cap" in said and "spending.daily_usd" in said
    assert git(h.bare, "branch", "--list", "agent/task/*").count(str(late["issue"]["number"]) + "-") == 0


def test_without_a_cap_nothing_is_written_to_agent_spend(world):
    h, top, value, llm = world
    _write_config(h, "spending: {daily_usd: null, monthly_usd: null}\n")
    h.run("issues", issue_event(h.gh, "alice"))
    h.drain()
    assert any(top in p.body for p in h.gh.repo("o/r").pulls.values())
    assert git(h.bare, "branch", "--list", "agent/spend").strip() == ""


def test_the_pull_request_and_the_job_summary_show_the_cost_against_the_budget(world):
    import re

    h, top, value, llm = world
    _write_config(h, "budget: {max_usd: 1.5}\n")
    h.run("issues", issue_event(h.gh, "alice"))
    h.drain()
    pr = next(p for p in h.gh.repo("o/r").pulls.values() if top in p.body)
    m = re.search(r"\*\*\$([0-9.]+)\*\* of the task's \$1\.50 budget \((\d+)%\)", pr.body)
    assert m, pr.body[-800:]
    assert abs(float(m.group(1)) - sum(served_cost(llm))) < 1e-3, "the figure is what the model server served"
    assert "of the task's $1.50 budget" in (h.tmp / "summary.md").read_text()
