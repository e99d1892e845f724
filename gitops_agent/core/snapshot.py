"""A task as it stands at one commit of its branch: task.json, plan.json, every step record.

Every job starts by reading one of these, so the budget, the seq counter and node statuses
hold across runners with nothing but the branch (shallow clones included: only files are read,
never history).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from gitops_agent.core.errors import BudgetExceeded, StateFileError, TaskNotFound
from gitops_agent.core.plan import Plan
from gitops_agent.core.seams import GitStore
from gitops_agent.core.state import NodeStatus, StepRecord, TaskFile, Usage, branch_for, parse_state, step_dirname, task_dir

_STEP_DIR_RE = re.compile(r"(\d{4,})-([A-Za-z_][A-Za-z0-9_-]*)")


@dataclass
class Snapshot:
    git: GitStore
    branch: str
    tip: str
    task: TaskFile
    plan: Plan | None
    steps: list[StepRecord]
    files: list[str]
    _results: dict[str, str] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def root(self) -> str:
        return task_dir(self.task_id)

    def step_dir(self, seq: int, node: str) -> str:
        return f"{self.root}/steps/{step_dirname(seq, node)}"

    def has_file(self, rel: str) -> bool:
        return f"{self.root}/{rel}" in self._fileset

    @property
    def _fileset(self) -> set[str]:
        s = getattr(self, "_fs", None)
        if s is None:
            s = set(self.files)
            self._fs = s
        return s

    @property
    def has_report(self) -> bool:
        return self.has_file("report.md")

    def step_record(self, seq: int, node: str) -> StepRecord | None:
        for s in self.steps:
            if s.seq == seq and s.node == node:
                return s
        return None

    # --- the ledger -------------------------------------------------------------------------
    @property
    def usage(self) -> Usage:
        total = Usage()
        for s in self.steps:
            total = total + s.usage
        return total

    @property
    def cost_usd(self) -> float:
        return round(sum(s.cost_usd for s in self.steps), 6)

    @property
    def model_steps(self) -> int:
        return sum(1 for s in self.steps if s.role in ("planner", "executor"))

    def next_seq(self) -> int:
        seqs = [1] + [s.seq for s in self.steps]
        if self.plan:
            seqs += [n.step for n in self.plan.walk() if n.step is not None]
        return max(seqs) + 1

    def budget_problem(
        self, hop: int = 0, extra_usd: float = 0.0, extra_tokens: int = 0, now: datetime | None = None
    ) -> BudgetExceeded | None:
        """The first budget this task has spent, if any."""
        b = self.task.budget
        now = now or datetime.now(timezone.utc)
        if self.cost_usd + extra_usd > b.max_usd:
            return BudgetExceeded("dollars", round(self.cost_usd + extra_usd, 4), b.max_usd)
        if self.usage.total + extra_tokens > b.max_tokens:
            return BudgetExceeded("tokens", self.usage.total + extra_tokens, b.max_tokens)
        if self.model_steps >= b.max_steps:
            return BudgetExceeded("steps", self.model_steps, b.max_steps)
        elapsed = (now - self.round_started).total_seconds()
        if elapsed > b.max_wall_seconds:
            return BudgetExceeded("wall seconds", int(elapsed), b.max_wall_seconds)
        if hop > b.max_hops:
            return BudgetExceeded("hops", hop, b.max_hops)
        return None

    def wall_left(self, now: datetime | None = None) -> float:
        """Seconds of the task's wall budget left (what bounds a model call or a sandbox run)."""
        now = now or datetime.now(timezone.utc)
        return self.task.budget.max_wall_seconds - (now - self.round_started).total_seconds()

    @property
    def round_started(self) -> datetime:
        """When this round began: the task's creation, or its latest follow-up (the wall budget
        is per round, so a follow-up a day later is not over budget at once)."""
        intakes = [s.started_at for s in self.steps if s.role == "intake" and s.started_at is not None]
        return max([self.task.created_at, *intakes])

    def ending(self) -> tuple[str, str, str | None]:
        """(outcome, answer, reason) as the last finish step left the task; "unfinished" when
        the newest step is not a finish (not finished yet, or reopened by a follow-up)."""
        last = max(self.steps, key=lambda s: s.seq) if self.steps else None
        if last is None or last.role != "finish":
            return "unfinished", "", "the task has no finish commit yet"
        fin = self.plan.finish if self.plan else None
        if fin is not None:
            return fin.outcome, fin.answer, last.error or fin.reason
        # stopped before the planner finished (budget, stalled, an error): the finish step
        # recorded how and why (a record written before `outcome` existed says it in its words)
        reason = last.error
        outcome = last.outcome or ("budget" if (reason or "").startswith("budget exceeded") else "error")
        return outcome, "", reason

    # --- results ------------------------------------------------------------------------------
    def result_of(self, seq: int, node: str) -> str:
        key = f"{seq}-{node}"
        if key not in self._results:
            raw = self.git.read_file(self.tip, f"{self.step_dir(seq, node)}/result.md")
            self._results[key] = raw.decode("utf-8", "replace") if raw is not None else ""
        return self._results[key]

    def latest_step_for(self, node: str) -> StepRecord | None:
        recs = [s for s in self.steps if s.node == node and s.role == "executor"]
        return max(recs, key=lambda s: s.seq) if recs else None

    def sync_plan(self) -> list[str]:
        """Set the status of running nodes whose step has reported; returns those node ids."""
        changed: list[str] = []
        if self.plan is None:
            return changed
        for n in self.plan.walk():
            if n.is_leaf and n.status == NodeStatus.running and n.step is not None:
                rec = self.step_record(n.step, n.id)
                if rec is not None:
                    n.status = NodeStatus.done if rec.status == "done" else NodeStatus.failed
                    n.result = f"steps/{step_dirname(n.step, n.id)}/result.md"
                    changed.append(n.id)
        self.plan.refresh_parents()
        return changed


