"""Shared pieces of the benchmarks run by ``bench/run.py``: the result row, the machine
description, git helpers for the temporary repositories, and a stateless scripted model for
tasks whose number of planner calls depends on scheduling (parallel and scale runs)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout, installed or not

from gitops_agent.core.messages import ModelRequest, ModelResponse  # noqa: E402
from gitops_agent.models.scripted import ScriptedModel  # noqa: E402

CACHE_DIR = ROOT / "bench" / ".cache"

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


# ----------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One line of the results table. ``met``: True / False against the target, None when the
    row has no target (information only) or could not be measured."""

    measure: str
    ours: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None
    note: str = ""  # why a row is not measured, or a short qualifier

    def met_text(self) -> str:
        if self.met is True:
            return "yes"
        if self.met is False:
            return "**NO — target missed**"
        return "n/a" if self.target not in ("—", "") else "—"


@dataclass
class Section:
    """What one measurement hands back: its rows and Markdown details (printed after the table)."""

    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0


def table(rows: list[Row]) -> str:
    out = ["| measure | ours | baseline | ratio | target | met? |", "|---|---|---|---|---|---|"]
    for r in rows:
        measure = r.measure + (f" <br>*{r.note}*" if r.note else "")
        out.append(f"| {measure} | {r.ours} | {r.baseline} | {r.ratio} | {r.target} | {r.met_text()} |")
    return "\n".join(out)


def fmt_ms(ms: float) -> str:
    return f"{ms:,.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def fmt_s(s: float) -> str:
    return f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def p95(xs: list[float]) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=20, method="inclusive")[-1]


# ----------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def load_avg() -> str:
    try:
        a, b, c = os.getloadavg()
        return f"{a:.2f} / {b:.2f} / {c:.2f}"
    except OSError:
        return "?"


def machine_lines(load_at_start: str) -> list[str]:
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    load_at_end = load_avg()
    return [
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} CPUs (nproc), {mem_total()} memory, {cpu_model()}",
        f"- Load average (1 / 5 / 15 min): {load_at_start} at the start, {load_at_end} at the end"
        + (
            " — other work was running on this machine: absolute times are inflated"
            if _busy(load_at_start) or _busy(load_at_end)
            else ""
        ),
        f"- Python {platform.python_version()}, {git}, {platform.system()} {platform.release()}",
    ]


def _busy(load: str) -> bool:
    try:
        return float(load.split("/")[0]) > (os.cpu_count() or 1) * 0.75
    except ValueError:
        return False


# ----------------------------------------------------------------------------- git


def git(cwd: Path | str, *args: str, input: bytes | None = None) -> str:
    p = subprocess.run(["git", "-C", str(cwd), *args], input=input, capture_output=True, env=GIT_ENV)
    if p.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {p.stderr.decode(errors='replace')[:500]}")
    return p.stdout.decode(errors="replace")


def make_one_file_repo(where: Path, name: str = "src", files: dict[str, bytes] | None = None) -> Path:
    """A fresh repository on ``main`` with one commit (README.md plus ``files``)."""
    src = where / name
    src.mkdir(parents=True)
    (src / "README.md").write_text("# bench\n")
    for p, data in (files or {}).items():
        f = src / p
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
    git(src, "init", "-q", "-b", "main")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "one commit")
    return src


def make_bare_copy(src: Path, bare: Path) -> Path:
    git(bare.parent, "clone", "-q", "--bare", str(src), str(bare))
    git(bare, "config", "gc.auto", "0")
    return bare


# ----------------------------------------------------------------------------- models


class ReactiveModel(ScriptedModel):
    """A scripted model that answers from the request instead of a queue, so a task's answers
    do not depend on how many planner calls the scheduling happens to cause (one model serves
    any number of tasks at once, in any order):

    - planner: ``update_plan`` with the ``leaves`` independent nodes while fewer than all of
      them are done; ``finish`` once every node has a result;
    - executor: ``finish_step`` (after ``code_turns`` turns of ``run_python``, if any).

    ``latency_s`` sleeps on every call (outside the lock: parallel calls overlap), like
    ``ScriptedModel``.
    """

    def __init__(self, leaves: int, latency_s: float = 0.0, code_turns: int = 0, name: str = "scripted") -> None:
        super().__init__({}, name=name, latency_s=latency_s)
        self.leaves = leaves
        self.code_turns = code_turns
        self.n_calls = 0
        self.t0: float | None = None
        self.planner_log: list[tuple[float, int, int]] = []  # (seconds since the first call, results seen, nodes running)
        self.nodes = [
            {"id": f"n{i}", "title": f"Part {i}", "goal": f"Work out part {i} of the answer."} for i in range(1, leaves + 1)
        ]

    def query(self, request: ModelRequest) -> ModelResponse:
        role = request.meta.get("role")
        with self._lock:
            self.n_calls += 1
            call_id = next(self._ids)
            now = time.perf_counter()
            self.t0 = self.t0 if self.t0 is not None else now
            if role == "planner":
                self.planner_log.append(
                    (now - self.t0, len(request.meta.get("results") or {}), len(request.meta.get("running") or []))
                )
        if role == "planner":
            done = len(request.meta.get("results") or {})
            if done >= self.leaves and not request.meta.get("running"):
                entry: dict[str, Any] = {
                    "tool": "finish",
                    "input": {"answer": f"All {self.leaves} parts done.", "summary": "bench"},
                }
            else:
                entry = {"tool": "update_plan", "input": {"note": "independent parts", "nodes": self.nodes}}
        else:
            turn = int(request.meta.get("turn") or 1)
            if turn <= self.code_turns:
                entry = {"tool": "run_python", "input": {"code": f"print({turn} * 7)"}}
            else:
                entry = {"tool": "finish_step", "input": {"status": "done", "result": f"part {request.meta.get('node')} ok"}}
        if self.latency_s:
            time.sleep(self.latency_s)
        return self._respond(entry, dict(request.meta), call_id, request)


def print_section(s: "Section") -> int:
    """A benchmark run on its own: its table and details on stdout."""
    print(table(s.rows))
    print("\n".join(s.details))
    return 0
