"""The memory branch as finish writes it and the planner reads it: one experience per task,
lessons from `finish`, the top-k shown to the next planner and recorded in memory.json, cited
in the report; memory failures never fail a task."""

from __future__ import annotations

import json

from gitops_agent.app.local import make_demo_repo, make_runtime, resume, run_question
from gitops_agent.core.state import task_dir
from gitops_agent.memory.experience import MEMORY_BRANCH
from gitops_agent.memory.store import MemoryStore
from gitops_agent.models.scripted import ScriptedModel
from gitops_agent.observe.progress import RecordingReporter
from tests.memory.helpers import config, experience, finish, git, make_repo, node, plan, run_task, step_done

LESSONS = ["Amounts can be text; parse them with a fallback.", "Sum per region in one pass."]


def first_script() -> dict:
    return {
        "planner": [plan(node("n1", title="Sum amounts per region")), finish("East leads with 40 (n1).", "East leads", LESSONS)],
        "executor:n1": [
            {
                "tool": "run_python",
                "input": {
                    "code": "import csv\nrows=list(csv.DictReader(open('data/orders.csv')))\n"
                    "print(sum(float(r['amount']) for r in rows if r['region']=='East'))"
                },
            },
            step_done(),
        ],
    }


def test_finish_adds_one_experience_with_plan_outcome_lessons_and_cost(tmp_path):
    repo = make_demo_repo(tmp_path / "demo")
    rt = make_runtime(repo, config=config(), reporter=RecordingReporter())
    res = run_question(
        rt, "What is the average order value per region?", planner_model="scripted:demo", executor_model="scripted:demo"
    )
    assert res.outcome == "done"
    files = git(repo, "ls-tree", "-r", "--name-only", MEMORY_BRANCH).split()
    assert files == [f"experiences/{res.task_id}.json"]
    exp = json.loads(git(repo, "show", f"{MEMORY_BRANCH}:experiences/{res.task_id}.json"))
    assert exp["schema"] == 1 and exp["task_id"] == res.task_id and exp["branch"] == res.branch
    assert exp["outcome"] == "done" and exp["question"].startswith("What is the average order value")
    assert [(o["id"], o["status"]) for o in exp["outline"]] == [("n1", "done"), ("n2", "done"), ("n3", "done")]
    assert len(exp["lessons"]) == 2 and "non-numeric" in exp["lessons"][0]  # from the demo script's finish
    assert exp["summary"].startswith("Average order value per region") and "East" in exp["answer"] and len(exp["answer"]) <= 1500
    assert exp["tokens"] > 0 and exp["cost_usd"] == 0.0 and exp["reused"] == [] and exp["date"].endswith("Z")
    # plan.json keeps the lessons too; the memory commit says whose experience it is
    plan_json = json.loads(git(repo, "show", f"{res.branch}:{task_dir(res.task_id)}/plan.json"))
    assert plan_json["finish"]["lessons"] == exp["lessons"]
    trailers = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", MEMORY_BRANCH)
    assert f"Agent-Task: {res.task_id}" in trailers and "Agent-Role: memory" in trailers
    # the memory branch is an orphan: no commit of the user's history in it
    assert git(repo, "merge-base", "main", MEMORY_BRANCH, check=False).strip() == ""


