"""Replay a recorded task through the current engine: every model request is answered from the
recording (the turns.jsonl of its steps), the code runs again for real in the sandbox, in a
throwaway clone of the repository. Where the run parts from the recording is reported, first
divergence first: a request the recording cannot answer, answers it holds that were never asked
for, an observation that differs, another outcome or answer. What the run would have cost comes
from the recorded usage, priced as today.

    gitops-agent replay <task-id> [--repo PATH] [--keep DIR]
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from gitops_agent.core.errors import ConfigError, FatalModelError, ModelError
from gitops_agent.core.messages import ModelRequest, ModelResponse, TextBlock, ToolUseBlock
from gitops_agent.core.state import PLANNER_NODE, Turn
from gitops_agent.git import scratch


class Divergence(BaseModel):
    where: str
    what: str


class ReplayResult(BaseModel):
    task_id: str
    replay_id: str = ""
    reproduced: bool
    divergences: list[Divergence] = Field(default_factory=list)
    outcome: str = ""
    recorded_outcome: str = ""
    answer_same: bool = False
    cost_usd: float = 0.0
    recorded_cost_usd: float = 0.0
    requests: int = 0

    def first(self) -> Divergence | None:
        return self.divergences[0] if self.divergences else None


def recorded_turns(git: Any, snap: Any) -> dict[str, list[Turn]]:
    """The recorded answers by who asked: ``planner`` and ``executor:<node>``, in step order."""
    import json

    out: dict[str, list[Turn]] = defaultdict(list)
    for rec in sorted(snap.steps, key=lambda s: s.seq):
        if rec.role not in ("planner", "executor"):
            continue
        raw = git.read_file(snap.tip, f"{snap.step_dir(rec.seq, rec.node)}/turns.jsonl")
        key = "planner" if rec.node == PLANNER_NODE or rec.role == "planner" else f"executor:{rec.node}"
        for line in (raw or b"").decode().splitlines():
            if line.strip():
                out[key].append(Turn.model_validate(json.loads(line)))
    return out


class ReplayModel:
    """Answers each request with the next recorded turn of whoever asks; a request with none left
    is a divergence (and ends the run: a fatal model error)."""

    def __init__(self, turns: dict[str, list[Turn]], name: str = "replay") -> None:
        self.name = name
        self._left = {k: list(v) for k, v in turns.items()}
        self._asked: dict[str, int] = defaultdict(int)
        self.divergences: list[Divergence] = []
        self.requests = 0
        self._lock = threading.Lock()

    def named(self, name: str) -> "ReplayModel":
        """The same recording under another model name (the engine prices a call by its model's
        name: each spec gets the name its recorded calls had)."""
        return _Alias(self, name)  # type: ignore[return-value]

    def query(self, request: ModelRequest) -> ModelResponse:
        role = request.meta.get("role")
        key = "planner" if role == "planner" else f"executor:{request.meta.get('node')}" if role == "executor" else str(role)
        with self._lock:
            self.requests += 1
            self._asked[key] += 1
            queue = self._left.get(key) or []
            if not queue:
                msg = f"request {self._asked[key]} of {key} has no recorded answer (the recording has {self._asked[key] - 1})"
                self.divergences.append(Divergence(where=key, what=msg))
                raise FatalModelError(f"replay: {msg}")
            turn = queue.pop(0)
        if not turn.text and turn.tool is None and turn.error:  # the recorded call failed: fail it the same way
            raise ModelError(turn.error.removeprefix("model error: "))
        content: list[Any] = [TextBlock(text=turn.text)] if turn.text else []
        if turn.tool is not None:
            content.append(ToolUseBlock(id=f"toolu_replay_{self.requests}", name=turn.tool, input=dict(turn.input or {})))
        if not content:
            content.append(TextBlock(text=""))
        return ModelResponse(
            content=content, stop_reason="tool_use" if turn.tool else "end_turn", usage=turn.usage, model=turn.model, latency_ms=0
        )

    def unused(self) -> dict[str, int]:
        return {k: len(v) for k, v in self._left.items() if v}


class _Alias:
    """A ReplayModel seen under another name; the queues are the one model's."""

    def __init__(self, base: ReplayModel, name: str) -> None:
        self.base, self.name = base, name

    def query(self, request: ModelRequest) -> ModelResponse:
        return self.base.query(request)


def _usual(turns: list[Turn]) -> str | None:
    names = [t.model for t in turns if t.model]
    return max(set(names), key=names.count) if names else None


# where this run's code ran, which no two runs share: the checkout and the sandbox's own folders
_RUN_PATHS = re.compile(r"[^\s'\"]*/(?:\.git/gitops-agent/checkouts|agent-sandbox-[\w-]+)(?:/[^\s/'\"]+)?")


def _norm(text: str) -> str:
    return _RUN_PATHS.sub("<run>", (text or "").strip())


def _obs_key(o: Any) -> tuple:
    """What must match: exit code, timeout, stdout, and the error's last line, with the run's own
    folders (a checkout, the sandbox's temporary directory) named alike."""
    if not o:
        return (None,)
    err = [line for line in (o.stderr or "").strip().splitlines() if line.strip()]
    return (o.exit_code, bool(o.timed_out), _norm(o.stdout), _norm(err[-1]) if err else "")


