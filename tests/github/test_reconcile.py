"""Reconcile without a job of its own (gitops_agent/github/reconcile.py): a step whose job died is
noticed by whichever job runs next — an issue, a comment, another task's step — not only by the
caller's (now rare) schedule; two lookers send it once; a broken branch or a failing look never
costs anyone their job."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import gitops_agent.github.reconcile as reconcile_mod
from tests.github.test_github_flow import Harness, _write_config, issue_event, world  # noqa: F401 - fixture
from tests.helpers import git


def clock(minutes: float):
    class Later(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) + timedelta(minutes=minutes)

    return Later


def lose_an_execute(h: Harness) -> tuple[dict, str]:
    """A task whose plan job ran and whose execute job never did (its runner died): the lost
    payload and the task's branch."""
    h.run("issues", issue_event(h.gh, "alice"))
    d = h.gh.dispatches[0]
    h.run("repository_dispatch", {"action": d["event_type"], "client_payload": d["client_payload"]})
    assert [x["event_type"] for x in h.gh.dispatches] == ["agent-plan", "agent-execute"]
    return h.gh.dispatches[1]["client_payload"], d["client_payload"]["branch"]


def resent_executes(h: Harness, lost: dict, since: int) -> list[dict]:
    return [
        x
        for x in h.gh.dispatches[since:]
        if x["event_type"] == "agent-execute" and x["client_payload"].get("node") == lost["node"]
    ]


def test_a_stalled_step_is_resent_by_the_next_job_that_runs_with_no_scheduled_run(world, monkeypatch):
    h, *_ = world
    _write_config(h, "github: {inline_steps: false}\n")
    lost, branch = lose_an_execute(h)
    monkeypatch.setattr(reconcile_mod, "datetime", clock(21))  # past the default lease (20 minutes)
    n = len(h.gh.dispatches)
    # someone opens another issue: its intake job, once its own work is pushed, looks
    assert h.run("issues", issue_event(h.gh, "alice", title="Another question")) == 0
    assert resent_executes(h, lost, n), h.gh.dispatches[n:]
    assert git(h.bare, "log", "-1", "--format=%s", branch).startswith("agent(reconcile)")
    assert ("schedule", "") not in h.runs


def test_within_the_lease_the_next_job_leaves_the_task_alone(world):
    h, *_ = world
    _write_config(h, "github: {inline_steps: false}\n")
    lost, branch = lose_an_execute(h)
    tip, n = git(h.bare, "rev-parse", branch), len(h.gh.dispatches)
    assert h.run("issues", issue_event(h.gh, "alice", title="Another question")) == 0
    assert not resent_executes(h, lost, n) and git(h.bare, "rev-parse", branch) == tip


def test_with_sweep_off_only_the_scheduled_run_resends(world, monkeypatch):
    h, *_ = world
    _write_config(h, "github: {inline_steps: false, sweep: false}\n")
    lost, branch = lose_an_execute(h)
    monkeypatch.setattr(reconcile_mod, "datetime", clock(21))
    n = len(h.gh.dispatches)
    assert h.run("issues", issue_event(h.gh, "alice", title="Another question")) == 0
    assert not resent_executes(h, lost, n)
    assert h.run("schedule", {"schedule": "17 */6 * * *"}) == 0
    assert resent_executes(h, lost, n)


def test_two_lookers_on_one_stall_send_it_once(world, monkeypatch):
    """Two jobs end at the same moment and both see the stall from the same tip: the second
    one's reconcile commit is refused and it sends nothing."""
    h, *_ = world
    _write_config(h, "github: {inline_steps: false, sweep: false}\n")
    lost, branch = lose_an_execute(h)
    monkeypatch.setattr(reconcile_mod, "datetime", clock(21))
    real_tips = reconcile_mod.task_tips
    seen: list = []

    def tips_as_first_seen(git_):
        # both lookers read the tips before either commits: the second is handed the first's view
        now = real_tips(git_)
        if not seen:
            seen.extend(now)
        for t in seen:
            assert git_.fetch_commit(t.sha)  # in the race, both fetched the same tip
        return list(seen)

    monkeypatch.setattr(reconcile_mod, "task_tips", tips_as_first_seen)
    n = len(h.gh.dispatches)
    assert h.run("schedule", {"schedule": "17 */6 * * *"}) == 0
    assert h.run("schedule", {"schedule": "17 */6 * * *"}) == 0
    assert len(resent_executes(h, lost, n)) == 1, h.gh.dispatches[n:]
    subjects = git(h.bare, "log", "--format=%s", branch).splitlines()
    assert sum(s.startswith("agent(reconcile)") for s in subjects) == 1


def test_a_broken_task_branch_does_not_keep_the_others_from_being_reconciled(world, monkeypatch):
    h, *_ = world
    _write_config(h, "github: {inline_steps: false, sweep: false}\n")
    lost, branch = lose_an_execute(h)
    # a task branch with no task.json (pushed by hand, or by an older version)
    main = git(h.bare, "rev-parse", "main").strip()
    git(h.bare, "update-ref", "refs/heads/agent/task/aaa-broken", main)
    monkeypatch.setattr(reconcile_mod, "datetime", clock(21))
    n = len(h.gh.dispatches)
    assert h.run("schedule", {"schedule": "17 */6 * * *"}) == 0
    assert resent_executes(h, lost, n)


@pytest.mark.parametrize("event", ["issues", "repository_dispatch"])
def test_a_failing_look_never_fails_the_job_that_did_its_work(world, monkeypatch, capsys, event):
    h, *_ = world
    _write_config(h, "github: {inline_steps: false}\n")

    def broken(git_):
        raise RuntimeError("the remote hung up")

    monkeypatch.setattr(reconcile_mod, "task_tips", broken)
    ev = issue_event(h.gh, "alice")
    assert h.run("issues", ev) == 0
    if event == "repository_dispatch":
        d = h.gh.dispatches[0]
        assert h.run(event, {"action": d["event_type"], "client_payload": d["client_payload"]}) == 0
        assert h.gh.dispatches[-1]["event_type"] == "agent-execute"  # its own work went on
    assert "the look for stalled tasks failed: the remote hung up" in capsys.readouterr().out
