"""Building a trace (gitops_agent/observe/trace.py) from a task branch: the step files at the tip and
the commits of the branch (read in gitops_agent/observe/trace_history.py), matched by their trailers."""

from __future__ import annotations

import json

from pydantic import ValidationError

from gitops_agent.core.errors import BadName, TaskNotFound
from gitops_agent.core.plan import PlanNode
from gitops_agent.core.seams import GitStore
from gitops_agent.core.snapshot import Snapshot, load_snapshot
from gitops_agent.core.state import BRANCH_PREFIX, NodeStatus, StepRecord, Turn, Usage, check_task_id
from gitops_agent.observe.trace import CommitInfo, CostRow, Totals, Trace, TraceNode, TracePlan, TraceStep
from gitops_agent.observe.trace_history import branch_commits, check_ledger, commit_problems, index_commits, trailer_int

__all__ = ["build_trace", "resolve_task_id", "trace_from_snapshot"]


# ----------------------------------------------------------------------------- resolving


def resolve_task_id(git: GitStore, task_id_or_branch: str, fetch: bool = True) -> str:
    """A task id from ``<task-id>``, ``agent/task/<task-id>``, ``refs/heads/agent/task/<id>``,
    ``<remote>/agent/task/<id>``, or a unique prefix of a local task id."""
    raw = (task_id_or_branch or "").strip()
    name = raw
    for prefix in ("refs/heads/", "refs/remotes/"):
        name = name.removeprefix(prefix)
    if BRANCH_PREFIX in name:
        name = name.split(BRANCH_PREFIX, 1)[1]
    try:
        check_task_id(name)
    except BadName:
        raise BadName(f"{raw!r} is neither a task id nor a task branch (agent/task/<task-id>)") from None
    if git.tip(BRANCH_PREFIX + name, fetch=fetch) is not None:
        return name
    candidates = [t for t in _local_task_ids(git) if t.startswith(name)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise TaskNotFound(f"{raw!r} matches several tasks: {', '.join(candidates[:10])}")
    raise TaskNotFound(f"no task branch {BRANCH_PREFIX + name!r} (list them with `gitops-agent tasks`)")


def _local_task_ids(git: GitStore) -> list[str]:
    run = getattr(git, "git", None)
    if run is None:
        return []
    out = run("for-each-ref", "--format=%(refname)", "refs/heads/agent/task/", "refs/remotes/")
    ids = []
    for ref in out.split():
        if BRANCH_PREFIX in ref:
            ids.append(ref.split(BRANCH_PREFIX, 1)[1])
    return sorted(set(ids))


# ----------------------------------------------------------------------------- step files


def _parse_turns(raw: bytes | None) -> tuple[list[Turn], list[str]]:
    turns: list[Turn] = []
    problems: list[str] = []
    if not raw:
        return turns, problems
    for i, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            turns.append(Turn.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as e:
            problems.append(f"turns.jsonl line {i} does not parse: {str(e).splitlines()[0]}")
    return turns, problems


# ----------------------------------------------------------------------------- building


def build_trace(git: GitStore, task_id_or_branch: str, *, fetch: bool = True, transcripts: bool = True) -> Trace:
    """The trace of a task from its branch: ``task_id_or_branch`` is a task id, its branch
    (``agent/task/<id>``) or a unique prefix of a task id. ``transcripts=False`` skips
    turns.jsonl and result.md (a lighter trace, e.g. for a progress comment)."""
    task_id = resolve_task_id(git, task_id_or_branch, fetch=fetch)
    snap = load_snapshot(git, task_id, fetch=fetch)
    return trace_from_snapshot(snap, transcripts=transcripts)


def trace_from_snapshot(snap: Snapshot, *, transcripts: bool = True) -> Trace:
    git = snap.git
    par = getattr(snap.task, "parent", None)
    commits, reached_intake = branch_commits(
        git, snap.tip, snap.task.base_sha, snap.task_id, (par.task_id, par.step) if par is not None else None
    )
    history_complete = reached_intake or not (getattr(git, "is_shallow", lambda: False)())
    by_seq, events, problems = index_commits(commits)
    titles = {n.id: n.title for n in snap.plan.walk()} if snap.plan else {}
    steps = _recorded_steps(snap, by_seq, titles, problems, transcripts)
    recorded = {s.seq for s in steps}
    steps += _steps_without_record(snap, by_seq, recorded, titles, problems)
    steps += _running_steps(snap, by_seq, recorded)
    steps.sort(key=lambda s: s.seq)

    ledger = check_ledger(snap.steps, by_seq, events, problems)
    outcome, summary, answer, reason = _outcome(snap, by_seq)
    t = snap.task
    return Trace(
        task_id=snap.task_id,
        branch=snap.branch,
        tip=snap.tip,
        question=t.question,
        instructions=list(t.instructions),
        source=t.source,
        base_ref=t.base_ref,
        base_sha=t.base_sha,
        models=t.models,
        budget=t.budget,
        created_at=t.created_at,
        outcome=outcome,
        summary=summary,
        answer=answer,
        reason=reason,
        plan=_trace_plan(snap, steps),
        steps=steps,
        totals=_totals(snap, steps),
        by_model=_breakdown([r for r in snap.steps if r.model], lambda r: r.model),
        by_role=_breakdown(snap.steps, lambda r: r.role),
        ledger_consistent=ledger.consistent,
        ledger=ledger,
        events=events,
        history_complete=history_complete,
    )


def _recorded_steps(
    snap: Snapshot, by_seq: dict[int, CommitInfo], titles: dict[str, str], problems: list[str], transcripts: bool
) -> list[TraceStep]:
    """A step per step.json at the tip, with its transcript and result; adds to ``problems``."""
    blobs: dict[str, bytes | None] = {}
    if transcripts:  # the files of each step, in one cat-file batch for all of them
        wanted = []
        for rec in snap.steps:
            d = snap.step_dir(rec.seq, rec.node)
            wanted += [f"{d}/turns.jsonl", f"{d}/result.md"]
        if wanted:
            blobs = snap.git.read_files(snap.tip, wanted)  # type: ignore[attr-defined]
    steps: list[TraceStep] = []
    for rec in snap.steps:
        commit = by_seq.get(rec.seq)
        d = snap.step_dir(rec.seq, rec.node)
        transcript, turn_problems = _parse_turns(blobs.get(f"{d}/turns.jsonl")) if transcripts else ([], [])
        problems += [f"step {rec.seq}: {p}" for p in turn_problems]
        result = blobs.get(f"{d}/result.md") if transcripts else None
        steps.append(
            _step_from_record(rec, commit, titles, transcript, result.decode("utf-8", "replace") if result is not None else None)
        )
        problems += commit_problems(rec, commit)
    return steps


def _steps_without_record(
    snap: Snapshot, by_seq: dict[int, CommitInfo], recorded: set[int], titles: dict[str, str], problems: list[str]
) -> list[TraceStep]:
    """Steps known only from their commit: the intake (which writes no step.json) and, a
    problem, any other step whose step.json is missing; adds to ``problems``."""
    steps: list[TraceStep] = []
    for seq, c in by_seq.items():
        if seq in recorded:
            continue
        if c.role == "intake":
            steps.append(
                TraceStep(
                    seq=seq,
                    role="intake",
                    status="done",
                    started_at=snap.task.created_at,
                    finished_at=c.committed_at or snap.task.created_at,
                    duration_ms=trailer_int(c.trailers.get("Agent-Duration-Ms")) or 0,
                    commit=c,
                    has_record=False,
                )
            )
        else:
            problems.append(f"commit {c.short} (step {seq}, {c.role}) has no step.json on the branch")
            role = c.role if c.role in ("planner", "executor", "finish") else "executor"
            steps.append(
                TraceStep(
                    seq=seq,
                    role=role,
                    node=c.node if role == "executor" else None,
                    node_title=titles.get(c.node or ""),
                    model=c.model or "",
                    usage=c.usage or Usage(),
                    cost_usd=c.cost_usd or 0.0,
                    duration_ms=c.duration_ms or 0,
                    finished_at=c.committed_at,
                    commit=c,
                    has_record=False,
                )
            )
    return steps


def _running_steps(snap: Snapshot, by_seq: dict[int, CommitInfo], recorded: set[int]) -> list[TraceStep]:
    """Dispatched nodes whose step has not reported yet."""
    if not snap.plan:
        return []
    return [
        TraceStep(seq=n.step, role="executor", node=n.id, node_title=n.title, agent=n.agent, status="running", has_record=False)
        for n in snap.plan.walk()
        if n.is_leaf and n.status == NodeStatus.running and n.step is not None and n.step not in recorded and n.step not in by_seq
    ]


def _step_from_record(
    rec: StepRecord, commit: CommitInfo | None, titles: dict[str, str], transcript: list[Turn], result: str | None
) -> TraceStep:
    is_exec = rec.role == "executor"
    return TraceStep(
        seq=rec.seq,
        role=rec.role,
        node=rec.node if is_exec else None,
        node_title=titles.get(rec.node) if is_exec else None,
        agent=rec.agent,
        # a cascade shows every model tried: cheap → strong
        model=" → ".join(a.model for a in rec.cascade) if rec.cascade else rec.model,
        cascade=list(rec.cascade),
        status=rec.status,
        turns=rec.turns,
        started_at=rec.started_at,
        finished_at=rec.finished_at,
        duration_ms=rec.duration_ms,
        usage=rec.usage,
        cache_share=_cache_share(rec.usage),
        cost_usd=rec.cost_usd,
        error=rec.error,
        artifacts=list(rec.artifacts),
        refused=list(rec.refused),
        queries=list(rec.queries),
        commit=commit,
        result=result if is_exec else None,
        transcript=transcript,
    )


def _outcome(snap: Snapshot, by_seq: dict[int, CommitInfo]) -> tuple[str, str, str, str | None]:
    fin = snap.plan.finish if snap.plan else None
    finish_commits = [c for _, c in sorted(by_seq.items()) if c.role == "finish"]
    summary = fin.summary if fin else ""
    answer = fin.answer if fin else ""
    reason = fin.reason if fin else None
    last_step = max([*by_seq, *(s.seq for s in snap.steps)], default=0)
    last_finish = max((seq for seq, c in by_seq.items() if c.role == "finish"), default=None)
    if last_finish is not None and last_finish < last_step:
        # reopened by a follow-up instruction after it finished
        return "unfinished", summary, answer, None
    if finish_commits and finish_commits[-1].outcome:
        outcome = finish_commits[-1].outcome
        if outcome != "done":
            rec = next((s for s in reversed(snap.steps) if s.role == "finish" and s.error), None)
            reason = rec.error if rec else reason
    elif fin is not None:
        outcome = fin.outcome if finish_commits else "unfinished"
    else:
        outcome = "unfinished"
    return outcome, summary, answer, reason


def _cache_share(u: Usage) -> float:
    return round(u.cache_read_tokens / u.total_input, 4) if u.total_input else 0.0


def _trace_plan(snap: Snapshot, steps: list[TraceStep]) -> TracePlan | None:
    plan = snap.plan
    if plan is None:
        return None
    runs: dict[str, list[TraceStep]] = {}
    for s in steps:
        if s.role == "executor" and s.node:
            runs.setdefault(s.node, []).append(s)

    def conv(n: PlanNode) -> TraceNode:
        kids = [conv(c) for c in n.children]
        mine = runs.get(n.id, [])
        usage = sum((s.usage for s in mine), Usage()) + sum((k.usage for k in kids), Usage())
        status = plan.status_of(n)
        return TraceNode(
            id=n.id,
            title=n.title,
            goal=n.goal,
            agent=n.agent,
            depends_on=list(n.depends_on),
            status=status,
            mark=status.mark,
            attempts=n.attempts,
            step=n.step,
            steps=[s.seq for s in mine],
            usage=usage,
            cost_usd=round(sum(s.cost_usd for s in mine) + sum(k.cost_usd for k in kids), 6),
            duration_ms=sum(s.duration_ms for s in mine) + sum(k.duration_ms for k in kids),
            children=kids,
        )

    return TracePlan(
        version=plan.version, goal=plan.goal, note=plan.note, nodes=[conv(n) for n in plan.nodes], counts=plan.counts()
    )


def _totals(snap: Snapshot, steps: list[TraceStep]) -> Totals:
    usage = snap.usage
    committed = [s for s in steps if s.status != "running"]
    ends = [t for s in committed for t in (s.finished_at, s.commit.committed_at if s.commit else None) if t is not None]
    wall = max(0.0, (max(ends) - snap.task.created_at).total_seconds()) if ends else 0.0
    return Totals(
        steps=len(committed),
        model_steps=sum(1 for r in snap.steps if r.role in ("planner", "executor")),
        turns=sum(r.turns for r in snap.steps),
        usage=usage,
        tokens=usage.total,
        cache_share=_cache_share(usage),
        cost_usd=snap.cost_usd,
        step_duration_ms=sum(s.duration_ms for s in committed),
        wall_seconds=wall,
    )


def _breakdown(records: list[StepRecord], key) -> list[CostRow]:
    rows: dict[str, CostRow] = {}
    for r in records:
        k = key(r)
        row = rows.setdefault(k, CostRow(key=k))
        row.steps += 1
        row.turns += r.turns
        row.usage = row.usage + r.usage
        row.cost_usd = round(row.cost_usd + r.cost_usd, 6)
        row.duration_ms += r.duration_ms
    for row in rows.values():
        row.cache_share = _cache_share(row.usage)
    return sorted(rows.values(), key=lambda r: (-r.cost_usd, -r.usage.total, r.key))
