"""Merging the planner's proposed tree with what is known: done, running and failed nodes keep
their status and results; a proposal that cannot stand is a FormatError worded for the model."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from gitops_agent.core.errors import FormatError
from gitops_agent.core.plan import Plan, PlanNode, plan_problems
from gitops_agent.core.state import NodeStatus, format_validation_error

_NODE_KEYS = {"id", "title", "goal", "agent", "depends_on", "children"}


def _clean_node(raw: Any, path: str) -> dict[str, Any]:
    """Keep the fields a model may set; statuses and results are the engine's."""
    if not isinstance(raw, dict):
        raise FormatError(f"{path} must be an object with id, title, goal, got {type(raw).__name__}")
    out = {k: v for k, v in raw.items() if k in _NODE_KEYS}
    if "children" in out:
        if not isinstance(out["children"], list):
            raise FormatError(f"{path}.children must be a list")
        out["children"] = [_clean_node(c, f"{path}.children[{i}]") for i, c in enumerate(out["children"])]
    if isinstance(out.get("depends_on"), str):
        out["depends_on"] = [out["depends_on"]]
    return out


def merge_plan(
    old: Plan | None, raw_nodes: Any, agents: set[str], goal: str, note: str = "", max_attempts: int | None = None
) -> Plan:
    """The proposed tree merged with what is known: done, running and failed nodes keep their
    status and results; a failed node runs again (a new goal) only while it has had fewer than
    ``max_attempts`` runs (budget.max_node_attempts). Any problem is a FormatError worded for the
    model to fix."""
    if isinstance(raw_nodes, str):
        try:
            raw_nodes = json.loads(raw_nodes)
        except json.JSONDecodeError as e:
            raise FormatError(
                f"`nodes` is a string that is not valid JSON ({e.msg}); pass a JSON array of node objects"
            ) from None
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise FormatError("`nodes` must be a non-empty array of node objects")
    cleaned = [_clean_node(n, f"nodes[{i}]") for i, n in enumerate(raw_nodes)]
    try:
        nodes = [PlanNode.model_validate(n) for n in cleaned]
    except ValidationError as e:
        raise FormatError(f"a node is malformed: {format_validation_error(e)}") from None
    problems = plan_problems(nodes)
    if problems:
        raise FormatError("; ".join(problems))
    new = Plan(version=(old.version + 1) if old else 1, goal=goal, note=note, nodes=nodes)
    unknown = sorted({n.agent for n in new.walk() if n.agent not in agents})
    if unknown:
        raise FormatError(f"unknown agent(s) {unknown}; use one of {sorted(agents)}")

    if old is not None:
        errors: list[str] = []
        for o in old.walk():
            if not o.is_leaf or o.status == NodeStatus.pending or o.status == NodeStatus.skipped:
                continue
            n = new.get(o.id)
            if o.status in (NodeStatus.done, NodeStatus.running):
                if n is None:
                    errors.append(f"{o.status.value} node {o.id!r} is missing; keep it unchanged")
                    continue
                if not n.is_leaf or n.goal != o.goal or n.agent != o.agent or sorted(n.depends_on) != sorted(o.depends_on):
                    errors.append(
                        f"{o.status.value} node {o.id!r} was rewritten; keep its goal, agent, depends_on and "
                        f"no children exactly as they were"
                    )
                    continue
                n.status, n.result, n.step, n.attempts = o.status, o.result, o.step, o.attempts
            elif o.status == NodeStatus.failed and n is not None:
                n.attempts = o.attempts
                if n.goal == o.goal and n.is_leaf:
                    # kept unchanged: stays failed (and blocks its dependents)
                    n.status, n.result, n.step = o.status, o.result, o.step
                elif max_attempts is not None and o.attempts >= max_attempts:
                    errors.append(
                        f"failed node {o.id!r} has run {o.attempts} times, the most a node may "
                        f"(budget.max_node_attempts = {max_attempts}); keep it as it was, or finish"
                    )
                # a changed goal means: try again (status pending)
        errors += _spent_goals(old, new, max_attempts)
        if errors:
            raise FormatError("; ".join(errors))
    new.refresh_parents()
    if not new.ready() and not new.running():
        blocked = [n.id for n in new.blocked()]
        why = f"nodes {blocked} wait on failed nodes" if blocked else "every leaf is already done or failed"
        raise FormatError(f"no node can run: {why}. Call `finish` with the answer, or add or change nodes.")
    return new


def _spent_goals(old: Plan, new: Plan, max_attempts: int | None) -> list[str]:
    """A new node may not take up the goal of a failed node that ran as often as a node may (a
    new id would otherwise start its count again)."""
    if max_attempts is None:
        return []
    norm = lambda g: " ".join(g.lower().split())  # noqa: E731
    spent = {norm(o.goal): o for o in old.walk() if o.is_leaf and o.status == NodeStatus.failed and o.attempts >= max_attempts}
    return [
        f"node {n.id!r} takes up the goal of failed node {spent[norm(n.goal)].id!r}, which ran {spent[norm(n.goal)].attempts} "
        f"times, the most a node may (budget.max_node_attempts); finish, or give it another goal"
        for n in new.walk()
        if n.is_leaf and old.get(n.id) is None and norm(n.goal) in spent
    ]
