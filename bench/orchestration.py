#!/usr/bin/env python
"""Orchestration overhead per step, with a zero-latency scripted model.

    python bench/orchestration.py [--steps 10,200] [--remote] [--repeat R] [--profile-steps 10] [--json]

Local mode only by default (about 1 minute on 2 cores, most of it the 200-step task); --remote
adds the remote rows (1.5 to 2.5 minutes in all: over budget for a default run). A benchmark, not a
test: it prints a small Markdown table and asserts nothing.

What runs: a real task through the real engine (``run_question``: intake, LocalDispatcher,
plan / execute / finish steps, a commit per step) on a fresh temporary repository holding one
committed file. The model is a ``ScriptedModel`` built from a Python dict, answering at once;
the executors call ``finish_step`` straight away and never run code. So what is timed is only
orchestration: reading the branch (snapshot), prompts, plan merge, worktrees, commits, dispatch.

The task of N steps: a chain of K = (N - 2) / 2 leaves, n2 depends on n1, n3 on n2, ...
Each leaf is one execute step followed by one plan step, plus the first plan and the finish:
1 + 2K + 1 = N jobs. A chain (not a fan-out) keeps one job in flight at a time, so every
sample is one step alone, not a step competing with its neighbours for the CPU.

How a step is timed: ``Engine.handle`` (the single entry point of every job) is wrapped for the
duration of a run and each call is timed with ``time.perf_counter``. Commit timestamps would
only give whole seconds.

Modes:
  local   GitRepo(repo): commits are compare-and-swap updates of refs in the repository.
  remote  the repository is a (shallow, like a CI job's) clone of a bare repository over
          file://, and the runtime uses remote="origin": every step fetches and pushes.

Then one 10-step local run (--profile-steps) is profiled (cProfile inside each job's thread,
since the dispatcher's workers are threads that a profiler enabled in the main thread would not
see), and every git process a job starts is counted and timed, to show where a step's time goes.
Git wall times can overlap (commit_files starts hash-object alongside the tip read), so their
sum may slightly exceed the step's time.

Targets: median <= 150 ms per step; median of the longest task <= 1.2 x that of the shortest
(per-step cost must not grow with the task's length).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout, installed or not

from gitops_agent.app.local import make_runtime, run_question  # noqa: E402
from gitops_agent.core.state import Budget  # noqa: E402
from gitops_agent.git.repo import GitRepo  # noqa: E402
from gitops_agent.models.scripted import ScriptedModel  # noqa: E402
from gitops_agent.steps.engine import Engine  # noqa: E402

MODEL_SPEC = "scripted:bench"
TARGET_MEDIAN_MS = 150.0
TARGET_RATIO = 1.2
MIN_SAMPLES = 50  # a short task is repeated (samples pooled) until it has this many steps
_GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


# ----------------------------------------------------------------------------- the task


def leaves_for(steps: int) -> int:
    """K leaves give 2K + 2 jobs (first plan, K x (execute + plan), finish)."""
    return max(1, (steps - 2) // 2)


def build_script(leaves: int) -> dict[str, list[dict[str, Any]]]:
    """A script for a chain of ``leaves`` nodes.

    The planner is called 1 + K times, strictly one after the other (the chain leaves nothing
    to run in parallel), so its queue is simply consumed in order: K x update_plan with the
    same nodes (the engine keeps done/running statuses and dispatches the next ready node),
    then finish. No `when` on the update_plan entries: the scripted model compiles every
    `when` it scans, and a queue of K conditional entries would make the model (not the
    engine) cost O(K) per call. The `when` on finish only documents when it is meant to fit.
    """
    nodes = [
        {
            "id": f"n{i}",
            "title": f"Part {i}",
            "goal": f"Work out part {i} of the answer.",
            **({"depends_on": [f"n{i - 1}"]} if i > 1 else {}),
        }
        for i in range(1, leaves + 1)
    ]
    planner: list[dict[str, Any]] = [
        {"tool": "update_plan", "input": {"note": "a chain: one node at a time", "nodes": nodes}} for _ in range(leaves)
    ]
    planner.append({"when": "not running", "tool": "finish", "input": {"answer": "All parts done.", "summary": "bench"}})
    # "executor:<node>" falls back to the shared "executor" queue: one finish_step per leaf
    executor = [{"tool": "finish_step", "input": {"status": "done", "result": "ok"}} for _ in range(leaves)]
    return {"planner": planner, "executor": executor}


class TimedScriptedModel(ScriptedModel):
    """The scripted model, plus the time spent inside query() (to tell the engine's time from
    the scripted model's own work: Jinja rendering, token estimates)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.query_s = 0.0

    def query(self, request):  # type: ignore[override]
        t0 = time.perf_counter()
        try:
            return super().query(request)
        finally:
            self.query_s += time.perf_counter() - t0


# ----------------------------------------------------------------------------- repositories


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, env=_GIT_ENV, capture_output=True)


