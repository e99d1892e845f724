#!/usr/bin/env python
"""P6 the cost of a steered round: a finished five-node task, then a person sets one done node
back to pending in plan.json and resumes. That round should cost one node's execution plus one
planner call, not the task again.

    python bench/steer.py

The real engine (local mode) with a scripted model priced as claude-haiku-4-5 (the cost comes
from each call's usage, as for a real model). Costs are read from the task's step records.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, Section, make_one_file_repo  # noqa: E402
from gitops_agent.app.local import make_runtime, resume, run_question  # noqa: E402
from gitops_agent.core.snapshot import load_snapshot  # noqa: E402
from gitops_agent.models.scripted import ScriptedModel  # noqa: E402
from gitops_agent.settings.config import AgentConfig  # noqa: E402

MODEL = "claude-haiku-4-5"
SPEC = "scripted:steer"
NODES = [
    {"id": f"n{i}", "title": f"Part {i}", "goal": f"compute part {i} of the answer " + "in detail " * 40} for i in range(1, 6)
]


def _model() -> ScriptedModel:
    step = {
        "text": "Working on it. " * 30,
        "tool": "finish_step",
        "input": {"result": "part {{ node }}: 42 " + "x" * 400, "status": "done"},
    }
    return ScriptedModel(
        {
            "planner": [{"when": "results|length < 5", "tool": "update_plan", "input": {"nodes": NODES}}] * 20
            + [{"tool": "finish", "input": {"answer": "The answer is 42.", "summary": "42"}}] * 5,
            "executor": [step] * 20,
        },
        name=MODEL,
    )


def _costs(rt, tid: str, since: int = 0) -> tuple[float, float, float, int]:
    """(total, executor, planner) dollars and model steps of the step records after ``since``."""
    snap = load_snapshot(rt.git, tid)
    steps = [s for s in snap.steps if s.seq > since]
    ex = sum(s.cost_usd for s in steps if s.role == "executor")
    pl = sum(s.cost_usd for s in steps if s.role == "planner")
    return ex + pl, ex, pl, sum(1 for s in steps if s.role in ("executor", "planner") and s.cost_usd > 0)


def measure(quick: bool = False) -> Section:
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-steer-"))
    try:
        repo = make_one_file_repo(work)
        rt = make_runtime(repo, config=AgentConfig(), models={SPEC: _model()})
        res = run_question(rt, "Benchmark: five parts", planner_model=SPEC, executor_model=SPEC)
        tid = res.task_id
        full, full_ex, full_pl, full_calls = _costs(rt, tid)
        snap = load_snapshot(rt.git, tid)
        last_seq = max(s.seq for s in snap.steps)
        one_node = next(s.cost_usd for s in snap.steps if s.node == "n3")
        planner_calls = [s.cost_usd for s in snap.steps if s.role == "planner" and s.cost_usd > 0]
        # the person's edit: n3 back to pending, committed on the task branch
        plan = json.loads(rt.git.read_file(snap.tip, f"{snap.root}/plan.json"))
        for n in plan["nodes"]:
            if n["id"] == "n3":
                n["status"] = "pending"
        rt.git.commit_files(
            snap.branch, {f"{snap.root}/plan.json": json.dumps(plan, indent=2).encode()}, "a person: redo n3", {}, base=snap.tip
        )
        rt2 = make_runtime(repo, config=AgentConfig(), models={SPEC: _model()})
        again = resume(rt2, tid)
        rnd, rnd_ex, rnd_pl, rnd_calls = _costs(rt2, tid, since=last_seq)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    target = one_node + max(planner_calls)
    ok = res.outcome == "done" and again.outcome == "done"
    row = Row(
        "P6 a steered round: 1 node of a 5-node plan set back to pending, then resumed",
        f"${rnd:.4f} ({rnd_calls} model steps)",
        f"${full:.4f} (the whole task, {full_calls} model steps)",
        f"{rnd / full:.2f}" if full else "—",
        f"≤ one node + one planner call (${target:.4f})",
        ok and rnd <= target * 1.001,
        "" if ok else f"a run did not finish: {res.outcome} / {again.outcome}",
    )
    details = [
        f"- P6: the round cost ${rnd_ex:.4f} of execution and ${rnd_pl:.4f} of planning; the first run ${full_ex:.4f} and "
        f"${full_pl:.4f}. The edit's own plan step asks no model (the person said what to run); the planner is "
        "asked once more when the result is in."
    ]
    return Section([row], details, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    from bench.common import print_section

    return print_section(measure())


if __name__ == "__main__":
    sys.exit(main())
