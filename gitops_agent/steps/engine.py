"""The engine: route a job to its step, keep failures inside the task (recorded and reported,
never silent), and drive a task locally from question to report."""

from __future__ import annotations

import traceback

from gitops_agent.core.dispatch import LocalDispatcher
from gitops_agent.core.errors import AgentError, PushConflict, TaskNotFound
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.core.state import Budget, NodeStatus, TaskModels, TaskSource, Usage
from gitops_agent.runtime.context import Runtime
from gitops_agent.steps.execute import run_execute
from gitops_agent.steps.finish import run_finish
from gitops_agent.steps.intake import create_task
from gitops_agent.steps.plan import run_plan

STEPS = {"plan": run_plan, "execute": run_execute, "finish": run_finish}
PLAN_RACES = 2  # a plan step whose commit lost a race on plan.json is run again this many times


class Engine:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.failures: list[tuple[Job, BaseException]] = []

    def handle(self, job: Job) -> list[Job]:
        """Run one step. An unexpected error ends the task cleanly via finish (with the error as
        the reason); what was committed before stays."""
        from gitops_agent.observe import telemetry

        try:
            with telemetry.step_span(job.task, job.seq or 0, job.step, node=job.node, run_url=self.rt.run_url):
                carried: tuple[Usage, float] = (Usage(), 0.0)
                for attempt in range(PLAN_RACES + 1):
                    try:
                        if job.step == "plan":
                            return run_plan(self.rt, job, carried=carried)
                        return STEPS[job.step](self.rt, job)
                    except PushConflict as e:
                        if self.done_by_another(job):
                            # a duplicate of this step (a re-sent job beside a carried-on one) committed first
                            self.rt.reporter.event("skip", step=job.step, node=job.node, why="committed by another job meanwhile")
                            return []
                        # another planner (or a person) changed plan.json while this one thought:
                        # plan again from what is there now (what it spent is kept), rather than end the task
                        if job.step != "plan" or attempt == PLAN_RACES:
                            raise
                        lost = getattr(e, "spent", None)
                        if lost is not None:
                            carried = (carried[0] + lost[0], carried[1] + lost[1])
                        self.rt.reporter.event("retry", step="plan", why=str(e))
                raise AssertionError("unreachable")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001
            self.failures.append((job, e))
            detail = str(e) if isinstance(e, AgentError) else f"{type(e).__name__}: {e}"
            self.rt.reporter.event("error", step=job.step, node=job.node, error=detail, trace=traceback.format_exc())
            if job.step == "finish":
                return []
            return [
                Job(
                    step="finish",
                    task=job.task,
                    branch=job.branch,
                    hop=job.hop + 1,
                    reason=f"{job.step} step failed: {detail}",
                    stop="error",
                )
            ]

    def done_by_another(self, job: Job) -> bool:
        """Whether the branch already holds what ``job`` was to commit (execute: its step record;
        finish: a finish commit on top)."""
        if job.step not in ("execute", "finish"):
            return False
        try:
            snap = load_snapshot(self.rt.git, job.task)
        except AgentError:
            return False
        if job.step == "execute":
            return job.seq is not None and job.node is not None and snap.step_record(job.seq, job.node) is not None
        head = self.rt.git.log(snap.tip, max_count=1)
        return bool(snap.has_report and head and head[0].trailers.get("Agent-Role") == "finish")

    def start(
        self,
        question: str,
        *,
        base_ref: str,
        base_sha: str,
        models: TaskModels,
        budget: Budget | None = None,
        source: TaskSource | None = None,
        task_id: str | None = None,
    ) -> Job:
        _task, job = create_task(
            self.rt, question, base_ref=base_ref, base_sha=base_sha, models=models, budget=budget, source=source, task_id=task_id
        )
        return job

    def check_edits(self, task_id: str) -> list[str]:
        """What people changed in the plan since the engine last planned (core/plan_edits.py),
        checked before anything runs: StateFileError, naming the file, node and field, for an
        edit that cannot stand. Nothing is written."""
        from gitops_agent.core.errors import StateFileError
        from gitops_agent.core.plan_edits import steer

        snap = load_snapshot(self.rt.git, task_id)
        notes = steer(self.rt.git, snap, snap.plan.instructions_seen if snap.plan is not None else 0)
        agents = set(self.rt.brain.executors())
        for n in snap.plan.walk() if snap.plan is not None and notes else []:
            if n.is_leaf and n.status == NodeStatus.pending and n.agent not in agents:
                raise StateFileError(f"{snap.root}/plan.json", f"node {n.id!r}: agent {n.agent!r} is not one of {sorted(agents)}")
        return notes

    def resume_jobs(self, task_id: str) -> list[Job]:
        """What to run to continue a task from its last commit (also what reconcile re-sends)."""
        snap = load_snapshot(self.rt.git, task_id)
        branch = snap.branch
        if snap.plan is None:
            return [Job(step="plan", task=task_id, branch=branch)]
        if snap.plan.finish is not None:
            head = self.rt.git.log(snap.tip, max_count=1)
            if head and "Agent-Task" not in head[0].trailers:  # a person's commit on the branch (an edited plan)
                return [Job(step="plan", task=task_id, branch=branch)]
            if snap.has_report and head and head[0].trailers.get("Agent-Role") == "finish":
                return []
            return [Job(step="finish", task=task_id, branch=branch)]
        jobs: list[Job] = []
        for n in snap.plan.walk():
            if n.is_leaf and n.status == NodeStatus.running and n.step is not None and snap.step_record(n.step, n.id) is None:
                jobs.append(Job(step="execute", task=task_id, branch=branch, node=n.id, seq=n.step))
        # the planner picks up results that arrived after the last plan (a no-op if none did)
        jobs.append(Job(step="plan", task=task_id, branch=branch))
        return jobs

    def run_local(self, jobs: list[Job], workers: int | None = None) -> LocalDispatcher:
        d = LocalDispatcher(self.handle, workers=workers or self.rt.config.workers)
        for j in jobs:
            d.dispatch(j)
        d.run()
        return d

    def task_exists(self, task_id: str) -> bool:
        try:
            load_snapshot(self.rt.git, task_id)
            return True
        except TaskNotFound:
            return False
