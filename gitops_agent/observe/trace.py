"""The trace of one task, rebuilt from its branch alone: the plan tree with statuses, a timeline
of steps in seq order, totals, the cost breakdown, the outcome, and a ledger check.

Everything comes from two places, both on the task branch (no other store):

* the step files at the tip (``steps/<seq>-<node>/step.json``, ``turns.jsonl``, ``result.md``),
  read through :func:`gitops_agent.core.snapshot.load_snapshot`;
* the commits of the branch (``git log``), matched to the step records by their ``Agent-Task``
  and ``Agent-Step`` trailers. The commits give the sha and subject of each step, the intake
  step (which has no step.json), the finish commit's ``Agent-Outcome``, and a second copy of the
  ledger: the ``Agent-Cost-USD`` / ``Agent-Usage`` trailers, which must add up to the same totals
  as the step records (``Trace.ledger_consistent``).

    trace = build_trace(GitRepo("."), "20261126-101500-what-is-the-average")
    trace.totals.cost_usd, trace.outcome, [s.seq for s in trace.steps]
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gitops_agent.core.plan import Plan, PlanNode
from gitops_agent.core.state import Budget, CascadeAttempt, NodeStatus, QueryRecord, TaskModels, TaskSource, Turn, Usage

__all__ = ["CommitInfo", "CostRow", "Ledger", "Totals", "Trace", "TraceNode", "TracePlan", "TraceStep"]

# The model of a trace; gitops_agent/observe/trace_build.py builds one from a branch,
# gitops_agent/observe/terminal.py shows one in a terminal, gitops_agent/observe/html.py as a page.

TRACE_SCHEMA = 1
# The ledger in trailers is written with 6 decimals per step; allow that rounding per step.
_COST_EPS = 1e-6


class CommitInfo(BaseModel):
    """One agent commit of the branch, as its trailers tell it."""

    model_config = ConfigDict(extra="forbid")
    sha: str
    subject: str
    committed_at: datetime | None = None
    role: str | None = None
    node: str | None = None
    model: str | None = None
    usage: Usage | None = Field(None, description="From Agent-Usage (None when the commit has none).")
    cost_usd: float | None = Field(None, description="From Agent-Cost-USD (None when the commit has none).")
    duration_ms: int | None = None
    run_url: str | None = None
    outcome: str | None = None
    trailers: dict[str, str] = Field(default_factory=dict)

    @property
    def short(self) -> str:
        return self.sha[:8]


class TraceStep(BaseModel):
    """One row of the timeline: a step record (step.json) matched with its commit."""

    model_config = ConfigDict(extra="forbid")
    seq: int
    role: Literal["intake", "planner", "executor", "finish"]
    node: str | None = Field(None, description="The plan node (executors); None for intake, planner and finish.")
    node_title: str | None = None
    agent: str = ""
    model: str = ""
    status: Literal["done", "failed", "running"] = "done"
    turns: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int = 0
    usage: Usage = Usage()
    cache_share: float = Field(0.0, description="Cache-read tokens / all prompt tokens.")
    cost_usd: float = 0.0
    error: str | None = None
    artifacts: list[str] = Field(default_factory=list)
    refused: list[str] = Field(default_factory=list)
    queries: list[QueryRecord] = Field(default_factory=list, description="What the step's code ran on a data source.")
    commit: CommitInfo | None = None
    result: str | None = Field(None, description="result.md of an executor step.")
    transcript: list[Turn] = Field(default_factory=list, description="turns.jsonl: each model turn, its code and observation.")
    cascade: list[CascadeAttempt] = Field(
        default_factory=list, description="An executor's model cascade: each model tried, in order."
    )
    has_record: bool = Field(True, description="False for steps known only from a commit (intake) or from the plan (running).")

    @property
    def label(self) -> str:
        """What a newcomer reads in the node column."""
        if self.role == "executor":
            return self.node or "?"
        return {"intake": "(intake)", "planner": "(plan)", "finish": "(finish)"}[self.role]


class TraceNode(BaseModel):
    """A plan node with its status (a parent's derived from its children) and its steps."""

    model_config = ConfigDict(extra="forbid")
    id: str
    title: str
    goal: str = ""
    agent: str = "analyst"
    depends_on: list[str] = Field(default_factory=list)
    status: NodeStatus
    mark: str
    attempts: int = 0
    step: int | None = Field(None, description="The step number reserved for the node's latest run.")
    steps: list[int] = Field(default_factory=list, description="Seq of every executor step that ran this node.")
    usage: Usage = Usage()
    cost_usd: float = 0.0
    duration_ms: int = 0
    children: list["TraceNode"] = Field(default_factory=list)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


class TracePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    goal: str = ""
    note: str = ""
    nodes: list[TraceNode] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict, description="Leaves per status.")

    def walk(self):
        for n in self.nodes:
            yield from n.walk()


