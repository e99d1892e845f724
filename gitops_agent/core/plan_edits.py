"""A person steering the plan: nodes run again (`/agent retry`, or plan.json edited on the branch)
and what depends on them runs again too; untouched done nodes keep their results."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterable

from gitops_agent.core.errors import StateFileError
from gitops_agent.core.plan import Plan, PlanNode
from gitops_agent.core.state import NodeStatus

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.core.snapshot import Snapshot


def _leaves_under(node: PlanNode) -> list[PlanNode]:
    return [n for n in node.walk() if n.is_leaf]


def redo(plan: Plan, ids: Iterable[str]) -> list[str]:
    """Set the leaves ``ids`` (a parent: all its leaves) back to pending, and every done or
    failed leaf that depends on one of them, directly or through a parent, until nothing more
    changes. Returns the leaf ids reset, in plan order."""
    reset: set[str] = set()
    for i in ids:
        n = plan.get(i)
        if n is not None:
            reset.update(x.id for x in _leaves_under(n))
    changed = True
    while changed:
        changed = False
        for leaf in plan.walk():
            if not leaf.is_leaf or leaf.id in reset:
                continue
            deps: set[str] = set()
            for d in plan._all_deps(leaf):
                dn = plan.get(d)
                if dn is not None:
                    deps.update(x.id for x in _leaves_under(dn))
            if deps & reset:
                reset.add(leaf.id)
                changed = True
    out = []
    for leaf in plan.walk():
        if leaf.is_leaf and leaf.id in reset and leaf.status != NodeStatus.running:
            if leaf.status != NodeStatus.pending or leaf.step is not None:
                out.append(leaf.id)
            leaf.status, leaf.step, leaf.result, leaf.dispatched_at = NodeStatus.pending, None, None, None
    plan.refresh_parents()
    return out


def _same(a: PlanNode, b: PlanNode) -> bool:
    return (a.title, a.goal, a.agent, sorted(a.depends_on), [c.id for c in a.children]) == (
        b.title,
        b.goal,
        b.agent,
        sorted(b.depends_on),
        [c.id for c in b.children],
    )


def take_person_edits(snap: "Snapshot", engine_plan: Plan | None, path: str) -> list[str]:
    """``snap.plan`` as a person left it on the branch, compared with ``engine_plan`` (the plan the
    engine last wrote): statuses are the engine's again, except that a node a person set back to
    pending, or whose goal, title, agent or dependencies changed, runs again with what depends on
    it; new nodes run; removed pending nodes are gone. ``snap.plan`` is updated; returns one line
    per change, for the planner and the report. StateFileError for an edit that cannot stand."""
    plan = snap.plan
    if plan is None or engine_plan is None:
        return []
    notes: list[str] = []
    again: list[str] = []
    for n in plan.walk():
        o = engine_plan.get(n.id)
        if o is None:
            if n.is_leaf and n.status != NodeStatus.pending:
                raise StateFileError(
                    path, f"node {n.id!r}: a new node must be pending (status {n.status.value!r}); the agent runs it"
                )
            n.status, n.step, n.result = NodeStatus.pending, None, None
            notes.append(f"node {n.id} added: {n.title}")
            continue
        if not n.is_leaf:
            continue
        if n.status == NodeStatus.pending and o.status in (NodeStatus.done, NodeStatus.failed):
            again.append(n.id)
            notes.append(f"node {n.id} set back to pending: run again")
        elif not _same(n, o) and o.status != NodeStatus.pending:
            again.append(n.id)
            notes.append(f"node {n.id} changed: run again")
        elif n.status != o.status and not (n.status == NodeStatus.pending and o.status == NodeStatus.pending):
            if n.status in (NodeStatus.done, NodeStatus.failed, NodeStatus.running) and o.status != n.status:
                raise StateFileError(
                    path,
                    f"node {n.id!r}: status {n.status.value!r} is the agent's to set; "
                    "set a node to 'pending' to have it run again",
                )
        if n.id not in again:  # the engine's record stands
            n.status, n.step, n.result, n.attempts = o.status, o.step, o.result, o.attempts
    for o in engine_plan.walk():
        if plan.get(o.id) is None:
            if o.is_leaf and o.status in (NodeStatus.done, NodeStatus.running):
                raise StateFileError(path, f"node {o.id!r} ({o.status.value}) was removed; only pending nodes can be removed")
            notes.append(f"node {o.id} removed")
    for leaf in redo(plan, again):
        if leaf not in again:
            notes.append(f"node {leaf} depends on a node that runs again: run again")
    if notes:
        plan.finish = None
    return notes


def steer(git, snap: "Snapshot", seen: int) -> list[str]:
    """What people changed in plan.json on the branch since the engine last planned (compared
    with the last planner commit's), applied to ``snap.plan``; one line per change. StateFileError
    for an edit that cannot stand (a plan.json that does not validate fails earlier, in
    load_snapshot). Their `/agent` commands are applied by the plan step (steps/commands.py)."""
    if snap.plan is None:
        return []
    path = f"{snap.root}/plan.json"
    notes: list[str] = []
    now = git.read_file(snap.tip, path)
    last = max((s for s in snap.steps if s.role == "planner"), key=lambda s: s.seq, default=None)
    written = getattr(last, "plan_sha256", None)
    if now is not None and (written is None or hashlib.sha256(now).hexdigest() != written):
        # not the plan the engine last wrote (or a record too old to say): read that one from history
        planned = git.find_commit(snap.branch, {"Agent-Task": snap.task_id, "Agent-Role": "planner"})
        ours = git.read_file(planned.sha, path) if planned is not None and planned.sha != snap.tip else None
        if ours is not None and ours != now:
            notes += take_person_edits(snap, Plan.model_validate_json(ours), path)
    return notes