def make_repo(where: Path, remote: bool) -> tuple[Path, str | None]:
    """A fresh repository with one commit of one file; for remote mode, a file:// clone of a
    bare copy of it (shallow, as the engine's own GitRepo.clone makes them for jobs)."""
    src = where / "src"
    src.mkdir(parents=True)
    (src / "README.md").write_text("# bench\n")
    _git(src, "init", "-q", "-b", "main")
    _git(src, "add", "README.md")
    _git(src, "commit", "-q", "-m", "one file")
    if not remote:
        return src, None
    bare = where / "origin.git"
    _git(where, "clone", "-q", "--bare", str(src), str(bare))
    clone = GitRepo.clone(f"file://{bare}", where / "clone", branch="main")
    return clone.repo, "origin"


# ----------------------------------------------------------------------------- timing


@dataclass
class Sample:
    step: str  # plan | execute | finish
    ms: float


# set while the current thread runs a job: git processes are counted only inside jobs (not
# those of intake or of reading the result back, which are not steps)
_in_job = threading.local()


@contextmanager
def timed_handle(samples: list[Sample], profiles: list[cProfile.Profile] | None = None) -> Iterator[None]:
    """Wrap Engine.handle for the duration of a run (restored afterwards): every job is timed,
    and with ``profiles`` also profiled in its own (worker) thread."""
    original = Engine.handle
    lock = threading.Lock()

    def handle(engine: Engine, job):  # type: ignore[no-untyped-def]
        prof = cProfile.Profile() if profiles is not None else None
        _in_job.active = True
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        try:
            return original(engine, job)
        finally:
            if prof:
                prof.disable()
            _in_job.active = False
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                samples.append(Sample(job.step, ms))
                if prof:
                    profiles.append(prof)  # type: ignore[union-attr]

    Engine.handle = handle  # type: ignore[method-assign]
    try:
        yield
    finally:
        Engine.handle = original  # type: ignore[method-assign]


@dataclass
class GitCall:
    cmd: str
    ms: float


