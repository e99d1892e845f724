"""Reconcile: a step whose job died is sent again, without a job that runs just to look.

A task is in flight when its branch's tip is not the finish commit. A step silent for longer than
``github.lease_minutes`` is re-sent (``Engine.resume_jobs``); after ``github.max_redispatch``
re-sends without progress the task is finished with what it has. Who looks:

* every job, when its own work is done (``github.sweep``): the jobs of a busy repository notice
  each other's stalls at no cost of their own;
* the caller's rare ``schedule`` (``gitops-agent init`` writes every 6 hours), for a stall with
  nothing else running. It used to be every 20 minutes: 72 jobs an idle day, each billed as a
  minute on hosted runners (bench/idle.py measures both).

One fetch reads every task branch's tip (commit and trailers only), so a repository with many
finished tasks costs one round trip, not one per task. Two lookers racing on one stall write the
same file (``reconcile.json``) from the same tip: the second one's commit is refused
(PushConflict) and it sends nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from gitops_agent.core.errors import AgentError, PushConflict, TaskNotFound
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.core.state import BRANCH_PREFIX
from gitops_agent.safety.chars import log_line

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.git.repo import GitRepo
    from gitops_agent.github.steps import StepRunner
    from gitops_agent.settings.config import AgentConfig


@dataclass
class TaskTip:
    """One task branch's tip, as one fetch sees it."""

    task: str
    sha: str
    role: str  # the tip commit's Agent-Role trailer ("finish": the task is over)
    committed: int  # commit time, seconds since the epoch


@dataclass
class Reconciled:
    """What one look found and did."""

    tasks: int = 0
    in_flight: list[str] = field(default_factory=list)
    resent: list[Job] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.tasks} tasks, {len(self.in_flight)} in flight, {len(self.resent)} steps re-dispatched" + (
            f", {len(self.skipped)} skipped" if self.skipped else ""
        )


def task_tips(git: "GitRepo") -> list[TaskTip]:
    """Every task branch's tip, from one fetch."""
    tips = git.fetch_branches(BRANCH_PREFIX)
    if not tips:
        return []
    fmt = "%H%x1f%ct%x1f%(trailers:key=Agent-Role,valueonly,separator=%x2c)%x1e"
    out = git.git("log", "--no-walk=unsorted", "--stdin", f"--format={fmt}", input="\n".join(tips.values()).encode())
    by_sha = {}
    for rec in out.split("\x1e"):
        parts = rec.strip("\n").split("\x1f")
        if len(parts) == 3:
            by_sha[parts[0]] = (parts[2].strip(), int(parts[1]))
    return [
        TaskTip(branch.removeprefix(BRANCH_PREFIX), sha, *by_sha[sha]) for branch, sha in sorted(tips.items()) if sha in by_sha
    ]


def reconcile(runner: "StepRunner", git: "GitRepo", cfg: "AgentConfig", now: datetime | None = None) -> Reconciled:
    """Re-send the step of every in-flight task silent for longer than the lease; stop one that
    stalled ``max_redispatch`` times. ``git``: a clone of the default branch; ``cfg``: the
    settings at its head."""
    now = now or datetime.now(timezone.utc)
    tips = task_tips(git)
    done = Reconciled(tasks=len(tips))
    for tip in tips:
        if tip.role == "finish":
            continue
        done.in_flight.append(tip.task)
        if now.timestamp() - tip.committed < cfg.github.lease_minutes * 60:
            continue
        try:
            done.resent += _resend(runner, git, cfg, tip, now)
        except (TaskNotFound, AgentError) as e:
            # one broken task never keeps the others from being looked at
            print(f"gitops-agent: reconcile: skip {tip.task}: {log_line(str(e), 500)}")
            done.skipped.append(tip.task)
    return done


def _resend(runner: "StepRunner", git: "GitRepo", cfg: "AgentConfig", tip: TaskTip, now: datetime) -> list[Job]:
    from gitops_agent.steps.engine import Engine

    snap = load_snapshot(git, tip.task, tip.sha)
    # reconcile.json has only reconcile as its writer; its commit restarts the lease, and a tip
    # that is still that commit means nothing happened since the last re-dispatch
    state_path = f"{snap.root}/reconcile.json"
    attempts = 0
    if tip.role == "reconcile":
        try:
            attempts = int(json.loads(git.read_file(snap.tip, state_path) or b"{}").get("attempts", 0))
        except (ValueError, TypeError, AttributeError):
            attempts = 0  # unreadable: count afresh (each re-dispatch writes it whole again)
    rt = runner.runtime(git, snap.task.settings_at or snap.task.base_sha, brain=snap.task.brain, cfg=cfg)
    if attempts >= cfg.github.max_redispatch:
        why = f"stalled: no progress after {attempts} re-dispatches"
        jobs = [Job(step="finish", task=tip.task, branch=snap.branch, reason=why, stop="error")]
    else:
        jobs = Engine(rt).resume_jobs(tip.task)
    state = {"attempts": attempts + 1, "at": now.isoformat(), "jobs": [j.model_dump(exclude_none=True) for j in jobs]}
    try:
        rt.git.commit_files(
            snap.branch,
            {state_path: (json.dumps(state, indent=2) + "\n").encode()},
            f"agent(reconcile): re-dispatch {', '.join(j.step for j in jobs) or 'nothing'}",
            {"Agent-Task": tip.task, "Agent-Role": "reconcile"},
            base=snap.tip,
        )
    except PushConflict:
        # another job reconciled this task first (or its step woke up and wrote the same file)
        print(f"gitops-agent: reconcile: {tip.task}: already re-dispatched by another job")
        return []
    for j in jobs:
        runner.dispatcher.dispatch(j)
    return jobs
