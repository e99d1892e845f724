"""plan.json: the plan tree, written only by the planner and validated on every read
(docs/design.md, "Files on a task branch")."""

from __future__ import annotations

from datetime import datetime
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gitops_agent.core.state import NODE_ID_RE, SCHEMA, NodeStatus


class PlanNode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    title: str = Field(min_length=1)
    goal: str = ""
    agent: str = "analyst"
    depends_on: list[str] = Field(default_factory=list)
    status: NodeStatus = NodeStatus.pending
    attempts: int = 0
    result: str | None = None
    step: int | None = Field(None, description="Step number reserved when the node was dispatched.")
    dispatched_at: datetime | None = Field(None, description="When the node was last dispatched (reconcile's lease).")
    children: list["PlanNode"] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not NODE_ID_RE.fullmatch(v):
            raise ValueError(f"bad node id {v!r}: 1-40 letters, digits, '-' or '_', starting with a letter")
        return v

    def walk(self) -> Iterator["PlanNode"]:
        yield self
        for c in self.children:
            yield from c.walk()

    @property
    def is_leaf(self) -> bool:
        return not self.children


class PlanFinish(BaseModel):
    """The end of a task as the planner (or a budget stop) decided it."""

    model_config = ConfigDict(extra="forbid")
    answer: str = ""
    summary: str = ""
    outcome: Literal["done", "failed", "budget", "error"] = "done"
    reason: str | None = None
    # memory: the planner's lessons for future tasks, from `finish`
    lessons: list[str] = Field(default_factory=list, description="What worked, what failed and why (short lines).")


class Plan(BaseModel):
    """plan.json: the plan tree; written only by the planner."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: int = Field(SCHEMA, alias="schema")
    version: int = 0
    goal: str = ""
    note: str = ""
    nodes: list[PlanNode] = Field(default_factory=list)
    finish: PlanFinish | None = None
    instructions_seen: int = Field(0, description="How many of task.json's follow-up instructions this plan has taken in.")

    @model_validator(mode="after")
    def _structure(self) -> "Plan":
        problems = plan_problems(self.nodes)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def walk(self) -> Iterator[PlanNode]:
        for n in self.nodes:
            yield from n.walk()

    def get(self, node_id: str) -> PlanNode | None:
        for n in self.walk():
            if n.id == node_id:
                return n
        return None

    def status_of(self, node: PlanNode) -> NodeStatus:
        """A leaf's own status; a parent's derived from its children."""
        if node.is_leaf:
            return node.status
        kids = [self.status_of(c) for c in node.children]
        if any(k == NodeStatus.running for k in kids):
            return NodeStatus.running
        if any(k == NodeStatus.pending for k in kids):
            return NodeStatus.pending
        if any(k == NodeStatus.failed for k in kids):
            return NodeStatus.failed
        if all(k == NodeStatus.skipped for k in kids):
            return NodeStatus.skipped
        return NodeStatus.done

    def refresh_parents(self) -> None:
        for n in self.walk():
            if not n.is_leaf:
                n.status = self.status_of(n)

    def ready(self) -> list[PlanNode]:
        """Pending leaves whose dependencies (and whose ancestors' dependencies) are done."""
        out: list[PlanNode] = []

        def visit(node: PlanNode, inherited: list[str]) -> None:
            deps = inherited + node.depends_on
            if node.is_leaf:
                if node.status == NodeStatus.pending and all(
                    (d := self.get(dep)) is not None and self.status_of(d) == NodeStatus.done for dep in deps
                ):
                    out.append(node)
            for c in node.children:
                visit(c, deps)

        for n in self.nodes:
            visit(n, [])
        return out

    def running(self) -> list[PlanNode]:
        return [n for n in self.walk() if n.is_leaf and n.status == NodeStatus.running]

    def blocked(self) -> list[PlanNode]:
        """Pending leaves that can never run because something they depend on failed or was skipped."""
        out = []
        for n in self.walk():
            if n.is_leaf and n.status == NodeStatus.pending and n not in self.ready():
                deps = self._all_deps(n)
                if any(
                    (d := self.get(x)) is not None and self.status_of(d) in (NodeStatus.failed, NodeStatus.skipped) for x in deps
                ):
                    out.append(n)
        return out

    def _all_deps(self, node: PlanNode) -> list[str]:
        chain: list[str] = []

        def find(nodes: list[PlanNode], path: list[PlanNode]) -> list[PlanNode] | None:
            for n in nodes:
                if n.id == node.id:
                    return path + [n]
                r = find(n.children, path + [n])
                if r:
                    return r
            return None

        for anc in find(self.nodes, []) or []:
            chain.extend(anc.depends_on)
        return chain

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in NodeStatus}
        for n in self.walk():
            if n.is_leaf:
                out[n.status.value] += 1
        return out


def plan_problems(nodes: list[PlanNode]) -> list[str]:
    """Structural errors of a plan tree, each precise enough for a model to fix."""
    problems: list[str] = []
    seen: dict[str, PlanNode] = {}
    parent_of: dict[str, str | None] = {}

    def collect(ns: list[PlanNode], parent: str | None) -> None:
        for n in ns:
            if n.id in seen:
                problems.append(f"node id {n.id!r} is used twice")
            seen[n.id] = n
            parent_of[n.id] = parent
            collect(n.children, n.id)

    collect(nodes, None)
    for n in seen.values():
        for d in n.depends_on:
            if d not in seen:
                problems.append(f"node {n.id!r} depends on unknown node {d!r}")
            elif d == n.id:
                problems.append(f"node {n.id!r} depends on itself")
    if problems:
        return problems

    # A parent finishes after its children, so it implicitly depends on them; a node depending
    # on one of its own ancestors or descendants, or any loop of depends_on, is a cycle.
    edges: dict[str, set[str]] = {i: set(n.depends_on) | {c.id for c in n.children} for i, n in seen.items()}
    for i, p in parent_of.items():
        # a child inherits its ancestors' dependencies
        while p is not None:
            edges[i] |= set(seen[p].depends_on)
            p = parent_of[p]
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if state.get(v) is None:
                found = dfs(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(seen):
        if state.get(u) is None:
            cyc = dfs(u)
            if cyc:
                problems.append("dependency cycle: " + " -> ".join(cyc))
                break
    return problems