def _git_subcommand(args: list[str]) -> str:
    """`git -C repo -c k=v --literal-pathspecs ls-tree ...` -> `ls-tree`; `worktree add`."""
    i = 1
    while i < len(args):
        a = args[i]
        if a in ("-C", "-c"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        if a == "worktree" and i + 1 < len(args):
            return f"{a} {args[i + 1]}"  # add and remove cost differently
        return a
    return "?"


@contextmanager
def count_git(calls: list[GitCall]) -> Iterator[None]:
    """Time every git process a job starts, from spawn to reaped (subprocess.Popen swapped for
    a subclass; subprocess.run and the engine's own Popen calls both go through it)."""
    original = subprocess.Popen
    lock = threading.Lock()

    class TimedPopen(original):  # type: ignore[misc, valid-type]
        def __init__(self, args, *a, **kw):  # type: ignore[no-untyped-def]
            self._bench_t0 = time.perf_counter()
            self._bench_done = False
            argv = [str(x) for x in args] if isinstance(args, (list, tuple)) else [str(args)]
            is_git = argv and Path(argv[0]).name == "git" and getattr(_in_job, "active", False)
            self._bench_cmd = _git_subcommand(argv) if is_git else None
            super().__init__(args, *a, **kw)

        def wait(self, timeout=None):  # type: ignore[no-untyped-def]
            rc = super().wait(timeout)
            if self._bench_cmd and not self._bench_done:
                self._bench_done = True
                with lock:
                    calls.append(GitCall(self._bench_cmd, (time.perf_counter() - self._bench_t0) * 1000))
            return rc

    subprocess.Popen = TimedPopen  # type: ignore[misc]
    try:
        yield
    finally:
        subprocess.Popen = original  # type: ignore[misc]


# ----------------------------------------------------------------------------- one run


@dataclass
class Run:
    mode: str
    steps: int
    jobs: int
    outcome: str
    wall_s: float
    median_ms: float
    p95_ms: float
    model_ms_per_step: float
    by_step: dict[str, float] = field(default_factory=dict)  # median ms per kind of step
    runs: int = 1  # tasks pooled into this row (wall_s is per task)
    failures: list[str] = field(default_factory=list)  # steps the engine ended with an error
    samples: list[float] = field(default_factory=list, repr=False)


def p95(xs: list[float]) -> float:
    if len(xs) < 2:
        return xs[0] if xs else float("nan")
    return statistics.quantiles(xs, n=20, method="inclusive")[-1]


def run_task(
    steps: int, remote: bool, *, profiles: list[cProfile.Profile] | None = None, git_calls: list[GitCall] | None = None
) -> Run:
    leaves = leaves_for(steps)
    model = TimedScriptedModel(build_script(leaves), name="scripted")
    work = Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    try:
        repo, remote_name = make_repo(work, remote)
        rt = make_runtime(repo, remote=remote_name, models={MODEL_SPEC: model})
        rt.get_sandbox()  # one-time backend probe; not a per-step cost (no code runs anyway)
        # the limits well above what the task uses: the chain must run to its end
        budget = Budget(max_steps=steps + 20, max_hops=steps + 20, max_usd=1000, max_tokens=10**10, max_wall_seconds=86400)
        samples: list[Sample] = []
        t0 = time.perf_counter()
        with timed_handle(samples, profiles), count_git(git_calls) if git_calls is not None else _nothing():
            result = run_question(
                rt,
                f"Benchmark task of {steps} steps",
                planner_model=MODEL_SPEC,
                executor_model=MODEL_SPEC,
                budget=budget,
                workers=1,
            )
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ms = [s.ms for s in samples]
    kinds: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        kinds[s.step].append(s.ms)
    outcome = result.outcome if not result.failures else f"{result.outcome} ({len(result.failures)} failures)"
    failures = [f"{job.step} {job.node or ''} (hop {job.hop}): {type(e).__name__}: {e}" for job, e in result.failures]
    return Run(
        mode="remote" if remote else "local",
        steps=steps,
        jobs=len(samples),
        outcome=outcome,
        wall_s=wall,
        median_ms=statistics.median(ms),
        p95_ms=p95(ms),
        model_ms_per_step=model.query_s * 1000 / max(1, len(ms)),
        by_step={k: statistics.median(v) for k, v in sorted(kinds.items())},
        failures=failures,
        samples=ms,
    )


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def pooled(runs: list[Run]) -> Run:
    """Repeats of one (mode, steps) as one row: statistics over all their samples."""
    if len(runs) == 1:
        return runs[0]
    ms = [x for r in runs for x in r.samples]
    first = runs[0]
    return Run(
        mode=first.mode,
        steps=first.steps,
        jobs=first.jobs,
        outcome=", ".join(sorted({r.outcome for r in runs})),
        wall_s=sum(r.wall_s for r in runs) / len(runs),
        median_ms=statistics.median(ms),
        p95_ms=p95(ms),
        model_ms_per_step=statistics.fmean(r.model_ms_per_step for r in runs),
        by_step={k: statistics.median([r.by_step[k] for r in runs if k in r.by_step]) for k in first.by_step},
        runs=len(runs),
        failures=[f for r in runs for f in r.failures],
        samples=ms,
    )


# ----------------------------------------------------------------------------- the profile


def profile_run(steps: int) -> dict[str, Any]:
    profiles: list[cProfile.Profile] = []
    calls: list[GitCall] = []
    run = run_task(steps, remote=False, profiles=profiles, git_calls=calls)
    stats = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        stats.add(p)
    agent_dir = str(ROOT / "agent") + os.sep
    rows = []
    for (filename, line, func), (_cc, ncalls, _tt, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if filename.startswith(agent_dir):
            rows.append((cum, ncalls, f"{os.path.relpath(filename, ROOT)}:{line}({func})"))
    rows.sort(reverse=True)
    git: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        git[c.cmd].append(c.ms)
    jobs = run.jobs
    total_ms = sum(run.samples)
    git_ms = sum(c.ms for c in calls)
    return {
        "steps": jobs,
        "total_ms_per_step": total_ms / jobs,
        "git_ms_per_step": git_ms / jobs,
        "git_processes_per_step": len(calls) / jobs,
        "model_ms_per_step": run.model_ms_per_step,
        "top_agent": [{"where": where, "calls": n, "cum_ms_per_step": cum * 1000 / jobs} for cum, n, where in rows[:12]],
        "git": [
            {"cmd": cmd, "per_step": len(v) / jobs, "ms_per_step": sum(v) / jobs, "ms_each": statistics.median(v)}
            for cmd, v in sorted(git.items(), key=lambda kv: -sum(kv[1]))
        ],
        "note": "profiled (cProfile slows the Python side); git times are wall times of the child processes",
    }


# ----------------------------------------------------------------------------- output


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def ratio_of(rows: list[Run]) -> float | None:
    if len(rows) < 2:
        return None
    short = min(rows, key=lambda r: r.steps)
    long = max(rows, key=lambda r: r.steps)
    return long.median_ms / short.median_ms


def machine() -> str:
    """CPUs and load: figures taken on a busy machine (tests running alongside) are inflated."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} CPUs, load average {load:.1f} (1 min) at the end"


def print_markdown(results: list[Run], ratios: dict[str, float | None], prof: dict[str, Any] | None) -> None:
    print("## Orchestration overhead per step (zero-latency scripted model)\n")
    print(f"Targets: median ≤ {TARGET_MEDIAN_MS:g} ms per step; median(longest task) ≤ {TARGET_RATIO:g} × median(shortest task).")
    print(f"Machine: {machine()}.\n")
    print(
        "| mode | steps × tasks | median ms/step | p95 ms/step | median plan / execute / finish ms "
        "| of which model ms/step | wall s/task | outcome | median target |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---|:---:|")
    for r in results:
        kinds = " / ".join(f"{r.by_step.get(k, float('nan')):.0f}" for k in ("plan", "execute", "finish"))
        print(
            f"| {r.mode} | {r.jobs} × {r.runs} | {r.median_ms:.1f} | {r.p95_ms:.1f} | {kinds} | {r.model_ms_per_step:.1f} | "
            f"{r.wall_s:.1f} | {r.outcome} | {mark(r.median_ms <= TARGET_MEDIAN_MS)} |"
        )
    print()
    for r in results:
        for f in r.failures:  # a failed step ends the task early: that row measures less than asked
            print(f"- failure in {r.mode} {r.jobs}-step task: {f[:300]}")
    for mode, ratio in ratios.items():
        if ratio is not None:
            rows = [r for r in results if r.mode == mode]
            lo, hi = min(r.jobs for r in rows), max(r.jobs for r in rows)
            print(
                f"- {mode}: median({hi} steps) / median({lo} steps) = **{ratio:.2f}** (target ≤ "
                f"{TARGET_RATIO:g}) {mark(ratio <= TARGET_RATIO)}"
            )
    if prof:
        print(f"\n## Where one step's time goes (one {prof['steps']}-step local run, profiled)\n")
        print(
            f"Per step: {prof['total_ms_per_step']:.1f} ms under the profiler, of which "
            f"{prof['git_ms_per_step']:.1f} ms waiting on {prof['git_processes_per_step']:.1f} git processes, "
            f"{prof['model_ms_per_step']:.1f} ms in the scripted model.\n"
        )
        print("| top cumulative in agent/ | calls | cum ms/step |")
        print("|---|---:|---:|")
        for e in prof["top_agent"]:
            print(f"| `{e['where']}` | {e['calls']} | {e['cum_ms_per_step']:.1f} |")
        print("\n| git subcommand | processes/step | ms/step | median ms each |")
        print("|---|---:|---:|---:|")
        for g in prof["git"]:
            print(f"| {g['cmd']} | {g['per_step']:.1f} | {g['ms_per_step']:.1f} | {g['ms_each']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="10,200", help="task lengths in steps, comma-separated (even, >= 4; default 10,200)")
    ap.add_argument(
        "--remote", action="store_true", help="also remote mode (every step fetches and pushes to a file:// bare repo)"
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help=f"runs per (mode, steps), samples pooled (default 1; short tasks run until {MIN_SAMPLES} steps)",
    )
    ap.add_argument("--profile-steps", type=int, default=10, help="length of the profiled local run (default 10; 0: none)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = ap.parse_args(argv)

    lengths = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    modes = [False, True] if args.remote else [False]

    # warm-up (discarded): imports, Jinja template compilation, the sandbox probe — one-time costs
    run_task(4, remote=False)

    # Short tasks first (a long task leaves thousands of files to write back and delete, which
    # slows whatever runs next), and each repeated until it has MIN_SAMPLES steps: the median
    # of 10 samples moves by tens of percent from one run to the next.
    results: list[Run] = []
    for n in lengths:
        repeats = max(args.repeat, math.ceil(MIN_SAMPLES / n))
        for remote in modes:
            results.append(pooled([run_task(n, remote) for _ in range(repeats)]))
    results.sort(key=lambda r: (r.mode, r.steps))
    ratios = {m: ratio_of([r for r in results if r.mode == m]) for m in dict.fromkeys(r.mode for r in results)}
    prof = profile_run(args.profile_steps) if args.profile_steps else None

    if args.json:
        out = {
            "targets": {"median_ms": TARGET_MEDIAN_MS, "ratio": TARGET_RATIO},
            "machine": machine(),
            "runs": [{k: v for k, v in asdict(r).items() if k != "samples"} for r in results],
            "ratios": ratios,
            "profile": prof,
        }
        print(json.dumps(out, indent=2))
    else:
        print_markdown(results, ratios, prof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
