#!/usr/bin/env python
"""Writes the recorded tasks that tests/eval/test_replay.py replays in CI: each a Git bundle of a
repository holding one finished task (its branch, every step a commit, turns.jsonl with what the
model said and what the code printed). Made once with the engine of the day and scripted models
priced as real ones; rerun only to record new behaviour on purpose.

    python tests/data/recordings/make_recordings.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from gitops_agent.app.local import make_demo_repo, make_runtime, run_question  # noqa: E402
from gitops_agent.settings.config import AgentConfig  # noqa: E402
from gitops_agent.models.scripted import ScriptedModel  # noqa: E402

REVENUE = ("import csv, collections\n\ndef num(x):\n    try:\n        return float(x)\n    except ValueError:\n        return 0.0\n\n"
           "t = collections.Counter()\nfor r in csv.DictReader(open('data/orders.csv')):\n"
           "    t[r['region'].strip().title()] += num(r['amount'])\nfor k, v in sorted(t.items()):\n    print(f'{k},{v:.2f}')\n")
SCRIPTS: dict[str, dict | None] = {
    "demo": None,  # the shipped demo: three nodes, a fan-in
    # two nodes, the second depends on the first; the first's code fails once (a wrong column) and is fixed
    "two-nodes-with-a-fix": {
        "planner": [
            {"tool": "update_plan", "input": {"note": "two steps", "nodes": [
                {"id": "n1", "title": "Revenue per region", "goal": "Sum the order amounts per region of data/orders.csv."},
                {"id": "n2", "title": "The top region", "goal": "Name the region with the most revenue.", "depends_on": ["n1"]}]}},
            {"tool": "update_plan", "input": {"note": "n1 done", "nodes": [
                {"id": "n1", "title": "Revenue per region", "goal": "Sum the order amounts per region of data/orders.csv."},
                {"id": "n2", "title": "The top region", "goal": "Name the region with the most revenue.", "depends_on": ["n1"]}]}},
            {"tool": "finish", "input": {"answer": "The top region is {{ results.n2 | trim }}.", "summary": "top region"}},
        ],
        "executor:n1": [
            {"text": "Summing per region.", "tool": "run_python", "input": {"code": REVENUE.replace("'amount'", "'total'")}},
            {"text": "The column is amount.", "tool": "run_python", "input": {"code": REVENUE}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
        "executor:n2": [
            {"tool": "run_python", "input": {"code": REVENUE.replace("for k, v in sorted(t.items()):\n    print(f'{k},{v:.2f}')\n", "print(max(t, key=t.get))\n")}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output | trim }}"}},
        ],
    },
}


def record(name: str, script: dict | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="recording-"))
    try:
        repo = make_demo_repo(work / "repo")
        cfg = AgentConfig()
        cfg.sandbox.backend = "subprocess"
        if script is None:  # the shipped demo, as `gitops-agent demo` runs it
            from gitops_agent.app.local import DEMO_QUESTION

            rt = make_runtime(repo, config=cfg)
            res = run_question(rt, DEMO_QUESTION, planner_model="scripted:demo", executor_model="scripted:demo", task_id="rec-demo")
        else:
            model = ScriptedModel(script, name="claude-haiku-4-5")  # priced as the real one
            rt = make_runtime(repo, config=cfg, models={"scripted:rec": model})
            res = run_question(rt, "Which region of data/orders.csv has the most revenue?", planner_model="scripted:rec",
                               executor_model="scripted:rec", task_id=f"rec-{name}")
        assert res.outcome == "done", res
        out = HERE / f"{name}.bundle"
        subprocess.run(["git", "-C", str(repo), "bundle", "create", "-q", str(out), "--all"], check=True)
        (HERE / f"{name}.json").write_text(json.dumps({"task_id": res.task_id, "outcome": res.outcome, "answer": res.answer}, indent=2) + "\n")
        print(f"{name}: {res.task_id} ({res.outcome}) -> {out.name}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for name, script in SCRIPTS.items():
        record(name, script)
