"""Which next steps a job hands to new jobs, and which one it carries on with itself
(`github.inline_steps`).

A job carries on only with the task's only work to do, so it never holds up work that could run
in parallel, and never runs a planner beside another one that the plan job's concurrency group
(one planner per task) would have made wait. Every step is committed and pushed before the next
starts, so a job that dies loses only the step in flight, and reconcile re-sends it.
"""

from __future__ import annotations

import dataclasses

from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import Snapshot
from gitops_agent.core.state import NodeStatus
from gitops_agent.settings.config import GitHubConfig


def route(nxt: list[Job], snap: Snapshot, cfg: GitHubConfig, elapsed_s: float) -> tuple[Job | None, list[Job]]:
    """(the job to run here or None, the jobs to dispatch). ``snap``: the task as it is after the
    step that produced ``nxt``, fetched, so it includes what other jobs pushed meanwhile."""
    if not cfg.inline_steps:
        return None, list(nxt)
    plan = snap.plan.model_copy(deep=True) if snap.plan is not None else None
    running: list[str] = []
    if plan is not None:
        reported = dataclasses.replace(snap, plan=plan).sync_plan()  # nodes whose step has reported
        running = [n.id for n in plan.running()]
        if running and len(nxt) == 1 and nxt[0].step == "plan" and nxt[0].node is None:
            # an executor's hand-back while other nodes still run: the planner is needed now only
            # if a node failed or a waiting node can start; otherwise the last one to end plans
            failed = any(plan.get(i) is not None and plan.get(i).status == NodeStatus.failed for i in reported)
            if not failed and not plan.ready() and not snap.task.instructions[plan.instructions_seen :]:
                return None, []
    if len(nxt) != 1 or elapsed_s >= cfg.inline_minutes * 60:
        return None, list(nxt)
    job = nxt[0]
    if job.step == "finish":
        here = True
    elif job.step == "plan":
        here = not running  # the plan after the last running node
    elif job.step == "execute":
        here = running == [job.node]  # the one node the plan started, nothing else in flight
    else:
        here = False
    return (job, []) if here else (None, [job])
