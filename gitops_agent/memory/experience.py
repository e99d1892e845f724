"""One finished task as memory keeps it: ``experiences/<task-id>.json`` on ``agent/memory``."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.state import NodeStatus, check_task_id, format_validation_error, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.core.snapshot import Snapshot


MEMORY_BRANCH = "agent/memory"
EXPERIENCES_DIR = "experiences"
DATA_DIR = "data"
EXPERIENCE_SCHEMA = 1
ANSWER_CHARS = 1500
DEFAULT_K = 3
MEMORY_FILE = "memory.json"  # in the planner's step folder: the experiences it was shown
DOC_TEXT_MAX = 20_000  # characters of an experience that retrieval indexes
# Off switch: GITOPS_AGENT_MEMORY=0 (or off/false/no). The retrieval method: GITOPS_AGENT_RETRIEVAL.
ENV_SWITCH = "GITOPS_AGENT_MEMORY"
ENV_METHOD = "GITOPS_AGENT_RETRIEVAL"
MAX_DATA_FILE_BYTES = 100 * 1024 * 1024  # GitHub refuses larger files
_DATA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")


# ----------------------------------------------------------------------------- the record


class OutlineItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    title: str
    status: str
    agent: str = ""
    depth: int = 0


_SOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class Experience(BaseModel):
    """experiences/<task-id>.json on the memory branch: what one finished task asked, planned,
    found, learned and spent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: int = Field(EXPERIENCE_SCHEMA, alias="schema")
    task_id: str
    branch: str
    question: str
    instructions: list[str] = Field(default_factory=list)
    outline: list[OutlineItem] = Field(default_factory=list, description="The final plan: node ids, titles, statuses.")
    outcome: Literal["done", "failed", "budget", "error"]
    summary: str = ""
    answer: str = Field("", description=f"The first {ANSWER_CHARS} characters of the answer.")
    lessons: list[str] = Field(default_factory=list, description="What worked, what failed and why (from the planner).")
    failures: list[str] = Field(default_factory=list, description="Failed nodes and stop reasons, derived by finish.")
    cost_usd: float = 0.0
    tokens: int = 0
    date: datetime
    reused: list[str] = Field(default_factory=list, description="Task ids of past experiences this task cited.")
    parent: str | None = Field(None, description="For a fork: <task-id>@<step> it was forked from.")
    asked_by: str | None = Field(None, description="Who wrote the question (GitHub login), if known.")
    trusted: bool = Field(True, description="Whether they could write to the repository; later planners are told.")
    sources: list[str] = Field(default_factory=list, description="The data sources the task's code queried (data.sources).")

    @field_validator("sources")
    @classmethod
    def _source_names(cls, v: list[str]) -> list[str]:
        # the memory branch is data: only what could be a source's name reaches a later prompt
        return [x for x in v if _SOURCE_NAME.fullmatch(x)][:20]

    @property
    def path(self) -> str:
        return experience_path(self.task_id)

    def doc_text(self) -> str:
        """What retrieval indexes: question, plan outline, summary, lessons."""
        parts = [self.question, *self.instructions, " ".join(o.title for o in self.outline), self.summary, *self.lessons]
        parts.append(" ".join(self.sources))
        # capped: an experience is written by an earlier task (its model, maybe an injected one);
        # a planted megabyte of unique words would otherwise cost every later lookup seconds
        return "\n".join(p for p in parts if p)[:DOC_TEXT_MAX]

    def outline_text(self) -> str:
        marks = {s.value: s.mark for s in NodeStatus}
        return "; ".join(f"{marks.get(o.status, '[?]')} {o.id} {o.title}" for o in self.outline)

    def brief(self, score: float | None = None) -> dict[str, Any]:
        """The compact form shown to the planner and recorded in memory.json."""
        d: dict[str, Any] = {
            "task_id": self.task_id,
            "outcome": self.outcome,
            "question": self.question[:500],
            "outline": self.outline_text()[:600],
            "summary": self.summary[:300],
            "lessons": [x[:300] for x in self.lessons[:8]],
            "failures": [x[:300] for x in self.failures[:4]],
            "date": self.date.date().isoformat(),
            "cost_usd": self.cost_usd,
            "asked_by": self.asked_by,
            "trusted": self.trusted,
        }
        if self.sources:
            d["sources"] = self.sources[:10]
        if score is not None:
            d["score"] = round(float(score), 4)
        return d


def experience_path(task_id: str) -> str:
    return f"{EXPERIENCES_DIR}/{check_task_id(task_id)}.json"


def dump_experience(exp: Experience) -> bytes:
    return (exp.model_dump_json(by_alias=True, indent=2) + "\n").encode()


def parse_experience(raw: bytes | str, where: str) -> Experience:
    try:
        return Experience.model_validate_json(raw)
    except ValidationError as e:
        raise ConfigError(f"{where}: {format_validation_error(e)}") from None


_TASK_REF = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{2,79}")


def cited_ids(texts: Iterable[str], candidates: Iterable[str]) -> list[str]:
    """The candidate task ids that appear (as whole ids) in any of ``texts``."""
    blob = "\n".join(t for t in texts if t)
    out = []
    for c in candidates:
        if c and re.search(rf"(?<![0-9A-Za-z_-]){re.escape(c)}(?![0-9A-Za-z_-])", blob):
            out.append(c)
    return out


def experience_from_snapshot(
    snap: "Snapshot", outcome: str, answer: str, reason: str | None, shown: list[str] | None = None
) -> Experience:
    """The experience of a finished task, from its branch (the snapshot before the finish commit)."""
    plan = snap.plan
    outline: list[OutlineItem] = []
    failures: list[str] = []
    if plan is not None:

        def visit(n, depth: int) -> None:
            outline.append(OutlineItem(id=n.id, title=n.title, status=plan.status_of(n).value, agent=n.agent, depth=depth))
            for c in n.children:
                visit(c, depth + 1)

        for n in plan.nodes:
            visit(n, 0)
        for n in plan.walk():
            if n.is_leaf and n.status == NodeStatus.failed:
                rec = snap.step_record(n.step, n.id) if n.step is not None else None
                why = (rec.error if rec and rec.error else "") or _first_line(snap.result_of(n.step, n.id) if n.step else "")
                failures.append(f"{n.id} ({n.title}) failed: {why}"[:300])
    if outcome != "done" and reason:
        failures.append(f"task stopped ({outcome}): {reason}"[:300])
    fin = plan.finish if plan else None
    summary = (fin.summary if fin and fin.summary else "") or _first_line(answer)
    lessons = list(getattr(fin, "lessons", None) or []) if fin else []
    shown = list(shown or [])
    texts = [answer, summary, plan.note if plan else "", *lessons]
    parent = getattr(snap.task, "parent", None)
    return Experience(
        task_id=snap.task_id,
        branch=snap.branch,
        question=snap.task.question,
        instructions=list(snap.task.instructions),
        outline=outline,
        outcome=outcome if outcome in ("done", "failed", "budget", "error") else "error",  # type: ignore[arg-type]
        summary=summary[:300],
        answer=(answer or "")[:ANSWER_CHARS],
        lessons=lessons,
        failures=failures,
        cost_usd=snap.cost_usd,
        tokens=snap.usage.total,
        date=utcnow(),
        reused=cited_ids(texts, shown),
        parent=f"{parent.task_id}@{parent.step}" if parent is not None else None,
        asked_by=snap.task.source.author,
        trusted=snap.task.source.trusted,
        sources=sorted({q.source for rec in snap.steps for q in rec.queries}),
    )


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:300]
    return ""
