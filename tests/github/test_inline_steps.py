"""Fewer jobs (github.inline_steps): a job whose step leaves exactly one thing to do carries on
with it instead of dispatching a new job, every step still its own pushed commit; fan-out still
dispatches one job per ready node; a job killed mid-chain loses only the step in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from tests.github.test_github_flow import Harness, _write_config, issue_event, world  # noqa: F401 - fixture
from tests.helpers import ROOT, git, make_fanout_responder, make_sales_responder


def subjects(h: Harness, branch: str) -> list[str]:
    """The commit subjects of the task branch on the remote, oldest first, agent commits only."""
    out = git(h.bare, "log", "--reverse", "--format=%s", f"main..{branch}").splitlines()
    return [s for s in out if s.startswith("agent(")]


def job_process(h: Harness, dispatch: dict) -> subprocess.Popen:
    """The job of ``dispatch`` as a runner runs it: a process of its own (in its own process group)."""
    env = {
        **os.environ,
        **h.env("repository_dispatch", {"action": dispatch["event_type"], "client_payload": dispatch["client_payload"]}),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gitops_agent", "step", "auto"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kinds(subs: list[str]) -> list[str]:
    return [s.split(")", 1)[0].removeprefix("agent(") for s in subs]


def test_a_two_node_sequential_question_takes_two_jobs_each_step_its_own_commit(world):
    h, top, value, llm = world
    ev = issue_event(h.gh, "alice")
    assert h.run("issues", ev) == 0
    h.drain()
    assert len(h.runs) == 2, h.runs  # intake, then one job for plan, n1, plan, n2, plan, finish
    assert [d["event_type"] for d in h.gh.dispatches] == ["agent-plan"]
    pr = list(h.gh.repo("o/r").pulls.values())[0]
    assert top in pr.body and f"{value:.2f}" in pr.body and not pr.pull.draft
    # every step was committed and pushed on its own, in order
    assert kinds(subjects(h, pr.pull.head)) == ["intake", "plan", "execute", "plan", "execute", "plan", "finish"]
    # the progress comment followed the steps (one edit per step), and the answer was posted once
    comments = h.gh.comments("o/r", ev["issue"]["number"])
    assert sum("gitops-agent:answer=" in c.body for c in comments) == 1
    assert len(h.gh.calls("PATCH", r"/issues/comments/")) >= 5


def test_with_inline_steps_off_every_step_is_its_own_job(world):
    h, top, value, llm = world
    _write_config(h, "github: {inline_steps: false}\n")
    assert h.run("issues", issue_event(h.gh, "alice")) == 0
    h.drain()
    assert [d["event_type"].removeprefix("agent-") for d in h.gh.dispatches] == [
        "plan",
        "execute",
        "plan",
        "execute",
        "plan",
        "finish",
    ]
    assert len(h.runs) == 7
    assert top in list(h.gh.repo("o/r").pulls.values())[0].body


def test_a_fan_out_still_runs_each_leaf_in_its_own_job(world):
    h, top, value, llm = world
    llm.responder = make_fanout_responder(4)
    assert h.run("issues", issue_event(h.gh, "alice", title="What is the total revenue?")) == 0
    h.drain()
    sent = [d["event_type"].removeprefix("agent-") for d in h.gh.dispatches]
    # the plan job hands the four leaves to four jobs; only the last to end plans, and finishes in its job
    assert sent == ["plan", "execute", "execute", "execute", "execute"], sent
    assert len(h.runs) == 6
    assert sorted(d["client_payload"]["node"] for d in h.gh.dispatches[1:]) == ["q1", "q2", "q3", "q4"]
    pr = list(h.gh.repo("o/r").pulls.values())[0]
    total = sum(
        float(r.split(",")[2]) * float(r.split(",")[3]) for r in git(h.bare, "show", "main:data/sales.csv").splitlines()[1:]
    )
    assert f"{total:.2f}" in pr.body
    assert kinds(subjects(h, pr.pull.head)).count("execute") == 4


def test_a_time_budget_of_zero_dispatches_every_step(world):
    h, *_ = world
    _write_config(h, "github: {inline_minutes: 0}\n")
    assert h.run("issues", issue_event(h.gh, "alice")) == 0
    h.drain()
    assert len(h.gh.dispatches) == 6 and len(h.runs) == 7


def test_a_job_killed_mid_chain_loses_only_the_step_in_flight_and_reconcile_resends_it(world):
    h, top, value, llm = world
    _write_config(h, "github: {lease_minutes: 0.0001, sweep: false}\n")
    hold, seen = threading.Event(), threading.Event()
    llm.responder = responder = make_sales_responder(hold_n2=hold, n2_seen=seen)
    ev = issue_event(h.gh, "alice")
    assert h.run("issues", ev) == 0
    d = h.gh.dispatches[0]
    # the plan job as a runner runs it, a process of its own: it carries on with n1, plan, n2 …
    job = job_process(h, d)
    try:
        assert seen.wait(60), "n2 never started"
        os.killpg(job.pid, signal.SIGKILL)  # … and dies while n2 is in flight
        job.wait(10)
    finally:
        hold.set()
        if job.poll() is None:
            job.kill()
    branch = d["client_payload"]["branch"]
    before = subjects(h, branch)
    assert kinds(before) == ["intake", "plan", "execute", "plan"], before  # n1 and the plan after it are kept
    llm.responder = responder = make_sales_responder()  # the model as it is for the jobs after the kill
    assert h.gh.dispatches[1:] == []  # nothing was handed on: the chain was in this job
    time.sleep(0.1)
    assert h.run("schedule", {"schedule": "*/20 * * * *"}) == 0
    resent = h.gh.dispatches[1:]
    assert any(x["event_type"] == "agent-execute" and x["client_payload"]["node"] == "n2" for x in resent), resent
    h.drain(start=1)
    pr = list(h.gh.repo("o/r").pulls.values())[0]
    assert top in pr.body and f"{value:.2f}" in pr.body
    after = kinds(subjects(h, branch))
    assert after.count("execute") == 2 and after[-1] == "finish", after  # n1 never ran again; n2 once, to the end
    assert "executor:n1" not in responder.log and responder.log.count("planner") == 1  # only the plan after n2


def test_a_re_sent_execute_beside_a_carried_on_one_does_not_end_the_task(world):
    """An execute that outlives the lease is re-sent by reconcile; on GitHub the re-sent job starts
    beside the carried-on one (it is not in that job's concurrency group). Whichever commits
    second sees the step already there and stops; the task goes on to its answer."""
    from tests.fakes.agent_responder import last_stdout, tool
    from tests.helpers import N2_CODE

    h, top, value, llm = world
    _write_config(h, "github: {lease_minutes: 0.0001, sweep: false}\n")
    hold, seen = threading.Event(), threading.Event()
    responder = make_sales_responder()

    def n2(body, text, n):
        if len(body["messages"]) == 1:  # an executor's first turn, in either job
            seen.set()
            hold.wait(60)
            return tool("run_python", code=N2_CODE)
        return tool("finish_step", status="done", result=last_stdout(body))

    responder.handlers["executor:n2"] = n2
    llm.responder = responder
    assert h.run("issues", issue_event(h.gh, "alice")) == 0
    d = h.gh.dispatches[0]
    job = job_process(h, d)
    try:
        assert seen.wait(60)
        seen.clear()
        time.sleep(0.1)
        assert h.run("schedule", {"schedule": "*/20 * * * *"}) == 0  # n2 silent past the lease
        resent = [x for x in h.gh.dispatches[1:] if x["event_type"] == "agent-execute"]
        assert resent
        ev = {
            "action": "agent-execute",
            "client_payload": resent[0]["client_payload"],
            "sender": {"login": "github-actions[bot]", "type": "Bot"},
        }
        other = threading.Thread(target=lambda: h.run("repository_dispatch", ev))
        other.start()
        assert seen.wait(60), "the re-sent executor did not start"
        hold.set()  # both executors of n2 go on
        other.join(120)
        assert job.wait(120) == 0
        h.drain(start=len(h.gh.dispatches))
    finally:
        hold.set()
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    subs = subjects(h, d["client_payload"]["branch"])
    assert kinds(subs).count("execute") == 2 and not any("error" in s for s in subs), subs  # n1, n2: one commit each
    assert subs[-1].startswith("agent(finish)")
    pr = list(h.gh.repo("o/r").pulls.values())[0]
    assert top in pr.body and f"{value:.2f}" in pr.body
    answers = [c.body for c in h.gh.comments("o/r", 1) if "gitops-agent:answer=" in c.body]
    assert len(answers) == 1 and "stopped" not in answers[0]
