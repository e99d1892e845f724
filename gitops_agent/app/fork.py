"""Fork a task at one of its steps: a divergent path, side by side with the old one.

    gitops-agent fork <task-id> --at <step> ["new instruction"]

The new task branch starts at the old task's commit for that step (the commit whose trailers are
``Agent-Task: <task-id>`` and ``Agent-Step: <step>``), so it holds the repository and everything
the old task had done up to then. On top, one commit (``Agent-Role: intake``, ``Agent-Fork:
<task-id>@<step>``) adds the new task's folder:

    .agent/tasks/<old-id>/...        left as it was at that step (read-only history: result texts
                                     and code of the old steps that name these paths still work)
    .agent/tasks/<new-id>/task.json  same question, instructions + the new one, source "fork",
                                     parent {task_id, step, commit}
    .agent/tasks/<new-id>/plan.json  the old plan at that step: done/failed nodes keep their
                                     results; nodes dispatched but not finished by then go back
                                     to pending; a finish is undone
    .agent/tasks/<new-id>/steps/...  the old step folders, copied (same blobs, no new storage),
                                     so the new task reads its inherited results like its own

The budget is the old task's plus what was spent up to the fork point, so the new work gets the
same allowance. Then the engine runs the new task from its planner (local mode), which sees the
new instruction and re-plans from the results it has. The old branch is never touched.
"""

from __future__ import annotations

import time

from gitops_agent.core.errors import AgentError, TaskNotFound
from gitops_agent.core.plan import Plan
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import Snapshot, load_snapshot
from gitops_agent.core.state import (
    NodeStatus,
    TaskFile,
    TaskModels,
    TaskParent,
    TaskSource,
    branch_for,
    check_task_id,
    dump_state,
    task_dir,
    utcnow,
)
from gitops_agent.git.messages import shorten
from gitops_agent.runtime.context import Runtime

MAX_INSTRUCTION_CHARS = 5000


def step_commits(rt: Runtime, task_id: str) -> dict[int, str]:
    """step number -> commit of every step of the task (newest commit per step)."""
    out: dict[int, str] = {}
    for c in rt.git.log(branch_for(task_id)):
        if c.trailers.get("Agent-Task") == task_id and (s := c.trailers.get("Agent-Step", "")).isdigit():
            out.setdefault(int(s), c.sha)
    return out


def find_step_commit(rt: Runtime, task_id: str, step: int) -> str:
    branch = branch_for(check_task_id(task_id))
    if rt.git.tip(branch) is None:
        raise TaskNotFound(f"no task branch {branch!r}")
    c = rt.git.find_commit(branch, {"Agent-Task": task_id, "Agent-Step": str(step)})  # type: ignore[attr-defined]
    if c is None:
        steps = sorted(step_commits(rt, task_id))
        raise AgentError(f"task {task_id} has no commit for step {step}; its steps are: {', '.join(map(str, steps)) or 'none'}")
    return c.sha