def test_the_next_planner_sees_similar_experiences_cites_them_and_the_report_lists_them(tmp_path):
    repo = make_repo(tmp_path)
    first, *_ = run_task(repo, first_script(), "Which region has the highest total order amount?", task_id="1-region-totals")
    assert first.outcome == "done"
    # unrelated noise in memory
    store = MemoryStore.open(make_runtime(repo, config=config()).git)
    store.add_experience(experience("0-flaky-ci", "Why are the CI builds flaky on Mondays?"))

    second = {
        "planner": [
            {
                "tool": "update_plan",
                "input": {
                    "note": "same approach as task {{ experiences[0] }}",
                    "nodes": [node("n1", title="Sum amounts per region")],
                },
            },
            finish("As in task {{ experiences[0] }}: East leads.", "East leads again", ["Reused the earlier plan."]),
        ],
        "executor:n1": [step_done("East 40")],
    }
    res, rt, model, _ = run_task(repo, second, "What is the total order amount for each region?", task_id="2-region-totals-again")
    assert res.outcome == "done"
    first_call = next(c for c in model.calls if c.meta["role"] == "planner")
    prompt = "\n".join(b.text for m in first_call.messages for b in m.content if hasattr(b, "text"))
    assert "1-region-totals" in prompt and "Reused" not in prompt
    assert "lesson: Amounts can be text" in prompt
    assert first_call.meta["experiences"][0] == "1-region-totals"
    assert "cite" in first_call.system  # the system prompt asks for citations
    # the later planner call sees the same experiences (stable prefix, and it can cite them)
    later = [c for c in model.calls if c.meta["role"] == "planner"][-1]
    assert later.meta["experiences"] == first_call.meta["experiences"]

    root = task_dir(res.task_id)
    files = git(repo, "ls-tree", "-r", "--name-only", res.branch, root).split()
    mem_files = [f for f in files if f.endswith("/memory.json")]
    assert mem_files == [f"{root}/steps/0002-_plan/memory.json"]
    rec = json.loads(git(repo, "show", f"{res.branch}:{mem_files[0]}"))
    assert rec["method"] == "bm25" and rec["k"] == 3 and rec["experiences"] == 2
    assert [e["task_id"] for e in rec["shown"]][0] == "1-region-totals" and rec["shown"][0]["score"] > 0
    assert rec["memory_tip"] == git(repo, "rev-parse", f"{MEMORY_BRANCH}~1").strip()  # before this task's own experience

    report = git(repo, "show", f"{res.branch}:{root}/report.md")
    assert "## From memory" in report and "`1-region-totals` (done, **cited**)" in report
    exp = store.get(res.task_id)
    assert exp is not None and exp.reused == ["1-region-totals"] and exp.lessons == ["Reused the earlier plan."]
    assert sorted(store.experience_files()) == ["0-flaky-ci", "1-region-totals", "2-region-totals-again"]
    # a task never retrieves itself
    assert res.task_id not in [e["task_id"] for e in rec["shown"]]


def test_a_memory_failure_is_reported_and_the_task_still_finishes(tmp_path, monkeypatch):
    repo = make_repo(tmp_path)

    def boom(self, exp):
        raise RuntimeError("disk full")

    monkeypatch.setattr(MemoryStore, "add_experience", boom)
    res, rt, _, rep = run_task(repo, first_script(), "Which region has the highest total?")
    assert res.outcome == "done" and "East" in res.answer
    errors = [f for k, f in rep.events if k == "error"]
    assert errors and errors[0]["step"] == "memory" and "disk full" in errors[0]["error"]
    # and a broken retrieval does not stop the planner either
    monkeypatch.setattr(MemoryStore, "index", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("index broken")))
    git(repo, "branch", MEMORY_BRANCH, "main")  # a memory branch exists, so the planner tries to retrieve
    res2, _, _, rep2 = run_task(repo, first_script(), "Which region has the highest total again?")
    assert res2.outcome == "done"
    assert any(k == "error" and "index broken" in f["error"] for k, f in rep2.events)


def test_memory_can_be_switched_off(tmp_path, monkeypatch):
    monkeypatch.setenv("GITOPS_AGENT_MEMORY", "off")
    repo = make_repo(tmp_path)
    res, *_ = run_task(repo, first_script(), "Which region has the highest total?")
    assert res.outcome == "done"
    assert git(repo, "rev-parse", "--verify", "-q", MEMORY_BRANCH, check=False).strip() == ""


def test_a_finish_killed_before_the_memory_write_adds_the_experience_on_resume(tmp_path, monkeypatch):
    repo = make_repo(tmp_path)
    monkeypatch.setattr(MemoryStore, "add_experience", lambda self, exp: None)  # the process died before writing
    res, *_ = run_task(repo, first_script(), "Which region has the highest total?", task_id="7-killed")
    assert res.outcome == "done"
    monkeypatch.undo()
    rt = make_runtime(repo, config=config(), reporter=RecordingReporter(), models={"scripted:t": ScriptedModel({})})
    from gitops_agent.core.seams import Job
    from gitops_agent.steps.engine import Engine

    Engine(rt).handle(Job(step="finish", task="7-killed", branch="agent/task/7-killed"))  # a duplicate finish dispatch
    assert "experiences/7-killed.json" in git(repo, "ls-tree", "-r", "--name-only", MEMORY_BRANCH)
    before = git(repo, "rev-parse", MEMORY_BRANCH)
    resume(rt, "7-killed")  # nothing to do, and no second write
    assert git(repo, "rev-parse", MEMORY_BRANCH) == before


