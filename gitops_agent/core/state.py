"""Everything that lives on a task branch, as pydantic models validated on every read.

Layout (docs/design.md, "Files on a task branch"):

    .agent/tasks/<task-id>/task.json
    .agent/tasks/<task-id>/plan.json
    .agent/tasks/<task-id>/steps/<seq>-<node>/{turns.jsonl,result.md,step.json}
    .agent/tasks/<task-id>/report.md
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gitops_agent.core.errors import BadName, StateFileError

SCHEMA = 1
# Matched with fullmatch only: "$" would let a trailing newline through.
TASK_ID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,79}")
NODE_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
BRANCH_PREFIX = "agent/task/"
# Planner and finish step folders use these pseudo-node names; the leading underscore keeps
# them apart from real node ids, which must start with a letter.
PLANNER_NODE = "_plan"
FINISH_NODE = "_finish"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def task_dir(task_id: str) -> str:
    return f".agent/tasks/{task_id}"


def step_dirname(seq: int, node: str) -> str:
    return f"{seq:04d}-{node}"


def branch_for(task_id: str) -> str:
    check_task_id(task_id)
    return BRANCH_PREFIX + task_id


def check_task_id(task_id: str) -> str:
    if not TASK_ID_RE.fullmatch(task_id or ""):
        raise BadName(f"bad task id {task_id!r}: use 1-80 letters, digits, '-' or '_', starting with a letter or digit")
    return task_id


class NodeStatus(str, Enum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    skipped = "skipped"

    @property
    def mark(self) -> str:
        """Checklist mark, shared by the trace, the progress comment and the PR body."""
        return {"pending": "[ ]", "running": "[→]", "done": "[✓]", "failed": "[!]", "skipped": "[-]"}[self.value]

    @property
    def finished(self) -> bool:
        return self in (NodeStatus.done, NodeStatus.failed, NodeStatus.skipped)


class Usage(BaseModel):
    """Token usage of one or more model calls."""

    model_config = ConfigDict(extra="forbid")
    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cache_read_tokens: int = Field(0, ge=0)
    cache_write_tokens: int = Field(0, ge=0)

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def total_input(self) -> int:
        """All prompt tokens, cached or not."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total(self) -> int:
        return self.total_input + self.output_tokens

    def trailer(self) -> str:
        return (
            f"in={self.input_tokens} out={self.output_tokens} "
            f"cache_read={self.cache_read_tokens} cache_write={self.cache_write_tokens}"
        )

    @classmethod
    def from_trailer(cls, text: str) -> "Usage":
        keys = {
            "in": "input_tokens",
            "out": "output_tokens",
            "cache_read": "cache_read_tokens",
            "cache_write": "cache_write_tokens",
        }
        values: dict[str, int] = {}
        for part in text.split():
            k, _, v = part.partition("=")
            if k in keys and v.isdigit():
                values[keys[k]] = int(v)
        return cls(**values)


class Budget(BaseModel):
    """Limits for one task. A step that would pass one stops the task with what it has."""

    model_config = ConfigDict(extra="forbid")
    max_usd: float = Field(2.0, ge=0, description="Dollars for all model calls of the task.")
    max_tokens: int = Field(3_000_000, ge=0, description="Input + output tokens (cached included).")
    max_steps: int = Field(40, ge=1, description="Planner + executor steps.")
    max_turns: int = Field(12, ge=1, description="Model turns per executor node.")
    max_wall_seconds: int = Field(
        3600, ge=1, description="Per round: from the task's creation, or its latest follow-up, to finish."
    )
    max_hops: int = Field(200, ge=1, description="Dispatches in a row; ends any loop.")
    max_node_attempts: int = Field(
        2,
        ge=1,
        description="Runs of one node the planner may ask for (a changed goal after a "
        "failure runs it again); a person's `/agent retry` or plan edit may run it once more.",
    )