def fork_task(
    rt: Runtime,
    task_id: str,
    step: int,
    instruction: str | None = None,
    new_task_id: str | None = None,
    models: TaskModels | None = None,
) -> TaskFile:
    """Create the fork's branch and task folder (see the module doc); returns its task.json.
    ``models``: the fork's planner/executor models (default: the old task's)."""
    commit = find_step_commit(rt, task_id, step)
    snap = load_snapshot(rt.git, task_id, tip=commit)
    instruction = (instruction or "").strip()
    if len(instruction) > MAX_INSTRUCTION_CHARS:
        raise AgentError(f"the instruction is {len(instruction)} characters; the limit is {MAX_INSTRUCTION_CHARS}")

    new_id = _fork_branch(rt, task_id, step, commit, new_task_id)

    old_root, new_root = task_dir(task_id), task_dir(new_id)
    step_files = [f for f in snap.files if f.startswith(old_root + "/steps/")]
    blobs = rt.git.read_files(commit, step_files)  # type: ignore[attr-defined]
    changes: dict[str, bytes | None] = {new_root + f[len(old_root) :]: b for f, b in blobs.items() if b is not None}

    plan = _fork_plan(snap)
    if plan is not None:
        changes[f"{new_root}/plan.json"] = dump_state(plan)

    old = snap.task
    budget = old.budget.model_copy(
        update={
            "max_usd": round(old.budget.max_usd + snap.cost_usd, 6),
            "max_tokens": old.budget.max_tokens + snap.usage.total,
            "max_steps": old.budget.max_steps + snap.model_steps,
        }
    )
    task = TaskFile(
        task_id=new_id,
        question=old.question,
        source=TaskSource(kind="fork", repo=old.source.repo, author=old.source.author, url=old.source.url),
        base_ref=old.base_ref,
        base_sha=old.base_sha,
        budget=budget,
        models=models or old.models,
        created_at=utcnow(),
        instructions=list(old.instructions) + ([instruction] if instruction else []),
        parent=TaskParent(task_id=task_id, step=step, commit=commit),
    )
    changes[f"{new_root}/task.json"] = dump_state(task)
    trailers = rt.trailers(new_id, 1, "intake", extra={"Agent-Fork": f"{task_id}@{step}"})
    subject = f"agent(fork): {task_id} at step {step}" + (f": {shorten(instruction.splitlines()[0], 60)}" if instruction else "")
    rt.git.commit_files(branch_for(new_id), changes, subject, trailers)
    rt.reporter.event("task", task=new_id, branch=branch_for(new_id))
    return task


def _fork_branch(rt: Runtime, task_id: str, step: int, commit: str, new_task_id: str | None) -> str:
    """Create the new task branch at the step commit; its task id (``new_task_id``, else a free
    one near <old>-fork<step>)."""
    base_id = check_task_id(new_task_id) if new_task_id else f"{task_id[:64]}-fork{step}"
    for attempt in range(20):
        candidate = base_id if attempt == 0 else f"{base_id}-{attempt + 1}"
        check_task_id(candidate)
        if rt.git.tip(branch_for(candidate)) is not None:
            if new_task_id:
                raise AgentError(f"task {candidate} already exists")
            continue
        try:
            rt.git.create_branch(branch_for(candidate), commit)
        except AgentError:
            time.sleep(0.01)
            continue
        return candidate
    raise AgentError(f"could not find a free task id near {base_id!r}")


def _fork_plan(snap: Snapshot) -> Plan | None:
    """The old plan at the step (``snap``, which it becomes the plan of): nodes dispatched but not
    reported by then go back to pending, skipped ones too, and the finish is undone."""
    plan = snap.plan.model_copy(deep=True) if snap.plan is not None else None
    if plan is not None:
        plan.finish = None
        for n in plan.walk():
            if not n.is_leaf:
                continue
            if n.status == NodeStatus.running and (n.step is None or snap.step_record(n.step, n.id) is None):
                n.status, n.step, n.attempts = NodeStatus.pending, None, max(0, n.attempts - 1)
            elif n.status == NodeStatus.skipped:
                n.status = NodeStatus.pending
        snap.plan = plan
        snap.sync_plan()  # running nodes whose step had reported by then: done / failed
        plan.refresh_parents()
    return plan


def fork_jobs(rt: Runtime, new_task_id: str) -> list[Job]:
    """What to run to continue the fork: its planner (it re-plans with the new instruction)."""
    return [Job(step="plan", task=new_task_id, branch=branch_for(new_task_id), hop=0)]


def run_fork(
    rt: Runtime,
    task_id: str,
    step: int,
    instruction: str | None = None,
    *,
    new_task_id: str | None = None,
    models: TaskModels | None = None,
    workers: int | None = None,
):
    """Fork and run the new task to its end in local mode; returns gitops_agent.app.local.RunResult."""
    from gitops_agent.app.local import result_of
    from gitops_agent.steps.engine import Engine

    task = fork_task(rt, task_id, step, instruction, new_task_id, models)
    engine = Engine(rt)
    engine.run_local(fork_jobs(rt, task.task_id), workers=workers)
    return result_of(rt, task.task_id, engine.failures)


__all__ = ["find_step_commit", "fork_jobs", "fork_task", "run_fork", "step_commits"]