class _BlobCache:
    """Parsed files by blob id, shared by every step of this process: a blob id names its
    content, so an entry is never stale, and a task's 200th step does not re-read and
    re-validate the 199 step records before it."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self._data: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get(self, kind: str, blob: str) -> object | None:
        with self._lock:
            v = self._data.get((kind, blob))
            if v is not None:
                self._data.move_to_end((kind, blob))
            return v

    def put(self, kind: str, blob: str, value: object) -> None:
        with self._lock:
            self._data[(kind, blob)] = value
            while len(self._data) > self._max:
                self._data.popitem(last=False)


_CACHE = _BlobCache()


def record_path(root: str, path: str, name: str) -> bool:
    """Whether ``path`` is the engine's ``name`` record of a step: ``<root>/steps/<seq>-<node>/<name>``."""
    prefix = f"{root}/steps/"
    if not path.startswith(prefix):
        return False
    parts = path[len(prefix) :].split("/")
    return len(parts) == 2 and parts[1] == name and _STEP_DIR_RE.fullmatch(parts[0]) is not None


def load_snapshot(git: GitStore, task_id: str, tip: str | None = None, fetch: bool = True) -> Snapshot:
    branch = branch_for(task_id)
    if tip is None:
        tip = git.tip(branch, fetch=fetch)
    if tip is None:
        raise TaskNotFound(f"no task branch {branch!r}")
    root = task_dir(task_id)
    ids = git.list_blobs(tip, root + "/")  # type: ignore[attr-defined]
    files = sorted(ids)
    task_path, plan_path = f"{root}/task.json", f"{root}/plan.json"
    # records are read only where the engine writes them: steps/<seq>-<node>/<file>, never deeper
    # (a step's own folder holds what its code produced, which is data)
    step_paths = [f for f in files if record_path(root, f, "step.json")]
    result_paths = [f for f in files if record_path(root, f, "result.md")]
    # one cat-file for every blob not seen before (task.json and plan.json change; step
    # records and results never do once written)
    missing = [
        ids[p] for p in [task_path, plan_path, *step_paths, *result_paths] if p in ids and _CACHE.get("raw", ids[p]) is None
    ]
    for blob, data in git.read_blobs(missing).items():  # type: ignore[attr-defined]
        _CACHE.put("raw", blob, data)

    def raw(path: str) -> bytes | None:
        return _CACHE.get("raw", ids[path]) if path in ids else None  # type: ignore[return-value]

    raw_task = raw(task_path)
    if raw_task is None:
        raise StateFileError(task_path, f"missing on {branch}")
    task = parse_state(TaskFile, raw_task, task_path)
    plan = parse_state(Plan, raw(plan_path), plan_path) if plan_path in ids else None  # type: ignore[arg-type]
    steps = []
    for path in step_paths:
        rec = _CACHE.get("step", ids[path])
        if rec is None:
            rec = parse_state(StepRecord, raw(path), path)  # type: ignore[arg-type]
            dirname = path.rsplit("/", 2)[-2]
            m = _STEP_DIR_RE.fullmatch(dirname)
            if not m or int(m.group(1)) != rec.seq or m.group(2) != rec.node:
                raise StateFileError(path, f"field seq/node: {rec.seq}/{rec.node} does not match its folder {dirname}")
            _CACHE.put("step", ids[path], rec)
        steps.append(rec)
    steps.sort(key=lambda s: s.seq)
    results = {}
    for path in result_paths:
        m = _STEP_DIR_RE.fullmatch(path.rsplit("/", 2)[-2])
        data = raw(path)
        if m and data is not None:
            results[f"{int(m.group(1))}-{m.group(2)}"] = data.decode("utf-8", "replace")
    return Snapshot(git=git, branch=branch, tip=tip, task=task, plan=plan, steps=steps, files=files, _results=results)