class CostRow(BaseModel):
    """One line of a cost breakdown (per model or per role)."""

    model_config = ConfigDict(extra="forbid")
    key: str
    steps: int = 0
    turns: int = 0
    usage: Usage = Usage()
    cache_share: float = 0.0
    cost_usd: float = 0.0
    duration_ms: int = 0


class Totals(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(0, description="Committed steps (intake, planner, executor, finish).")
    model_steps: int = Field(0, description="Planner and executor steps (those that call a model).")
    turns: int = 0
    usage: Usage = Usage()
    tokens: int = Field(0, description="All input (cached included) and output tokens.")
    cache_share: float = 0.0
    cost_usd: float = 0.0
    step_duration_ms: int = Field(0, description="Sum of the steps' durations (busy time).")
    wall_seconds: float = Field(0.0, description="From the task's creation to its last step.")


class Ledger(BaseModel):
    """The two copies of the cost ledger: step records and commit trailers."""

    model_config = ConfigDict(extra="forbid")
    consistent: bool
    steps_cost_usd: float
    commits_cost_usd: float
    steps_usage: Usage
    commits_usage: Usage
    problems: list[str] = Field(default_factory=list)


class Trace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_: int = Field(TRACE_SCHEMA, alias="schema")
    task_id: str
    branch: str
    tip: str
    question: str
    instructions: list[str] = Field(default_factory=list)
    source: TaskSource
    base_ref: str
    base_sha: str
    models: TaskModels
    budget: Budget
    created_at: datetime
    outcome: str = Field(description="done, failed, budget, error, or unfinished (no finish commit yet).")
    summary: str = ""
    answer: str = ""
    reason: str | None = None
    plan: TracePlan | None = None
    steps: list[TraceStep] = Field(default_factory=list)
    totals: Totals
    by_model: list[CostRow] = Field(default_factory=list)
    by_role: list[CostRow] = Field(default_factory=list)
    ledger_consistent: bool
    ledger: Ledger
    events: list[CommitInfo] = Field(
        default_factory=list, description="Commits of the task that are not steps (e.g. reconcile's re-dispatches)."
    )
    history_complete: bool = Field(
        True, description="False when the clone is shallow and the task's first commit was not reached."
    )

    def step(self, seq: int) -> TraceStep | None:
        return next((s for s in self.steps if s.seq == seq), None)

    def node(self, node_id: str) -> TraceNode | None:
        return next((n for n in self.plan.walk() if n.id == node_id), None) if self.plan else None

    def plan_model(self) -> Plan | None:
        """The plan as a :class:`gitops_agent.core.plan.Plan` (leaf statuses as traced), for the shared
        renderings (``render.checklist``, ``render.mermaid``)."""
        if self.plan is None:
            return None

        def conv(n: TraceNode) -> PlanNode:
            return PlanNode(
                id=n.id,
                title=n.title,
                goal=n.goal,
                agent=n.agent,
                depends_on=list(n.depends_on),
                status=n.status,
                attempts=n.attempts,
                step=n.step,
                children=[conv(c) for c in n.children],
            )

        return Plan(version=self.plan.version, goal=self.plan.goal, note=self.plan.note, nodes=[conv(n) for n in self.plan.nodes])

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)
