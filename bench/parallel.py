#!/usr/bin/env python
"""P4 parallel speed-up: a plan of 8 independent leaves, every model call taking 1 s, run with
1 worker and with 4.

    python bench/parallel.py [--leaves 8] [--latency 1.0] [--workers 4]

The real engine (``run_question``, local mode: the speed-up is the dispatcher's, not the
remote's) with a scripted model that sleeps ``latency`` seconds on every call, planner and
executors alike. "1 worker" is what ``gitops-agent run --workers 1`` does: ``config.workers``
= 1, so the planner dispatches one ready node at a time and the pool has one thread; "4
workers" is the default. Wall time from the question to the report. Target: 4 workers ≤ 0.35 ×
1 worker.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ReactiveModel, Row, Section, fmt_s, make_one_file_repo  # noqa: E402
from gitops_agent.app.local import make_runtime, run_question  # noqa: E402
from gitops_agent.core.state import Budget  # noqa: E402
from gitops_agent.settings.config import AgentConfig  # noqa: E402

SPEC = "scripted:bench"
TARGET = 0.35


def run_once(leaves: int, latency: float, workers: int) -> dict:
    model = ReactiveModel(leaves, latency_s=latency)
    work = Path(tempfile.mkdtemp(prefix="bench-parallel-"))
    try:
        repo = make_one_file_repo(work)
        cfg = AgentConfig().model_copy(update={"workers": workers})
        rt = make_runtime(repo, config=cfg, models={SPEC: model})
        rt.get_sandbox()  # the backend probe is not part of the task
        budget = Budget(
            max_steps=10 * leaves + 10, max_hops=10 * leaves + 10, max_usd=1000, max_tokens=10**10, max_wall_seconds=86400
        )
        t0 = time.perf_counter()
        res = run_question(
            rt, f"Benchmark: {leaves} independent parts", planner_model=SPEC, executor_model=SPEC, budget=budget, workers=workers
        )
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "workers": workers,
        "wall": wall,
        "calls": model.n_calls,
        "outcome": res.outcome,
        "failures": len(res.failures),
        "planner": model.planner_log,
    }


def measure(quick: bool = False, leaves: int = 8, latency: float = 1.0, workers: int = 4) -> Section:
    t0 = time.perf_counter()
    serial = run_once(leaves, latency, 1)
    par = run_once(leaves, latency, workers)
    ratio = par["wall"] / serial["wall"]
    ok = serial["outcome"] == "done" and par["outcome"] == "done"
    # the floor with this engine: plan, then ceil(leaves / workers) waves of (execute, plan)
    waves = -(-leaves // workers)
    ideal_par = (1 + 2 * waves) * latency
    row = Row(
        f"P4 parallel speed-up: {leaves} independent leaves, {latency:g} s per model call, {workers} workers vs 1",
        f"{fmt_s(par['wall'])} ({par['calls']} model calls)",
        f"{fmt_s(serial['wall'])} ({serial['calls']} model calls)",
        f"{ratio:.2f}",
        f"≤ {TARGET:g}",
        ok and ratio <= TARGET,
        "" if ok else f"a run did not finish: 1 worker {serial['outcome']}, {workers} workers {par['outcome']}",
    )
    details = [
        f"- P4: 1 worker {serial['wall']:.2f} s for {serial['calls']} model calls of {latency:g} s; {workers} workers "
        f"{par['wall']:.2f} s for {par['calls']} calls (critical path with this engine: first plan + {waves} × (execute, plan) "
        f"= {ideal_par:.0f} s of model time). Outcomes: {serial['outcome']} / {par['outcome']}.",
        f"  - {workers} workers, planner calls (time: results seen / nodes still running): "
        + ", ".join(f"{t:.1f} s: {d}/{r}" for t, d, r in par["planner"])
        + ". Plan steps of a task run one at a time and each calls the model; one that starts on the first result of a "
        "wave sees the other nodes still running and fills only the free slots, so a wave is split over several "
        "serial planner calls.",
    ]
    return Section([row], details, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--leaves", type=int, default=8)
    ap.add_argument("--latency", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args(argv)
    from bench.common import table

    s = measure(leaves=a.leaves, latency=a.latency, workers=a.workers)
    print(table(s.rows))
    print("\n".join(s.details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