def replay_config(user: Any = None) -> Any:
    """The settings a replay runs under: the replaying user's (``user``, else the defaults),
    never the recording's. A recording is someone else's code: it always runs isolated
    (bubblewrap or docker, whichever the user's settings pick; never the plain subprocess) and
    without network, whatever either side says."""
    from gitops_agent.settings.config import AgentConfig

    cfg = (user or AgentConfig()).model_copy(deep=True)
    sb = cfg.sandbox
    backend = sb.backend if sb.backend in ("bubblewrap", "docker") else "auto"
    cfg.sandbox = sb.model_copy(update={"require_isolation": True, "network": False, "backend": backend})
    return cfg


def _observation_divergences(recorded: dict[str, list[Turn]], replayed: dict[str, list[Turn]]) -> list[Divergence]:
    """Per executor, the first turn whose observation (exit code, timeout, stdout, the error's last
    line) differs from the recording's."""
    divs: list[Divergence] = []
    for key, turns in recorded.items():
        if not key.startswith("executor:"):
            continue
        for i, (a, b) in enumerate(zip(turns, replayed.get(key, []))):
            if _obs_key(a.observation) != _obs_key(b.observation):
                was, now = _obs_key(a.observation), _obs_key(b.observation)
                part = next(
                    (n for n, (x, y) in zip(("exit code", "timeout", "stdout", "the error"), zip(was, now)) if x != y), "it"
                )
                shown = {"stdout": 2, "the error": 3}.get(part)
                divs.append(
                    Divergence(
                        where=f"{key} turn {i + 1}",
                        what=(
                            f"the observation differs ({part}): recorded exit {was[0]}"
                            + (f" {str(was[shown])[:120]!r}" if shown and len(was) > shown else "")
                            + f", now exit {now[0]}"
                            + (f" {str(now[shown])[:120]!r}" if shown and len(now) > shown else "")
                        ),
                    )
                )
                break
    return divs


def replay(repo: Path, task_id: str, *, keep: Path | None = None, config: Any = None) -> ReplayResult:
    """Replay ``task_id`` of ``repo`` (nothing in ``repo`` changes) under ``config`` (the
    replaying user's settings; see ``replay_config``)."""
    from gitops_agent.app.local import make_runtime, run_question
    from gitops_agent.core.snapshot import load_snapshot
    from gitops_agent.git.repo import GitRepo
    from gitops_agent.observe.progress import Reporter

    if keep is not None and keep.exists():
        raise ConfigError(f"--keep {keep}: it exists already; give a new directory")
    src = GitRepo(repo)
    snap = load_snapshot(src, task_id, fetch=False)
    task = snap.task
    recorded = recorded_turns(src, snap)
    rec_outcome, rec_answer, _ = snap.ending()
    work = scratch.make(prefix="gitops-agent-replay-")  # removed after, on a hard quit, or by the next replay
    try:
        clone = work / "repo"
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(clone)], check=True, capture_output=True)
        for ref in ("agent/brain", "agent/memory"):
            subprocess.run(["git", "-C", str(clone), "branch", "-q", ref, f"origin/{ref}"], capture_output=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", "--detach", task.base_sha], check=True, capture_output=True)
        # the recording's .github/gitops-agent.yml is its author's: its sandbox settings never apply
        model = ReplayModel(recorded)
        rt = make_runtime(clone, config=replay_config(config), reporter=Reporter())
        if task.brain:  # the brain the task ran with
            from gitops_agent.brain.branch import load_repo_brain

            rt.brain = load_repo_brain(rt.git, fetch=False, at=task.brain)
        # each spec answers under the model name its recorded calls had (what they are priced by)
        exec_turns = [t for k, v in recorded.items() if k.startswith("executor:") for t in v]
        names = {task.models.executor: _usual(exec_turns), task.models.planner: _usual(recorded.get("planner", []))}
        # every spec, whatever the recording names (an endpoint in its task.json included), is
        # answered from the recording: no model is ever built, no key ever sent
        rt.model_factory = lambda spec: model.named(names.get(spec) or spec.split(":", 1)[-1].split("@", 1)[0] or "replay")
        rt.memory_store = False  # the replay reads no memory and writes no experience
        rid = task_id  # the same id in the clone (which has no such local branch): the same step paths
        res = run_question(
            rt,
            task.question,
            planner_model=task.models.planner,
            executor_model=task.models.executor,
            budget=task.budget.model_copy(),
            task_id=rid,
        )
        new = load_snapshot(rt.git, rid, fetch=False)
        out = ReplayResult(
            task_id=task_id,
            replay_id=rid,
            reproduced=False,
            outcome=res.outcome,
            recorded_outcome=rec_outcome,
            answer_same=(res.answer or "").strip() == (rec_answer or "").strip(),
            cost_usd=round(new.cost_usd, 6),
            recorded_cost_usd=round(snap.cost_usd, 6),
            requests=model.requests,
        )
        # in the order they arise: what the code printed, then what was asked
        divs = _observation_divergences(recorded, recorded_turns(rt.git, new))
        divs += model.divergences
        for key, n in model.unused().items():
            divs.append(Divergence(where=key, what=f"{n} recorded answer(s) were never asked for"))
        if res.outcome != rec_outcome:
            divs.append(Divergence(where="outcome", what=f"{res.outcome} (recorded: {rec_outcome})"))
        elif not out.answer_same:
            divs.append(Divergence(where="answer", what=f"{(res.answer or '')[:200]!r} (recorded: {(rec_answer or '')[:200]!r})"))
        out.divergences = divs
        out.reproduced = not divs
        if keep is not None:
            shutil.copytree(clone, keep, symlinks=True)  # (checked free before the run)
        return out
    finally:
        scratch.remove(work)
