"""Memory in the steps: retrieval for the planner, the experience at finish, the data sets for
the sandbox. Memory must never fail a task: these catch everything and report it."""

from __future__ import annotations

import json
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from gitops_agent.core.errors import AgentError
from gitops_agent.git.repo import GitRepo

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.core.snapshot import Snapshot
    from gitops_agent.runtime.context import Runtime

from gitops_agent.core.snapshot import record_path
from gitops_agent.memory.experience import DEFAULT_K, MEMORY_FILE, experience_from_snapshot
from gitops_agent.memory.store import MemoryStore, _enabled, default_method

# ----------------------------------------------------------------------------- hooks for the steps

_store_lock = threading.Lock()


def get_memory(rt: "Runtime") -> MemoryStore | None:
    """The runtime's memory store (made on first use); None when memory is switched off or the
    store is not a GitRepo."""
    if not _enabled() or getattr(rt, "memory_store", None) is False:
        return None
    with _store_lock:
        store = getattr(rt, "memory_store", None)
        if store is None:
            if not isinstance(rt.git, GitRepo):
                return None
            store = MemoryStore.open(rt.git)
            rt.memory_store = store  # type: ignore[attr-defined]
        return store


def _report_error(rt: "Runtime", what: str, e: BaseException) -> None:
    detail = str(e) if isinstance(e, AgentError) else f"{type(e).__name__}: {e}"
    rt.reporter.event("error", step="memory", node=None, error=f"{what}: {detail}", trace=traceback.format_exc())


def retrieve(rt: "Runtime", query: str, exclude: Iterable[str] = (), k: int = DEFAULT_K) -> dict[str, Any] | None:
    """The record of a retrieval for the planner: memory tip, method, query and the shown
    experiences (brief form with score); None without memory."""
    store = get_memory(rt)
    if store is None:
        return None
    tip = store.tip()
    if tip is None:
        return None
    method = default_method()
    idx = store.index(method, tip)
    hits = idx.search(query, k, exclude)
    return {
        "schema": 1,
        "memory_tip": tip,
        "method": method,
        "k": k,
        "query": query[:2000],
        "experiences": len(idx),
        "shown": [h.experience.brief(h.score) for h in hits],
    }


def planner_memory(rt: "Runtime", snap: "Snapshot") -> tuple[dict[str, Any] | None, bool]:
    """(memory record, new?) for a planner step. The first plan retrieves the top-k experiences
    (a new record, to be committed as memory.json in the step folder); later plan steps reuse
    the recorded ones, so the planner can cite them in its answer and the prompt prefix stays
    the same (cached). Never raises."""
    try:
        recorded = shown_memory(snap)
        if recorded is not None:
            return recorded, False
        if snap.plan is not None:
            return None, False
        query = "\n".join([snap.task.question, *snap.task.instructions])
        return retrieve(rt, query, exclude={snap.task_id}), True
    except Exception as e:  # noqa: BLE001 - memory must not fail the task
        _report_error(rt, "memory retrieval failed", e)
        return None, False


def shown_memory(snap: "Snapshot") -> dict[str, Any] | None:
    """The memory.json of the task's first planner step that has one."""
    for f in snap.files:  # sorted: the earliest step first
        if record_path(snap.root, f, MEMORY_FILE) and f.rsplit("/", 2)[-2].endswith("-_plan"):
            raw = snap.git.read_file(snap.tip, f)
            if raw:
                try:
                    data = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("shown"), list):
                    return data
    return None


def record_experience(
    rt: "Runtime", snap: "Snapshot", outcome: str, answer: str, reason: str | None, *, only_if_missing: bool = False
) -> str | None:
    """finish: add experiences/<task-id>.json to the memory branch. Returns the memory commit
    (None when off, already there, or failed: a failure is reported, never raised)."""
    from gitops_agent.core.errors import is_infrastructure_failure

    if is_infrastructure_failure(outcome, reason):
        rt.reporter.event("skip", step="memory", why="the model provider failed: no experience recorded")
        return None
    try:
        store = get_memory(rt)
        if store is None:
            return None
        if only_if_missing and snap.task_id in store.experience_files():
            return None
        shown = [e.get("task_id") for e in (shown_memory(snap) or {}).get("shown", []) if isinstance(e, dict)]
        exp = experience_from_snapshot(snap, outcome, answer, reason, [s for s in shown if isinstance(s, str)])
        sha = store.add_experience(exp)
        rt.reporter.event("memory", task=snap.task_id, action="experience saved", commit=sha, reused=exp.reused)
        return sha
    except Exception as e:  # noqa: BLE001
        _report_error(rt, "could not save the experience to memory", e)
        return None


def attach_data(rt: "Runtime") -> Path | None:
    """Make the memory's shared data sets visible to the model's code: materialize data/ into
    the local cache, mount it read-only (same path inside the sandbox) and set ``rt.data_dir``.
    Never raises."""
    try:
        store = get_memory(rt)
        if store is None:
            return None
        d = store.materialize_data()
        if d is None:
            return None
        rt.data_dir = str(d)
        return d
    except Exception as e:  # noqa: BLE001
        _report_error(rt, "could not fetch the shared data sets", e)
        return None
