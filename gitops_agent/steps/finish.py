"""The finish step: report.md on the task branch (the answer, the plan, results, costs)."""

from __future__ import annotations

import time

from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import Snapshot, load_snapshot
from gitops_agent.core.state import FINISH_NODE, NodeStatus, StepRecord, dump_state, utcnow
from gitops_agent.git.messages import shorten
from gitops_agent.memory.experience import cited_ids
from gitops_agent.observe.charts import find_charts, report_markdown
from gitops_agent.observe.queries import queries_markdown
from gitops_agent.observe.render import cost_table, fmt_tokens, md_block, md_checklist, md_text
from gitops_agent.observe.rounds import rounds_table
from gitops_agent.runtime.context import Runtime
from gitops_agent.safety.text import OwnImages, outbound
from gitops_agent.steps.memory_hooks import record_experience, shown_memory
from gitops_agent.templates.prompts import render


def outcome_of(snap: Snapshot, job: Job) -> tuple[str, str, str | None]:
    """(outcome, answer, reason) for the report: the planner's finish, else why the job that
    asked for this finish stopped the task (``job.stop``)."""
    fin = snap.plan.finish if snap.plan else None
    if fin is not None:
        return fin.outcome, fin.answer, fin.reason
    return ("budget" if job.stop == "budget" else "error"), "", job.reason or "the task stopped before the planner finished it"


def without_repeats(result: str, answer: str) -> str:
    """A node's result without the tables the answer already shows (a reader saw them twice)."""
    said = "\n".join(line.strip() for line in (answer or "").splitlines())
    out: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            text = "\n".join(line.strip() for line in table)
            out.extend(["_(this table is in the Answer above)_"] if len(table) >= 2 and text in said else table)
            table.clear()

    for line in result.splitlines():
        if line.lstrip().startswith("|"):
            table.append(line)
            continue
        flush()
        out.append(line)
    flush()
    return "\n".join(out)


def render_report(rt: Runtime, snap: Snapshot, outcome: str, answer: str, reason: str | None) -> str:
    """report.md. GitHub renders it when someone opens it, so everything the model wrote is
    sanitised as for a comment (gitops_agent/safety/text.py): no remote image, no hidden text, no mention."""
    hosts = tuple(rt.config.github.image_hosts)
    results = []
    if snap.plan:
        for n in snap.plan.walk():
            if n.is_leaf and n.step is not None and n.status in (NodeStatus.done, NodeStatus.failed):
                results.append(
                    {
                        "node": n.id,
                        "title": md_text(n.title, 200),
                        "status": n.status.value,
                        "result": md_block(without_repeats(snap.result_of(n.step, n.id).strip(), answer), hosts),
                    }
                )
    summary = snap.plan.finish.summary if snap.plan and snap.plan.finish else ""
    title = md_text(summary or snap.task.question.splitlines()[0][:100], 200)
    memory = [
        {
            **e,
            "question": md_text(str(e.get("question", "")), 200),
            "task_id": md_text(str(e.get("task_id", "")), 80),
            "outcome": md_text(str(e.get("outcome", "")), 20),
        }
        for e in memory_for_report(snap, answer)
    ]
    report = render(
        rt.brain.prompt_dirs,
        "report.j2",
        title=title,
        task=snap.task,
        question=md_text(snap.task.question, 2000),
        instructions=[md_text(i, 500) for i in snap.task.instructions],
        outcome=outcome,
        reason=md_text(reason, 500) if reason else reason,
        answer=md_block(answer, hosts),
        checklist=md_checklist(snap.plan),
        results=results,
        cost_table=cost_table(snap.steps),
        branch=snap.branch,
        memory=memory,
        rounds=rounds_table(snap),
        charts=report_markdown(find_charts(snap.git, snap.tip, snap.task_id, snap.steps)),
        queries=queries_markdown(snap.steps),
    )
    # and once more as a whole, so no field of a template (the brain's, too) can slip past; the
    # charts are images of this commit, by relative paths (the model's own images went in md_block)
    return outbound(report, hosts, OwnImages(relative=True)) + "\n"


def memory_for_report(snap: Snapshot, answer: str) -> list[dict]:
    """memory: the past experiences the planner was shown (its memory.json), each marked cited
    when the answer, the summary, the plan note or the lessons name its task id."""
    try:
        shown = (shown_memory(snap) or {}).get("shown") or []
    except Exception:  # noqa: BLE001 - a report without the memory section is fine
        return []
    fin = snap.plan.finish if snap.plan else None
    texts = [answer, fin.summary if fin else "", snap.plan.note if snap.plan else "", *(fin.lessons if fin else [])]
    ids = [e.get("task_id") for e in shown if isinstance(e, dict) and isinstance(e.get("task_id"), str)]
    cited = set(cited_ids(texts, ids))
    return [{**e, "cited": e.get("task_id") in cited} for e in shown if isinstance(e, dict)]


def run_finish(rt: Runtime, job: Job) -> list[Job]:
    snap = load_snapshot(rt.git, job.task)
    head = rt.git.log(snap.tip, max_count=1)
    if head and head[0].trailers.get("Agent-Role") == "finish":
        rt.reporter.event("skip", step="finish", why="already finished at this commit")
        # memory: a finish killed between its commit and the memory write adds it now
        outcome = head[0].trailers.get("Agent-Outcome") or outcome_of(snap, job)[0]
        record_experience(rt, snap, outcome, outcome_of(snap, job)[1], job.reason, only_if_missing=True)
        return []
    t0, started = time.monotonic(), utcnow()
    outcome, answer, reason = outcome_of(snap, job)
    report = render_report(rt, snap, outcome, answer, reason)
    seq = snap.next_seq()
    record = StepRecord(
        task_id=job.task,
        seq=seq,
        role="finish",
        node=FINISH_NODE,
        status="done" if outcome == "done" else "failed",
        started_at=started,
        finished_at=utcnow(),
        duration_ms=int((time.monotonic() - t0) * 1000),
        error=None if outcome == "done" else reason,
        outcome=outcome,
    )
    changes = {f"{snap.root}/report.md": report.encode(), f"{snap.step_dir(seq, FINISH_NODE)}/step.json": dump_state(record)}
    summary = snap.plan.finish.summary if snap.plan and snap.plan.finish and snap.plan.finish.summary else outcome
    trailers = rt.trailers(job.task, seq, "finish", cost=0.0, extra={"Agent-Outcome": outcome})
    sha = rt.git.commit_files(snap.branch, changes, shorten(f"agent(finish): {summary}", 200), trailers, base=snap.tip)
    if rt.on_commit:
        rt.on_commit(sha)
    # memory: one experience file for this task on agent/memory (never fails the task)
    record_experience(rt, snap, outcome, answer, reason)
    rt.reporter.event(
        "finish",
        task=job.task,
        outcome=outcome,
        cost=snap.cost_usd,
        tokens=fmt_tokens(snap.usage.total),
        answer=answer,
        reason=reason,
    )
    return []
