"""The engine in-process with the shipped scripted model: the rules a user relies on (errors
stay in context, turn limits, budgets, refused paths, duplicate dispatch, parallel nodes,
malformed plans) checked on the real planner, executor, sandbox and git."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from gitops_agent.app.local import make_runtime, resume, run_question
from gitops_agent.core.messages import ToolResultBlock
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.core.state import Budget, TaskModels, Usage
from gitops_agent.models.scripted import ScriptedModel
from gitops_agent.observe.progress import RecordingReporter
from gitops_agent.settings.config import AgentConfig
from gitops_agent.steps.engine import Engine
from tests.helpers import commits, git


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


def run(
    repo: Path,
    script: dict,
    budget: Budget | None = None,
    config: AgentConfig | None = None,
    model: ScriptedModel | None = None,
    workers: int = 4,
):
    model = model or ScriptedModel(script)
    rep = RecordingReporter()
    cfg = config or AgentConfig()
    cfg.sandbox.backend = "subprocess"  # fast; the sandbox has its own tests per backend
    rt = make_runtime(repo, config=cfg, reporter=rep, models={"scripted:t": model})
    res = run_question(
        rt,
        "How much is the sum of numbers.txt?",
        planner_model="scripted:t",
        executor_model="scripted:t",
        budget=budget or Budget(),
        workers=workers,
    )
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
        "planner": [
            plan(node("n1")),
            {"tool": "finish", "input": {"answer": "could not: {{ results | length }} results", "summary": "gave up"}},
        ],
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
    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "x"}}],
    }
    model = ScriptedModel(script, name="claude-haiku-4-5")  # priced: $1/Mtok in, $5/Mtok out
    res, rt, _, rep = run(repo, script, budget=Budget(max_usd=0.0005), model=model)
    assert res.outcome == "budget"
    snap = load_snapshot(rt.git, res.task_id)
    assert [s.role for s in snap.steps] == ["planner", "finish"]  # the planner ran once, nothing after it
    assert "budget exceeded: dollars" in (res.reason or "")
    assert "Outcome: budget" in res.report and "--resume" in res.report
    assert any(k == "budget" for k, _ in rep.events)


def _one_run(code: str, result: str) -> dict:
    """A plan of one node whose executor runs ``code`` once and finishes with ``result``."""
    return {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": code}},
            {"tool": "finish_step", "input": {"status": "done", "result": result}},
        ],
    }


def test_changes_to_workflows_are_refused_and_recorded(repo):
    code = (
        "import os\nos.makedirs('.github/workflows', exist_ok=True)\n"
        "open('.github/workflows/evil.yml','w').write('on: push')\nopen('result.txt','w').write('55')\nprint('ok')"
    )
    script = _one_run(code, "wrote")
    res, rt, _, _ = run(repo, script)
    files = git(repo, "ls-tree", "-r", "--name-only", res.branch).split()
    assert "result.txt" in files and ".github/workflows/evil.yml" not in files
    rec = load_snapshot(rt.git, res.task_id).latest_step_for("n1")
    assert any(".github/workflows/evil.yml" in r for r in rec.refused)
    assert "result.txt" in rec.artifacts


def test_the_settings_and_the_workbench_requirements_are_never_committed_from_the_models_code(repo):
    code = (
        "import os\nos.makedirs('.github', exist_ok=True)\nos.makedirs('reqs', exist_ok=True)\n"
        "open('.github/gitops-agent.yml','w').write('policy: {}')\nopen('reqs/wb.txt','w').write('evil==1.0')\n"
        "open('result.txt','w').write('55')"
    )
    script = _one_run(code, "wrote")
    cfg = AgentConfig()
    cfg.policy.refused_paths = []  # a repository that protects nothing by pattern
    cfg.sandbox.workbench = False
    cfg.sandbox.requirements = "reqs/wb.txt"
    res, rt, _, _ = run(repo, script, config=cfg)
    files = git(repo, "ls-tree", "-r", "--name-only", res.branch).split()
    assert "result.txt" in files and ".github/gitops-agent.yml" not in files and "reqs/wb.txt" not in files
    rec = load_snapshot(rt.git, res.task_id).latest_step_for("n1")
    assert sum("never the model's" in r for r in rec.refused) == 2, rec.refused


def test_the_settings_and_the_requirements_survive_a_file_and_a_directory_swapped_over_them(repo):
    (repo / ".github").mkdir(exist_ok=True)
    (repo / ".github" / "gitops-agent.yml").write_text("# the owners' settings\n")
    (repo / "reqs").mkdir()
    (repo / "reqs" / "wb.txt").write_text("# the owners' pins\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "settings and pins")
    code = (
        "import os, shutil\nshutil.rmtree('reqs')\nopen('reqs','w').write('a file where the folder was')\n"
        "os.remove('.github/gitops-agent.yml')\nos.makedirs('.github/gitops-agent.yml')\n"
        "open('.github/gitops-agent.yml/x','w').write('x')\nopen('result.txt','w').write('55')"
    )
    script = _one_run(code, "swapped")
    cfg = AgentConfig()
    cfg.policy.refused_paths = []
    cfg.policy.existing_files_action = "allow"
    cfg.sandbox.workbench = False
    cfg.sandbox.requirements = "reqs/wb.txt"
    res, rt, _, _ = run(repo, script, config=cfg)
    assert git(repo, "show", f"{res.branch}:.github/gitops-agent.yml").strip() == "# the owners' settings"
    assert git(repo, "show", f"{res.branch}:reqs/wb.txt").strip() == "# the owners' pins"
    assert "result.txt" in git(repo, "ls-tree", "-r", "--name-only", res.branch).split()
    rec = load_snapshot(rt.git, res.task_id).latest_step_for("n1")
    assert sum("writing it would remove" in r for r in rec.refused) == 2, rec.refused


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
    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}],
    }
    res, rt, _, _ = run(repo, script)
    before = git(repo, "rev-parse", res.branch)
    snap = load_snapshot(rt.git, res.task_id)
    n1 = snap.plan.get("n1")
    engine = Engine(rt)
    for job in (
        Job(step="execute", task=res.task_id, branch=res.branch, node="n1", seq=n1.step),
        Job(step="plan", task=res.task_id, branch=res.branch),
        Job(step="finish", task=res.task_id, branch=res.branch),
    ):
        assert engine.handle(job) == []
    assert git(repo, "rev-parse", res.branch) == before
    assert resume(rt, res.task_id).outcome == "done" and git(repo, "rev-parse", res.branch) == before


def test_push_mode_publishes_every_step_to_the_remote(repo, tmp_path):
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}],
    }
    model = ScriptedModel(script)
    cfg = AgentConfig()
    cfg.sandbox.backend = "subprocess"
    rt = make_runtime(repo, config=cfg, remote="origin", models={"scripted:t": model})
    res = run_question(rt, "sum?", planner_model="scripted:t", executor_model="scripted:t")
    assert res.outcome == "done"
    remote_log = git(bare, "log", "--format=%s", res.branch).splitlines()
    assert remote_log[0].startswith("agent(finish)") and sum(1 for s in remote_log if s.startswith("agent(")) == 5


def test_task_json_records_question_models_and_budget(repo):
    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}],
    }
    res, rt, _, _ = run(repo, script, budget=Budget(max_usd=0.5))
    task = json.loads(git(repo, "show", f"{res.branch}:.agent/tasks/{res.task_id}/task.json"))
    assert task["question"] == "How much is the sum of numbers.txt?"
    assert task["models"] == {"planner": "scripted:t", "executor": "scripted:t"}
    assert task["budget"]["max_usd"] == 0.5 and task["base_sha"] == git(repo, "rev-parse", "main").strip()


def test_a_model_without_a_price_is_counted_at_a_fallback_price_with_a_warning(repo):
    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}],
    }
    model = ScriptedModel(script, name="claude-unreleased-9")
    res, rt, _, rep = run(repo, script, model=model)
    assert res.outcome == "done" and res.cost_usd > 0  # the dollar budget still counts it
    assert any(k == "error" and "no price for model 'claude-unreleased-9'" in f["error"] for k, f in rep.events)


def test_a_step_cannot_write_into_another_steps_folder(repo):
    # n2 runs with n1's step folder in its checkout (its input); its code writes there, into a
    # folder of a step that does not exist, and into its own folder: only the last is committed
    code = (
        "import glob, os\n"
        "n1 = glob.glob('.agent/tasks/*/steps/*-n1')[0]\n"
        "own = glob.glob('.agent/tasks/*/steps/*-n2')[0]\n"
        "open(os.path.join(n1, 'out.txt'), 'w').write('forged by n2')\n"
        "open(os.path.join(n1, 'extra.txt'), 'w').write('planted by n2')\n"
        "other = os.path.join(os.path.dirname(own), '0099-zz')\n"
        "os.makedirs(other)\n"
        "open(os.path.join(other, 'x.txt'), 'w').write('x')\n"
        "os.makedirs(own + 'x')\n"  # a sibling whose name starts with this step's folder name
        "open(own + 'x/x.txt', 'w').write('x')\n"
        "open(os.path.join(own, 'mine.txt'), 'w').write('n2 output')\n"
        "print('written')\n"
    )
    script = {
        "planner": [plan(node("n1"), node("n2", ["n1"])), plan(node("n1"), node("n2", ["n1"])), FINISH],
        "executor:n1": [
            {
                "tool": "run_python",
                "input": {"code": "import glob\nopen(glob.glob('.agent/tasks/*/steps/*-n1')[0] + '/out.txt', 'w').write('55')"},
            },
            {"tool": "finish_step", "input": {"status": "done", "result": "n1 wrote out.txt"}},
        ],
        "executor:n2": [
            {"tool": "run_python", "input": {"code": code}},
            {"tool": "finish_step", "input": {"status": "done", "result": "n2"}},
        ],
    }
    res, rt, _, _ = run(repo, script)
    assert res.outcome == "done"
    snap = load_snapshot(rt.git, res.task_id)
    n1, n2 = snap.plan.get("n1"), snap.plan.get("n2")
    d1, d2 = snap.step_dir(n1.step, "n1"), snap.step_dir(n2.step, "n2")
    files = set(git(repo, "ls-tree", "-r", "--name-only", res.branch).split())
    assert f"{d2}/mine.txt" in files and git(repo, "show", f"{res.branch}:{d2}/mine.txt") == "n2 output"
    assert git(repo, "show", f"{res.branch}:{d1}/out.txt") == "55"  # n1's output as n1 wrote it
    assert f"{d1}/extra.txt" not in files and not any("/0099-zz/" in f for f in files)
    rec = snap.latest_step_for("n2")
    assert f"{d2}/mine.txt" in rec.artifacts
    assert f"{d2}x/x.txt" not in files
    for path in (f"{d1}/out.txt", f"{d1}/extra.txt", f"{snap.root}/steps/0099-zz/x.txt", f"{d2}x/x.txt"):
        assert any(r.startswith(f"{path}: refused") for r in rec.refused), (path, rec.refused)
    # n1's files were changed by n1's commit only
    n1_log = git(repo, "log", "--format=%(trailers:key=Agent-Node,valueonly)", res.branch, "--", f"{d1}/out.txt").split()
    assert n1_log == ["n1"]


class FixedUsage(ScriptedModel):
    """The scripted model, with every call reporting the same usage (so budgets can be hit at an
    exact call)."""

    def __init__(self, script: dict, usage: Usage, **kw):
        super().__init__(script, **kw)
        self.usage = usage

    def query(self, request):
        return super().query(request).model_copy(update={"usage": self.usage})


LOOP = [{"tool": "run_shell", "input": {"command": "echo still thinking"}}] * 12  # never finishes by itself


def test_an_executor_stops_when_spent_plus_its_own_running_cost_passes_max_usd(repo):
    # $0.001 a call (1000 input tokens at $1/Mtok): the planner spent $0.001, so the executor may
    # make two calls ($0.003 in all) and stops at the third ($0.004 > $0.0035), not at max_turns
    script = {"planner": [plan(node("n1")), FINISH], "executor:n1": LOOP}
    model = FixedUsage(script, Usage(input_tokens=1000), name="claude-haiku-4-5")
    res, rt, _, _ = run(repo, script, budget=Budget(max_usd=0.0035, max_turns=12), model=model)
    assert res.outcome == "budget" and "budget exceeded: dollars" in (res.reason or "")
    snap = load_snapshot(rt.git, res.task_id)
    rec = snap.latest_step_for("n1")
    assert rec.turns == 3 and rec.cost_usd == pytest.approx(0.003)
    assert rec.error == "stopped: budget exceeded: dollars 0.004 of 0.0035"
    assert len([c for c in model.calls if c.meta.get("node") == "n1"]) == 3
    assert [s.role for s in snap.steps] == ["planner", "executor", "finish"]


def test_the_token_budget_counts_input_output_and_cached_tokens_up_to_the_limit(repo):
    # 1000 tokens a call, a quarter in each field: planner + two executor calls are exactly
    # max_tokens (allowed); the third executor call passes it. Leaving out any field would let a
    # fourth call through; counting the limit itself as over would stop at the second.
    script = {"planner": [plan(node("n1")), FINISH], "executor:n1": LOOP}
    usage = Usage(input_tokens=250, output_tokens=250, cache_read_tokens=250, cache_write_tokens=250)
    model = FixedUsage(script, usage, name="claude-haiku-4-5")
    res, rt, _, _ = run(repo, script, budget=Budget(max_tokens=3000, max_turns=12), model=model)
    assert res.outcome == "budget" and "budget exceeded: tokens" in (res.reason or "")
    snap = load_snapshot(rt.git, res.task_id)
    rec = snap.latest_step_for("n1")
    assert rec.turns == 3 and rec.usage.total == 3000 and rec.error == "stopped: budget exceeded: tokens 4000 of 3000"
    assert snap.usage.total == 4000


def test_max_steps_allows_exactly_that_many_model_steps(repo):
    def script():
        return {
            "planner": [plan(node("n1")), FINISH],
            "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}],
        }  # noqa: E731

    # planner, executor, planner (finish): three model steps
    res, rt, _, _ = run(repo, script(), budget=Budget(max_steps=3))
    assert res.outcome == "done"
    assert [s.role for s in load_snapshot(rt.git, res.task_id).steps] == ["planner", "executor", "planner", "finish"]
    # one fewer: the second planner step is refused, the task ends on the budget
    res, rt, model, _ = run(repo, script(), budget=Budget(max_steps=2))
    assert res.outcome == "budget" and "budget exceeded: steps 2 of 2" in (res.reason or "")
    assert [s.role for s in load_snapshot(rt.git, res.task_id).steps] == ["planner", "executor", "finish"]
    assert len([c for c in model.calls if c.meta.get("role") == "planner"]) == 1


def test_the_planner_cannot_finish_while_a_node_is_still_running(repo):
    # a and b run side by side; b is held until the planner has seen a's result with b running.
    # The planner tries to finish then: refused, it waits, and finishes with b's result too.
    planner_saw_b_running = threading.Event()

    class HoldB(ScriptedModel):
        def query(self, request):
            if request.meta.get("role") == "planner" and "b" in request.meta.get("running", []):
                planner_saw_b_running.set()
            if request.meta.get("node") == "b" and request.meta.get("turn") == 1:
                assert planner_saw_b_running.wait(20)
            return super().query(request)

    early = {
        "when": "running",
        "tool": "finish",
        "input": {"answer": "early: {{ results.values() | list | join(' / ') }}", "summary": "early"},
    }
    script = {
        "planner": [plan(node("a"), node("b")), early, {"when": "running", **plan(node("a"), node("b"))}, FINISH],
        "executor:a": [{"tool": "finish_step", "input": {"status": "done", "result": "A"}}],
        "executor:b": [{"tool": "finish_step", "input": {"status": "done", "result": "B"}}],
    }
    res, rt, model, _ = run(repo, script, model=HoldB(script), workers=2)
    assert res.outcome == "done" and "early" not in res.answer and "A" in res.answer and "B" in res.answer
    snap = load_snapshot(rt.git, res.task_id)
    assert snap.plan.get("b").status.value == "done" and snap.latest_step_for("b").status == "done"
    refusals = [
        b.content
        for c in model.calls
        if c.meta.get("role") == "planner"
        for m in c.messages
        for b in m.content
        if isinstance(b, ToolResultBlock) and b.is_error
    ]
    assert any("['b'] are still running" in r for r in refusals), refusals


def _start(repo: Path, script: dict, workers: int = 3):
    """A task started but not run: (engine, runtime, model, first job) to drive step by step, the
    way a process that is killed between steps leaves it."""
    model = ScriptedModel(script)
    cfg = AgentConfig()
    cfg.sandbox.backend = "subprocess"
    cfg.workers = workers
    rt = make_runtime(repo, config=cfg, reporter=RecordingReporter(), models={"scripted:t": model})
    engine = Engine(rt)
    job = engine.start(
        "How much is the sum of numbers.txt?",
        base_ref="main",
        base_sha=git(repo, "rev-parse", "main").strip(),
        models=TaskModels(planner="scripted:t", executor="scripted:t"),
    )
    return engine, rt, model, job


def _executor_commits(repo: Path, branch: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in commits(repo, branch):
        if c["trailers"].get("Agent-Role") == "executor":
            out.setdefault(c["trailers"]["Agent-Node"], []).append(c["sha"])
    return out


def test_resume_runs_only_the_unfinished_nodes(repo):
    # a is done (and the planner has seen it), c committed its step but the planner never saw it,
    # b was dispatched and never ran: the process was killed there. A resume runs b only.
    three = plan(node("a"), node("b"), node("c"))
    script = {
        "planner": [three, {"when": "running", **three}, FINISH],
        "executor:a": [{"tool": "finish_step", "input": {"status": "done", "result": "A"}}],
        "executor:b": [{"tool": "finish_step", "input": {"status": "done", "result": "B"}}],
        "executor:c": [{"tool": "finish_step", "input": {"status": "done", "result": "C"}}],
    }
    engine, rt, model, job = _start(repo, script)
    assert job.step == "plan"
    jobs = {j.node: j for j in engine.handle(job)}
    assert sorted(jobs) == ["a", "b", "c"]
    assert [j.step for j in engine.handle(jobs["a"])] == ["plan"]
    assert engine.handle(Job(step="plan", task=job.task, branch=job.branch)) == []  # a done; b and c still running
    assert [j.step for j in engine.handle(jobs["c"])] == ["plan"]  # ... killed before this plan step ran
    snap = load_snapshot(rt.git, job.task)
    assert snap.plan.get("a").status.value == "done" and snap.plan.get("c").status.value == "running"
    before = _executor_commits(repo, job.branch)
    assert sorted(before) == ["a", "c"]
    n_calls = len(model.calls)

    assert [(j.step, j.node) for j in engine.resume_jobs(job.task)] == [("execute", "b"), ("plan", None)]
    res = resume(rt, job.task)
    assert res.outcome == "done" and all(x in res.answer for x in ("A", "B", "C"))
    asked = [c.meta.get("script_key") for c in model.calls[n_calls:]]
    assert "executor:a" not in asked and "executor:c" not in asked and asked.count("executor:b") == 1
    after = _executor_commits(repo, job.branch)
    assert after["a"] == before["a"] and after["c"] == before["c"] and len(after["b"]) == 1


def test_a_duplicate_execute_dispatch_while_the_task_runs_changes_nothing(repo):
    # the same execute job delivered twice: once right after the step's commit (the node is still
    # `running` in plan.json: only the commit already there tells), and once after the planner took
    # the result in and dispatched the next node; the task is not finished either time
    script = {
        "planner": [plan(node("n1"), node("n2", ["n1"])), plan(node("n1"), node("n2", ["n1"])), FINISH],
        "executor:n1": [
            {"tool": "run_shell", "input": {"command": "echo 55"}},
            {"tool": "finish_step", "input": {"status": "done", "result": "55"}},
            {"tool": "finish_step", "input": {"status": "done", "result": "a second run"}},
        ],
        "executor:n2": [{"tool": "finish_step", "input": {"status": "done", "result": "top"}}],
    }
    engine, rt, model, job = _start(repo, script)
    [ex1] = engine.handle(job)
    assert (ex1.step, ex1.node) == ("execute", "n1")
    [plan_job] = engine.handle(ex1)
    n1_calls = lambda: len([c for c in model.calls if c.meta.get("node") == "n1"])  # noqa: E731
    assert n1_calls() == 2
    for when in ("before the plan step", "after the plan step"):
        tip = git(repo, "rev-parse", job.branch)
        snap = load_snapshot(rt.git, job.task)
        assert snap.plan.finish is None and not snap.has_report
        assert engine.handle(ex1) == [], when
        assert git(repo, "rev-parse", job.branch) == tip, when
        assert n1_calls() == 2, when
        if when == "before the plan step":
            assert snap.plan.get("n1").status.value == "running"
            [ex2] = engine.handle(plan_job)
            assert (ex2.step, ex2.node) == ("execute", "n2")
    ex = _executor_commits(repo, job.branch)
    assert list(ex) == ["n1"] and len(ex["n1"]) == 1
    res = resume(rt, job.task)
    assert res.outcome == "done" and "55" in res.answer and "a second run" not in res.answer
    assert len(_executor_commits(repo, job.branch)["n1"]) == 1 and n1_calls() == 2


def test_a_plan_whose_commit_loses_a_race_on_plan_json_plans_again_instead_of_failing(repo):
    """Another planner (an inlined one beside a dispatched one, gitops_agent/github/chain.py) or a person
    commits plan.json while this planner thinks: the step plans again from what is there now."""
    from gitops_agent.core.plan import Plan, PlanNode
    from gitops_agent.core.state import dump_state

    script = {"planner": [plan(node("n1")), plan(node("n1"), node("p1"))]}
    rt_box: list = []
    paid: list[Usage] = []

    class Racing(ScriptedModel):
        def query(self, request):
            if request.meta.get("role") == "planner" and not any(c.meta.get("role") == "planner" for c in self.calls):
                rt, task = rt_box[0], request.meta["task"]
                other = Plan(version=1, goal="g", nodes=[PlanNode(id="p1", title="P1", goal="a person's node")])
                rt.git.commit_files(
                    f"agent/task/{task}", {f".agent/tasks/{task}/plan.json": dump_state(other)}, "edit the plan", {}
                )
            resp = super().query(request)
            if request.meta.get("role") == "planner":
                paid.append(resp.usage)
            return resp

    model = Racing(script)
    cfg = AgentConfig()
    cfg.sandbox.backend = "subprocess"
    rt = make_runtime(repo, config=cfg, reporter=RecordingReporter(), models={"scripted:t": model})
    rt_box.append(rt)
    engine = Engine(rt)
    sha = git(repo, "rev-parse", "HEAD").strip()
    job = engine.start("How much?", base_ref="main", base_sha=sha, models=TaskModels(planner="scripted:t", executor="scripted:t"))
    nxt = engine.handle(job)
    assert engine.failures == [] and sorted(j.node for j in nxt) == ["n1", "p1"]
    assert sum(c.meta.get("role") == "planner" for c in model.calls) == 2  # planned again, on the person's plan
    snap = load_snapshot(rt.git, job.task)
    assert [n.id for n in snap.plan.walk() if n.is_leaf] == ["n1", "p1"] and snap.plan.finish is None
    assert any(k == "retry" for k, _ in rt.reporter.events)
    # the lost attempt was paid for: the step's record bills both planner calls
    rec = next(x for x in snap.steps if x.role == "planner")
    assert len(paid) == 2 and rec.usage.input_tokens == paid[0].input_tokens + paid[1].input_tokens


def test_a_cascade_that_fails_on_the_cheap_model_and_succeeds_on_the_next_is_recorded(repo):
    """Cheap first, strong when needed (agent `cascade` in the brain): the node starts on the first
    model, which runs out of turns; the next one finishes it. The step, the trace and the ledger say so."""
    from gitops_agent.observe.trace_build import build_trace

    weak = ScriptedModel(
        {"executor:n1": [{"tool": "run_shell", "input": {"command": "echo thinking"}}] * 3}, name="claude-haiku-4-5"
    )
    strong = ScriptedModel(
        {
            "executor:n1": [
                {"tool": "run_python", "input": {"code": "print(sum(int(x) for x in open('numbers.txt').read().split()))"}},
                {"tool": "finish_step", "input": {"status": "done", "result": "sum = {{ last_output }}"}},
            ]
        },
        name="claude-sonnet-4-6",
    )
    planner = ScriptedModel({"planner": [plan(node("n1")), FINISH]}, name="scripted")
    cfg = AgentConfig()
    cfg.sandbox.backend = "subprocess"
    rt = make_runtime(
        repo,
        config=cfg,
        reporter=RecordingReporter(),
        models={"scripted:p": planner, "scripted:weak": weak, "scripted:strong": strong},
    )
    analyst = rt.brain.agents["analyst"]
    rt.brain.agents["analyst"] = analyst.model_copy(
        update={"model": "scripted:weak", "cascade": ["scripted:strong"], "max_turns": 3}
    )
    res = run_question(rt, "How much is the sum of numbers.txt?", planner_model="scripted:p", executor_model="scripted:weak")
    assert res.outcome == "done" and "sum = 55" in res.answer
    snap = load_snapshot(rt.git, res.task_id)
    rec = next(s for s in snap.steps if s.role == "executor")
    assert [(a.model, a.status, a.turns) for a in rec.cascade] == [
        ("claude-haiku-4-5", "failed", 3),
        ("claude-sonnet-4-6", "done", 2),
    ]
    assert "turn limit" in rec.cascade[0].error and rec.model == "claude-sonnet-4-6" and rec.status == "done" and rec.turns == 5
    # the ledger: the step bills both models' turns, each at its own price
    turns = [
        json.loads(x)
        for x in git(repo, "show", f"{res.branch}:.agent/tasks/{res.task_id}/steps/{rec.seq:04d}-n1/turns.jsonl").splitlines()
    ]
    assert [t["model"] for t in turns] == ["claude-haiku-4-5"] * 3 + ["claude-sonnet-4-6"] * 2
    assert rec.cost_usd == pytest.approx(sum(t["cost_usd"] for t in turns), abs=1e-6) and rec.cascade[0].cost_usd > 0
    assert rec.cost_usd == pytest.approx(rec.cascade[0].cost_usd + rec.cascade[1].cost_usd, abs=1e-6)
    # the second model was told why it is asked
    first_strong = [c for c in strong.calls][0]
    assert "did not succeed" in first_strong.messages[0].content[0].text
    trace = build_trace(rt.git, res.task_id)
    step = next(s for s in trace.steps if s.role == "executor")
    assert step.model == "claude-haiku-4-5 → claude-sonnet-4-6" and len(step.cascade) == 2


def test_a_rejected_plan_goes_back_trimmed_with_the_correction(repo):
    """A small model's reply of junk (no tool call, tens of thousands of characters) is answered with
    the error and a trimmed copy of the reply, not the whole of it again."""
    junk = "<start_of_turn>model " * 3000  # ~60k characters
    script = {
        "planner": [{"text": junk}, plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "ok"}}],
    }
    res, rt, model, _ = run(repo, script)
    assert res.outcome == "done"
    second = [c for c in model.calls if c.meta.get("role") == "planner"][1]
    sent_back = second.messages[1].content[0].text
    assert len(sent_back) < 2_100 and "characters cut" in sent_back and sent_back.startswith("<start_of_turn>")


def test_a_cascade_stops_at_the_budget_and_tells_the_next_model_why(repo):
    """A first model that reports failure with a reason: the next model is told the reason. A
    first model that spent the budget: no next model starts. A cascade model that cannot be made
    fails the step before any turn is paid for."""
    failing = {"executor:n1": [{"tool": "finish_step", "input": {"status": "failed", "result": "the column qty is missing"}}]}
    ok = {"executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "fine"}}]}

    def runtime(cascade, budget_usd=5.0):
        weak, strong = ScriptedModel(failing, name="claude-sonnet-4-6"), ScriptedModel(ok, name="claude-haiku-4-5")
        cfg = AgentConfig()
        cfg.sandbox.backend = "subprocess"
        rt = make_runtime(
            repo,
            config=cfg,
            reporter=RecordingReporter(),
            models={
                "scripted:p": ScriptedModel({"planner": [plan(node("n1")), FINISH]}, name="scripted"),
                "scripted:weak": weak,
                "scripted:strong": strong,
            },
        )
        a = rt.brain.agents["analyst"]
        rt.brain.agents["analyst"] = a.model_copy(update={"model": "scripted:weak", "cascade": cascade})
        return rt, weak, strong

    rt, weak, strong = runtime(["scripted:strong"])
    res = run_question(rt, "Sum?", planner_model="scripted:p", executor_model="scripted:weak")
    assert res.outcome == "done" and "the column qty is missing" in strong.calls[0].messages[0].content[0].text
    rec = next(s for s in load_snapshot(rt.git, res.task_id).steps if s.role == "executor")
    assert rec.cascade[0].status == "failed" and "qty is missing" in rec.cascade[0].error

    rt, weak, strong = runtime(["scripted:strong"])
    res = run_question(rt, "Sum?", planner_model="scripted:p", executor_model="scripted:weak", budget=Budget(max_usd=0.000001))
    assert strong.calls == [] and weak.calls  # the budget was gone after the first model
    rec = next(s for s in load_snapshot(rt.git, res.task_id).steps if s.role == "executor")
    assert len(rec.cascade) == 1 and "budget" in (rec.error or "")

    rt, weak, strong = runtime(["anthropc:claude-opus"])  # a typo: no such provider
    res = run_question(rt, "Sum?", planner_model="scripted:p", executor_model="scripted:weak")
    assert weak.calls == [] and res.outcome != "done"


def _start_with(repo: Path, script: dict, budget: Budget, workers: int = 3, model: ScriptedModel | None = None):
    """_start with a budget: (engine, runtime, model, first job)."""
    model = model or ScriptedModel(script)
    cfg = AgentConfig()
    cfg.sandbox.backend = "subprocess"
    cfg.workers = workers
    rt = make_runtime(repo, config=cfg, reporter=RecordingReporter(), models={"scripted:t": model})
    engine = Engine(rt)
    job = engine.start(
        "How much is the sum of numbers.txt?",
        base_ref="main",
        base_sha=git(repo, "rev-parse", "main").strip(),
        models=TaskModels(planner="scripted:t", executor="scripted:t"),
        budget=budget,
    )
    return engine, rt, model, job


def test_a_task_past_its_wall_time_stops_at_its_next_step_with_outcome_budget(repo):
    import time

    from gitops_agent.app.local import result_of

    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}],
    }
    engine, rt, model, job = _start_with(repo, script, Budget(max_wall_seconds=1))
    time.sleep(1.2)  # more than the 1 s of max_wall_seconds
    nxt = engine.handle(job)
    assert [j.step for j in nxt] == ["finish"] and "budget exceeded: wall seconds" in (nxt[0].reason or "")
    assert model.calls == [], "no model is asked once the wall time is spent"
    engine.handle(nxt[0])
    res = result_of(rt, job.task)
    assert res.outcome == "budget" and "wall seconds" in (res.reason or "") and "of 1" in (res.reason or "")


def test_the_hop_limit_allows_exactly_max_hops_dispatches_and_ends_the_task_after(repo):
    """Each dispatch carries its hop count; a job past max_hops (a loop of dispatches) ends the
    task, reported, without asking a model."""
    from gitops_agent.app.local import result_of

    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}],
    }
    engine, rt, model, job = _start_with(repo, script, Budget(max_hops=3))
    nxt = engine.handle(job.model_copy(update={"hop": 4}))
    assert [j.step for j in nxt] == ["finish"] and nxt[0].reason == "budget exceeded: hops 4 of 3"
    assert model.calls == []
    engine.handle(nxt[0])
    res = result_of(rt, job.task)
    assert res.outcome == "budget" and "budget exceeded: hops 4 of 3" in res.report
    # at the limit itself the step still runs
    engine, rt, model, job = _start_with(repo, script, Budget(max_hops=3))
    nxt = engine.handle(job.model_copy(update={"hop": 3}))
    assert [(j.step, j.node) for j in nxt] == [("execute", "n1")] and len(model.calls) == 1


def test_a_plan_step_while_every_worker_is_busy_dispatches_nothing_more(repo):
    """workers=1 and n1 running: a follow-up instruction makes the planner revise the plan, but the
    ready node n2 waits for the worker; it is dispatched once n1 is done."""
    from gitops_agent.steps.intake import add_instruction

    two = plan(node("n1"), node("n2"))
    script = {
        "planner": [two, {"when": "running", **two}, two, FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "N1"}}],
        "executor:n2": [{"tool": "finish_step", "input": {"status": "done", "result": "N2"}}],
    }
    engine, rt, model, job = _start_with(repo, script, Budget(), workers=1)
    [ex1] = engine.handle(job)
    assert (ex1.step, ex1.node) == ("execute", "n1")
    follow = add_instruction(rt, job.task, "also say which is larger")
    assert engine.handle(follow) == [], "the one worker is busy with n1"
    assert sum(c.meta.get("role") == "planner" for c in model.calls) == 2  # the planner did take the instruction in
    snap = load_snapshot(rt.git, job.task)
    assert snap.plan.get("n1").status.value == "running" and snap.plan.get("n2").status.value == "pending"
    assert commits(repo, job.branch)[0]["subject"].endswith("wait for n1")
    [plan_job] = engine.handle(ex1)
    assert [(j.step, j.node) for j in engine.handle(plan_job)] == [("execute", "n2")]


def test_an_early_plan_dispatch_while_a_node_runs_asks_no_model_and_commits_nothing(repo):
    """A duplicate or early plan job (nothing new: no result, no instruction, no edit) while an
    executor still runs is a no-op: the planner model is not paid for, the branch does not move."""
    two = plan(node("a"), node("b"))
    script = {
        "planner": [two, {"when": "running", **two}, FINISH],
        "executor:a": [{"tool": "finish_step", "input": {"status": "done", "result": "A"}}],
        "executor:b": [{"tool": "finish_step", "input": {"status": "done", "result": "B"}}],
    }
    engine, rt, model, job = _start(repo, script)
    jobs = engine.handle(job)
    assert sorted(j.node for j in jobs) == ["a", "b"]
    tip, calls = git(repo, "rev-parse", job.branch), len(model.calls)
    assert engine.handle(Job(step="plan", task=job.task, branch=job.branch, hop=1)) == []
    assert len(model.calls) == calls and git(repo, "rev-parse", job.branch) == tip
    assert any(k == "skip" and "executors still running" in f.get("why", "") for k, f in rt.reporter.events)


def test_an_executor_model_that_can_never_answer_ends_the_task_without_asking_the_planner_again(repo):
    """A fatal error of the executor's model (an unknown model, a spent account) ends the task
    with that error; the planner is not asked to carry on with a model that cannot answer."""
    from gitops_agent.core.errors import FatalModelError

    class NoSuchExecutor(ScriptedModel):
        def query(self, request):
            if request.meta.get("role") == "executor":
                self.calls.append(request)
                raise FatalModelError("404 not_found_error: model: claude-haiku-9-9", status=404)
            return super().query(request)

    script = {
        "planner": [plan(node("n1")), FINISH],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "55"}}],
    }
    res, rt, model, _ = run(repo, script, model=NoSuchExecutor(script))
    assert res.outcome == "error" and "not retryable" in (res.reason or "") and "not_found_error" in (res.reason or "")
    assert [c.meta.get("role") for c in model.calls] == ["planner", "executor"], "one plan, one executor call, nothing after"
    snap = load_snapshot(rt.git, res.task_id)
    assert [s.role for s in snap.steps] == ["planner", "executor", "finish"]
    assert snap.latest_step_for("n1").status == "failed" and "not_found_error" in res.report
