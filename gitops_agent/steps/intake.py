"""The intake step: a question becomes a task branch holding task.json."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from gitops_agent.core.errors import AgentError, ConfigError, TaskExists
from gitops_agent.core.seams import Job
from gitops_agent.core.state import Budget, TaskFile, TaskModels, TaskSource, branch_for, dump_state, task_dir, utcnow
from gitops_agent.git.messages import shorten
from gitops_agent.runtime.context import Runtime

MAX_QUESTION_CHARS = 20_000


def slugify(text: str, max_len: int = 40) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    slug = ""
    for w in words:
        if len(slug) + len(w) + 1 > max_len:
            break
        slug = f"{slug}-{w}" if slug else w
    return slug or "task"


def new_task_id(question: str, issue: int | None = None, now: datetime | None = None) -> str:
    """Short, sortable and safe in a ref: `42-avg-order-value` or `20261126-162355-avg-order-value`."""
    if issue is not None:
        return f"{issue}-{slugify(question)}"
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{slugify(question, 24)}"


def check_question(question: str) -> str:
    q = (question or "").strip()
    if not q:
        raise ConfigError("the question is empty")
    if len(q) > MAX_QUESTION_CHARS:
        raise ConfigError(f"the question is {len(q)} characters; the limit is {MAX_QUESTION_CHARS}")
    return q


def create_task(
    rt: Runtime,
    question: str,
    *,
    base_ref: str,
    base_sha: str,
    models: TaskModels,
    budget: Budget | None = None,
    source: TaskSource | None = None,
    task_id: str | None = None,
) -> tuple[TaskFile, Job]:
    question = check_question(question)
    tid = task_id or new_task_id(question, issue=source.issue if source else None)
    for attempt in range(1 if task_id else 20):  # a given id is that id or nothing
        candidate = tid if attempt == 0 else f"{tid}-{attempt + 1}"
        branch = branch_for(candidate)
        if rt.git.tip(branch) is None:
            try:
                rt.git.create_branch(branch, base_sha)
            except AgentError:
                time.sleep(0.01)
                continue  # lost a race for the same id: take the next
            tid = candidate
            break
    else:
        if task_id:
            raise TaskExists(f"a task {task_id!r} exists already")
        raise AgentError(f"could not find a free task id near {tid!r}")
    task = TaskFile(
        task_id=tid,
        question=question,
        source=source or TaskSource(),
        base_ref=base_ref,
        base_sha=base_sha,
        budget=budget or rt.config.budget,
        models=models,
        created_at=utcnow(),
        brain=getattr(rt.brain, "commit", None),
    )
    trailers = rt.trailers(tid, 1, "intake")
    subject = f"agent(intake): {shorten(question.splitlines()[0], 72)}"
    rt.git.commit_files(branch, {f"{task_dir(tid)}/task.json": dump_state(task)}, subject, trailers)
    rt.reporter.event("task", task=tid, branch=branch)
    return task, Job(step="plan", task=tid, branch=branch, hop=0)


def add_instruction(
    rt: Runtime,
    task_id: str,
    instruction: str,
    author: str | None = None,
    where=None,
    max_usd: float | None = None,
    settings_at: str | None = None,
) -> Job:
    """A follow-up on an existing task: the instruction is appended to task.json (intake is its
    one writer) and the planner is asked to continue on the same branch."""
    from gitops_agent.core.errors import PushConflict

    instruction = check_question(instruction)
    for attempt in range(6):  # two follow-ups at once: both land, one after the other
        try:
            return _append_instruction(rt, task_id, instruction, author, where, max_usd, settings_at)
        except PushConflict:
            if attempt == 5:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _append_instruction(
    rt: Runtime, task_id: str, instruction: str, author: str | None, where, max_usd: float | None, settings_at: str | None = None
) -> Job:
    from gitops_agent.core.snapshot import load_snapshot
    from gitops_agent.core.state import StepRecord, step_dirname

    snap = load_snapshot(rt.git, task_id)
    task = snap.task.model_copy(deep=True)
    when = f"{utcnow():%Y-%m-%d %H:%M} UTC"
    task.instructions.append(f"{instruction} (from @{author}, {when})" if author else f"{instruction} ({when})")
    if max_usd is not None:  # `/agent budget +USD` (the caller bounded it)
        task.budget.max_usd = max_usd
    if settings_at is not None:  # this round is governed by the default branch's settings as they are now
        task.settings_at = settings_at
    if where is not None:  # a FollowUp: where to reply; older instructions without one reply on the issue
        from gitops_agent.core.state import FollowUp

        while len(task.follow_ups) < len(task.instructions) - 1:
            task.follow_ups.append(FollowUp(number=task.source.issue))
        task.follow_ups.append(where)
    seq = snap.next_seq()
    now = utcnow()
    record = StepRecord(task_id=task_id, seq=seq, role="intake", node="_intake", started_at=now, finished_at=now)
    changes = {
        f"{snap.root}/task.json": dump_state(task),
        f"{snap.root}/steps/{step_dirname(seq, '_intake')}/step.json": dump_state(record),
    }
    trailers = rt.trailers(task_id, seq, "intake")
    rt.git.commit_files(
        snap.branch, changes, f"agent(intake): follow-up: {shorten(instruction.splitlines()[0], 60)}", trailers, base=snap.tip
    )
    rt.reporter.event("task", task=task_id, branch=snap.branch)
    return Job(step="plan", task=task_id, branch=snap.branch, hop=0)