class TaskSource(BaseModel):
    """Where the question came from."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["local", "issue", "comment", "workflow_dispatch", "workflow_call", "repository_dispatch", "fork"] = "local"
    repo: str | None = None
    issue: int | None = None
    author: str | None = Field(None, description="Who wrote the question (an issue's author).")
    url: str | None = None
    started_by: str | None = Field(None, description="Who started the task, when not the author (a writer's label).")
    trusted: bool = Field(
        True, description="Whether the author of the question can write to the repository; the model is told when they cannot."
    )


class TaskModels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    planner: str
    executor: str


class FollowUp(BaseModel):
    """Where a follow-up instruction was asked (agent/github): its reply goes there."""

    model_config = ConfigDict(extra="forbid")
    where: Literal["issue", "pull", "review"] = "issue"
    number: int | None = Field(None, description="The issue or pull request it was asked on.")
    comment_id: int | None = Field(None, description="A review comment: the reply goes in its thread.")
    by: str | None = None
    command: str | None = Field(None, description="A command (`retry n2 n3`, `stop`, `continue`, `budget +1.5`), not free text.")


class TaskParent(BaseModel):
    """Where a forked task came from (gitops_agent/app/fork.py): the old task and the step it was forked at."""

    model_config = ConfigDict(extra="forbid")
    task_id: str
    step: int
    commit: str


class TaskFile(BaseModel):
    """task.json: written once, by intake."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: int = Field(SCHEMA, alias="schema")
    task_id: str
    question: str = Field(min_length=1)
    source: TaskSource = TaskSource()
    base_ref: str
    base_sha: str
    budget: Budget = Budget()
    models: TaskModels
    created_at: datetime
    instructions: list[str] = Field(default_factory=list, description="Follow-up instructions, oldest first.")
    follow_ups: list[FollowUp] = Field(default_factory=list, description="Where each instruction was asked (same order).")
    settings_at: str | None = Field(
        None,
        description="The default branch's commit whose settings govern the current round "
        "(set by each follow-up's intake; None: base_sha).",
    )
    # fork (gitops_agent/app/fork.py): the task and step this one was forked from
    parent: TaskParent | None = None
    brain: str | None = Field(None, description="The agent/brain commit the task was started with (every step uses it).")

    @field_validator("task_id")
    @classmethod
    def _task_id(cls, v: str) -> str:
        return check_task_id(v)


class Observation(BaseModel):
    """What running one action in the sandbox gave back."""

    model_config = ConfigDict(extra="forbid")
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    duration_ms: int = 0
    truncated: bool = False
    backend: str = ""


class Turn(BaseModel):
    """One line of turns.jsonl: one model turn and what came of it."""

    model_config = ConfigDict(extra="forbid")
    turn: int
    model: str
    text: str = ""
    tool: str | None = None
    input: dict[str, Any] | None = None
    observation: Observation | None = None
    error: str | None = None
    usage: Usage = Usage()
    cost_usd: float = Field(0.0, ge=0)
    latency_ms: int = 0


class StepRecord(BaseModel):
    """step.json: one step's outcome, usage and cost; written only by that step."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: int = Field(SCHEMA, alias="schema")
    task_id: str
    seq: int
    role: Literal["intake", "planner", "executor", "finish"]
    node: str
    agent: str = ""
    model: str = ""
    status: Literal["done", "failed"] = "done"
    turns: int = 0
    usage: Usage = Usage()
    cost_usd: float = Field(0.0, ge=0)
    duration_ms: int = Field(0, ge=0)
    started_at: datetime
    finished_at: datetime
    artifacts: list[str] = Field(default_factory=list)
    refused: list[str] = Field(default_factory=list, description="Changes refused by policy, with the reason.")
    steered: list[str] = Field(default_factory=list, description="A plan step: what people changed in the plan (edits, retry).")
    plan_sha256: str | None = Field(
        None,
        description="A plan step: sha256 of the plan.json it wrote (a later edit by a person is seen without reading history).",
    )
    flagged: list[str] = Field(
        default_factory=list,
        description="Changes committed but listed at the top of the pull "
        "request (files tools run, files that existed before), with the reason.",
    )
    cascade: list["CascadeAttempt"] = Field(
        default_factory=list,
        description="An executor whose agent has a model cascade: "
        "each model tried, in order (the last one's outcome is the step's).",
    )
    outcome: Literal["done", "failed", "budget", "error"] | None = Field(
        None, description="A finish step: how the task ended (also its Agent-Outcome trailer)."
    )
    error: str | None = None
    sandbox: str = Field("", description="An executor: the sandbox backend its code ran in (bubblewrap, docker, subprocess).")
    queries: list["QueryRecord"] = Field(
        default_factory=list, description="An executor: each database query its code ran through the broker, in order."
    )


class QueryRecord(BaseModel):
    """One query the model's code ran on a data source (gitops_agent/data/broker.py): enough for a
    reviewer to run it again."""

    model_config = ConfigDict(extra="forbid")
    source: str
    sql: str
    params: list[Any] | dict[str, Any] | None = None
    rows: int = Field(0, ge=0)
    bytes: int = Field(0, ge=0, description="The result's size as JSON.")
    ms: int = Field(0, ge=0)
    truncated: str | None = Field(None, description="Why the result was cut (a cap), when it was.")
    error: str | None = None


class CascadeAttempt(BaseModel):
    """One model's go at a node (agent `cascade` in the brain)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    status: Literal["done", "failed"]
    turns: int = 0
    cost_usd: float = Field(0.0, ge=0)
    error: str | None = None


StepRecord.model_rebuild()  # CascadeAttempt is defined after it

M = TypeVar("M", bound=BaseModel)


def parse_state(model: type[M], text: str | bytes, path: str) -> M:
    """Validate a state file; a bad file raises StateFileError naming the file and the field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise StateFileError(path, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise StateFileError(path, format_validation_error(e)) from None


def format_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        parts.append(f"field {loc}: {err['msg']}")
    more = len(e.errors()) - 5
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def dump_state(obj: BaseModel) -> bytes:
    return (obj.model_dump_json(by_alias=True, indent=2, exclude_none=False) + "\n").encode()
