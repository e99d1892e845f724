"""The engine in-process with the shipped scripted model: the rules a user relies on (errors
stay in context, turn limits, budgets, refused paths, duplicate dispatch, parallel nodes,
malformed plans) checked on the real planner, executor, sandbox and git."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agent.core.config import AgentConfig
from agent.steps.engine import Engine
from agent.cli.local import make_runtime, resume, run_question
from agent.models.base import ToolResultBlock
from agent.models.scripted import ScriptedModel
from agent.observe.progress import RecordingReporter
from agent.core.seams import Job
from agent.core.snapshot import load_snapshot
from agent.core.state import Budget
from tests.helpers import git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    (r / "numbers.txt").write_text("\n".join(str(i) for i in range(1, 11)) + "\n")
    git(r, "init", "-q", "-b", "main")
    git(r, "-c", "user.name=u", "-c", "user.email=u@x", "add", "-A")
    git(r, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "init")
    return r


def plan(*nodes: dict) -> dict:
    return {"tool": "update_plan", "input": {"nodes": list(nodes)}}


def node(id: str, deps=(), goal=None, **kw) -> dict:
    return {"id": id, "title": id.upper(), "goal": goal or f"do {id}", "depends_on": list(deps), **kw}


FINISH = {"tool": "finish", "input": {"answer": "A: {{ results.values() | list | join(' / ') }}", "summary": "done"}}


def run(repo: Path, script: dict, budget: Budget | None = None, config: AgentConfig | None = None, model: ScriptedModel | None = None, workers: int = 4):
    model = model or ScriptedModel(script)
    rep = RecordingReporter()
    cfg = config or AgentConfig()
    cfg.sandbox.backend = "subprocess"  # fast; the sandbox has its own tests per backend
    rt = make_runtime(repo, config=cfg, reporter=rep, models={"scripted:t": model})
    res = run_question(rt, "How much is the sum of numbers.txt?", planner_model="scripted:t", executor_model="scripted:t",
                       budget=budget or Budget(), workers=workers)
    return res, rt, model, rep


def test_errors_stay_in_context_and_the_model_recovers(repo):
    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": "print(sum(int(x) for x in open('numbers.txt').read().split(',')))"}},
            {"tool": "run_python", "input": {"code": "print(sum(int(x) for x in open('numbers.txt').read().split()))"}},
            {"tool": "finish_step", "input": {"status": "done", "result": "sum = {{ last_output }}"}},
        ],
    }
    res, rt, model, _ = run(repo, script)
    assert res.outcome == "done" and "sum = 55" in res.answer
    # the second executor request carries the first one's traceback
    second = [c for c in model.calls if c.meta.get("node") == "n1"][1]
    results = [b for m in second.messages for b in m.content if isinstance(b, ToolResultBlock)]
    assert results and results[-1].is_error and "ValueError" in results[-1].content and "exit code: 1" in results[-1].content


def test_turn_limit_fails_the_node_and_the_planner_hears_why(repo):
    loop = [{"tool": "run_shell", "input": {"command": "echo still thinking"}}] * 5
    script = {
        "planner": [plan(node("n1")), {"tool": "finish", "input": {"answer": "could not: {{ results | length }} results", "summary": "gave up"}}],
        "executor:n1": loop,
    }
    res, rt, model, _ = run(repo, script, budget=Budget(max_turns=3))
    snap = load_snapshot(rt.git, res.task_id)
    rec = snap.latest_step_for("n1")
    assert rec.status == "failed" and rec.turns == 3 and "turn limit" in rec.error
    assert snap.plan.get("n1").status.value == "failed"
    planner_saw = model.calls[-1].messages[0].content[-1].text
    assert "n1 (failed: turn limit reached (3 turns)" in planner_saw
    assert len([c for c in model.calls if c.meta.get("node") == "n1"]) == 3  # never more than the limit


def test_budget_below_the_second_step_stops_after_the_first(repo):
    script = {"planner": [plan(node("n1")), FINISH], "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "x"}}]}
    model = ScriptedModel(script, name="claude-haiku-4-5")  # priced: $1/Mtok in, $5/Mtok out
    res, rt, _, rep = run(repo, script, budget=Budget(max_usd=0.0005), model=model)
    assert res.outcome == "budget"
    snap = load_snapshot(rt.git, res.task_id)
    assert [s.role for s in snap.steps] == ["planner", "finish"]  # the planner ran once, nothing after it
    assert "budget exceeded: dollars" in (res.reason or "")
    assert "Outcome: budget" in res.report and "--resume" in res.report
    assert any(k == "budget" for k, _ in rep.events)


def test_changes_to_workflows_are_refused_and_recorded(repo):
    code = (
        "import os\nos.makedirs('.github/workflows', exist_ok=True)\n"
        "open('.github/workflows/evil.yml','w').write('on: push')\nopen('result.txt','w').write('55')\nprint('ok')"
    )
    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "run_python", "input": {"code": code}}, {"tool": "finish_step", "input": {"status": "done", "result": "wrote"}}],
    }
    res, rt, _, _ = run(repo, script)
    files = git(repo, "ls-tree", "-r", "--name-only", res.branch).split()
    assert "result.txt" in files and ".github/workflows/evil.yml" not in files
    rec = load_snapshot(rt.git, res.task_id).latest_step_for("n1")
    assert any(".github/workflows/evil.yml" in r for r in rec.refused)
    assert "result.txt" in rec.artifacts


def test_malformed_plans_are_corrected_then_fail_cleanly(repo):
    cyc = plan(node("a", ["b"]), node("b", ["a"]))
    script = {"planner": [cyc, {"text": "no tool"}, plan(node("a", ["zz"])), cyc]}
    res, rt, model, _ = run(repo, script)
    assert res.outcome == "error"
    snap = load_snapshot(rt.git, res.task_id)
    rec = snap.steps[0]
    assert rec.role == "planner" and rec.status == "failed" and rec.turns == 4
    assert "dependency cycle" in rec.error
    # each correction told the model exactly what was wrong
    errors = [b.content for m in model.calls[-1].messages for b in m.content if isinstance(b, ToolResultBlock)]
    assert any("dependency cycle: a -> b -> a" in e for e in errors) and any("unknown node 'zz'" in e for e in errors)
    assert "Outcome: error" in res.report


def test_independent_nodes_run_in_parallel(repo):
    barrier = threading.Barrier(2, timeout=20)

    class Meeting(ScriptedModel):
        def query(self, request):
            if request.meta.get("turn") == 1 and request.meta.get("node") in ("a", "b"):
                barrier.wait()  # breaks (and fails the node) unless both executors are in flight at once
            return super().query(request)

    script = {
        "planner": [plan(node("a"), node("b")), {"when": "running", **plan(node("a"), node("b"))}, FINISH],
        "executor:a": [{"tool": "finish_step", "input": {"status": "done", "result": "A"}}],
        "executor:b": [{"tool": "finish_step", "input": {"status": "done", "result": "B"}}],
    }
    res, rt, _, _ = run(repo, script, model=Meeting(script), workers=2)
    assert res.outcome == "done" and "A" in res.answer and "B" in res.answer
    assert not barrier.broken


def test_duplicate_dispatch_is_a_no_op(repo):
    script = {"planner": [plan(node("n1")), FINISH], "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}]}
    res, rt, _, _ = run(repo, script)
    before = git(repo, "rev-parse", res.branch)
    snap = load_snapshot(rt.git, res.task_id)
    n1 = snap.plan.get("n1")
    engine = Engine(rt)
    for job in (Job(step="execute", task=res.task_id, branch=res.branch, node="n1", seq=n1.step),
                Job(step="plan", task=res.task_id, branch=res.branch),
                Job(step="finish", task=res.task_id, branch=res.branch)):
        assert engine.handle(job) == []
    assert git(repo, "rev-parse", res.branch) == before
    assert resume(rt, res.task_id).outcome == "done" and git(repo, "rev-parse", res.branch) == before


def test_push_mode_publishes_every_step_to_the_remote(repo, tmp_path):
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    script = {"planner": [plan(node("n1")), FINISH], "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}]}
    model = ScriptedModel(script)
    cfg = AgentConfig()
    cfg.sandbox.backend = "subprocess"
    rt = make_runtime(repo, config=cfg, remote="origin", models={"scripted:t": model})
    res = run_question(rt, "sum?", planner_model="scripted:t", executor_model="scripted:t")
    assert res.outcome == "done"
    remote_log = git(bare, "log", "--format=%s", res.branch).splitlines()
    assert remote_log[0].startswith("agent(finish)") and sum(1 for s in remote_log if s.startswith("agent(")) == 5


def test_task_json_records_question_models_and_budget(repo):
    script = {"planner": [plan(node("n1")), FINISH], "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}]}
    res, rt, _, _ = run(repo, script, budget=Budget(max_usd=0.5))
    task = json.loads(git(repo, "show", f"{res.branch}:.agent/tasks/{res.task_id}/task.json"))
    assert task["question"] == "How much is the sum of numbers.txt?"
    assert task["models"] == {"planner": "scripted:t", "executor": "scripted:t"}
    assert task["budget"]["max_usd"] == 0.5 and task["base_sha"] == git(repo, "rev-parse", "main").strip()


def test_a_model_without_a_price_is_counted_at_a_fallback_price_with_a_warning(repo):
    script = {"planner": [plan(node("n1")), FINISH], "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}]}
    model = ScriptedModel(script, name="claude-unreleased-9")
    res, rt, _, rep = run(repo, script, model=model)
    assert res.outcome == "done" and res.cost_usd > 0  # the dollar budget still counts it
    assert any(k == "error" and "no price for model 'claude-unreleased-9'" in f["error"] for k, f in rep.events)