def test_the_index_is_cached_per_memory_tip_and_reindex_rebuilds_it(tmp_path):
    repo = make_repo(tmp_path)
    store = MemoryStore.open(make_runtime(repo, config=config()).git)
    assert store.index().tip is None and store.search("anything") == []
    for i, q in enumerate(["average order value per region", "flaky CI builds on Mondays", "churn of monthly subscribers"]):
        store.add_experience(experience(f"{i}-t", q))
    assert not store.index().cached  # built for this tip, and saved
    fresh = MemoryStore.open(store.git)  # another process: reads the cache from disk
    idx = fresh.index()
    assert idx.cached and len(idx) == 3 and idx.tip == store.tip()
    assert fresh.search("which CI builds are flaky", k=1)[0].experience.task_id == "1-t"
    store.add_experience(experience("3-t", "flaky tests in the CI pipeline"))
    idx2 = MemoryStore.open(store.git).index()
    assert not idx2.cached and len(idx2) == 4  # a new tip: rebuilt
    assert not MemoryStore.open(store.git).reindex().cached
    cache = store.cache_dir / "memory-index"
    assert (cache / f"{idx2.tip}-bm25" / "done").exists()


def test_the_planner_is_shown_exactly_k_experiences_when_more_match(tmp_path):
    repo = make_repo(tmp_path)
    from gitops_agent.git.repo import GitRepo

    store = MemoryStore.open(GitRepo(repo))
    for tid, q in [
        ("1-aov", "average order value per region"),
        ("2-sum", "total order value per region last month"),
        ("3-max", "which region has the highest order value"),
        ("4-min", "region with the lowest average order"),
        ("5-cnt", "number of orders per region"),
    ]:
        store.add_experience(experience(tid, q))
    script = {"planner": [plan(node("n1")), finish("East.", "East")], "executor:n1": [step_done("East 40")]}
    res, rt, model, _ = run_task(repo, script, "What is the average order value for each region?", task_id="9-aov-again")
    assert res.outcome == "done"
    first_call = next(c for c in model.calls if c.meta["role"] == "planner")
    assert len(first_call.meta["experiences"]) == 3 and first_call.meta["experiences"][0] == "1-aov"
    root = task_dir(res.task_id)
    rec = json.loads(git(repo, "show", f"{res.branch}:{root}/steps/0002-_plan/memory.json"))
    assert rec["k"] == 3 and rec["experiences"] == 5 and [e["task_id"] for e in rec["shown"]] == first_call.meta["experiences"]


def test_a_task_is_never_shown_its_own_experience(tmp_path):
    """agent/memory already holds an experience under this task's own id (a task that stopped
    before its first plan, then continued): its planner is shown the others, never itself."""
    repo = make_repo(tmp_path)
    from gitops_agent.git.repo import GitRepo

    store = MemoryStore.open(GitRepo(repo))
    question = "What is the average order value for each region?"
    store.add_experience(experience("9-aov", question))  # the same task, the best match there is
    store.add_experience(experience("1-aov", "average order value per region"))
    script = {"planner": [plan(node("n1")), finish("East.", "East")], "executor:n1": [step_done("East 40")]}
    res, rt, model, _ = run_task(repo, script, question, task_id="9-aov")
    assert res.outcome == "done"
    first_call = next(c for c in model.calls if c.meta["role"] == "planner")
    assert first_call.meta["experiences"] == ["1-aov"]
    rec = json.loads(git(repo, "show", f"{res.branch}:{task_dir(res.task_id)}/steps/0002-_plan/memory.json"))
    assert [e["task_id"] for e in rec["shown"]] == ["1-aov"]
