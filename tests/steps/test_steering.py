"""A person steers the plan: plan.json edited on the task branch (a done node set back to pending,
a node added, a goal changed) is taken up by `run --resume`: exactly those nodes and what depends
on them run again, untouched done nodes keep their results; an edit that cannot stand is refused
naming the file, the node and the field, and nothing runs."""

from __future__ import annotations

import json

import yaml

from tests.helpers import agent_command, commits, git, make_repo

NODES = [
    {"id": "a", "title": "Count", "goal": "count the numbers"},
    {"id": "b", "title": "Sum", "goal": "sum what a counted", "depends_on": ["a"]},
    {"id": "c", "title": "Max", "goal": "the largest number"},
]


def _script(tmp_path, extra_nodes=(), nodes=None):
    nodes = (NODES if nodes is None else nodes) + list(extra_nodes)
    step = {"tool": "finish_step", "input": {"result": "result of {{ node }}", "status": "done"}}
    script = {
        "planner": [
            {"when": "'b' not in results or results|length < %d" % len(nodes), "tool": "update_plan", "input": {"nodes": nodes}}
        ]
        * 12
        + [{"tool": "finish", "input": {"answer": "All done.", "summary": "done"}}] * 4,
        "executor": [step] * 20,
    }
    path = tmp_path / "script.yaml"
    path.write_text(yaml.safe_dump(script))
    return f"scripted:{path}"


def _executed(repo, branch, since=None):
    out = []
    for c in commits(repo, branch):
        if since and c["sha"] == since:
            break
        if c["trailers"].get("Agent-Role") == "executor":
            out.append(c["trailers"]["Agent-Node"])
    return sorted(out)


def _edit_plan(tmp_path, repo, branch, change):
    tid = branch.removeprefix("agent/task/")
    wt = tmp_path / "edit"
    git(repo, "worktree", "add", "-q", str(wt), branch)
    path = wt / ".agent" / "tasks" / tid / "plan.json"
    plan = json.loads(path.read_text())
    change(plan)
    path.write_text(json.dumps(plan, indent=2))
    git(wt, "commit", "-qam", "a person edits the plan")
    git(repo, "worktree", "remove", "--force", str(wt))
    return git(repo, "rev-parse", branch).strip()


def _task(tmp_path):
    repo = make_repo(tmp_path)
    r = agent_command(
        "run",
        "--repo",
        str(repo),
        "--model",
        _script(tmp_path, [{"id": "d", "title": "Mean", "goal": "the mean", "depends_on": ["b"]}]),
        "Numbers?",
    )
    assert r.returncode == 0, r.stderr
    branch = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").strip()
    assert _executed(repo, branch) == ["a", "b", "c", "d"]
    return repo, branch


def test_a_done_node_set_back_to_pending_and_a_new_node_run_with_their_dependents(tmp_path):
    repo, branch = _task(tmp_path)

    def change(plan):
        nodes = {n["id"]: n for n in plan["nodes"]}
        nodes["b"]["status"] = "pending"  # redo b (and d, which depends on it)
        plan["nodes"].append({"id": "e", "title": "Min", "goal": "the smallest number"})  # a new node

    edited = _edit_plan(tmp_path, repo, branch, change)
    r = agent_command(
        "run",
        "--repo",
        str(repo),
        "--model",
        _script(
            tmp_path,
            [
                {"id": "d", "title": "Mean", "goal": "the mean", "depends_on": ["b"]},
                {"id": "e", "title": "Min", "goal": "the smallest number"},
            ],
        ),
        "--resume",
        branch.removeprefix("agent/task/"),
    )
    assert r.returncode == 0, r.stderr
    assert _executed(repo, branch, since=edited) == ["b", "d", "e"], "exactly the changed, the new and their dependents"
    tid = branch.removeprefix("agent/task/")
    plan = json.loads(git(repo, "show", f"{branch}:.agent/tasks/{tid}/plan.json"))
    steps = {n["id"]: n["step"] for n in plan["nodes"]}
    before = json.loads(git(repo, "show", f"{edited}~1:.agent/tasks/{tid}/plan.json"))
    old = {n["id"]: n["step"] for n in before["nodes"]}
    assert steps["a"] == old["a"] and steps["c"] == old["c"], "untouched done nodes keep their results"
    assert all(n["status"] == "done" for n in plan["nodes"])
    # the round after the edit: the plan step that took it up asked no model (the person said what to run)
    after = [c for c in commits(repo, f"{edited}..{branch}") if c["trailers"].get("Agent-Role") == "planner"]
    steer = after[-1]  # the oldest after the edit
    assert "dispatch b, e" in steer["subject"], steer["subject"]
    assert (
        steer["trailers"].get("Agent-Usage", "in=0 out=0").startswith("in=0 out=0")
        and float(steer["trailers"]["Agent-Cost-USD"]) == 0
    )
    report = git(repo, "show", f"{branch}:.agent/tasks/{tid}/report.md")
    assert "### e" in report
    rounds = report.split("## Rounds", 1)[1].split("##", 1)[0]
    assert "| 0 | the question |" in rounds
    assert "| 1 | a person's edit of plan.json | b, e, d |" in rounds, rounds


def test_an_edit_that_cannot_stand_runs_nothing_and_names_the_node(tmp_path):
    repo, branch = _task(tmp_path)
    tid = branch.removeprefix("agent/task/")
    edited = _edit_plan(tmp_path, repo, branch, lambda plan: plan["nodes"].append({"id": "e", "title": "Min", "status": "done"}))
    r = agent_command("run", "--repo", str(repo), "--model", _script(tmp_path), "--resume", tid)
    assert r.returncode != 0
    assert f".agent/tasks/{tid}/plan.json" in r.stderr and "'e'" in r.stderr and "status" in r.stderr
    assert git(repo, "rev-parse", branch).strip() == edited, "nothing ran, nothing was committed"
    # a plan.json that is not valid at all: named with the field
    bad = _edit_plan(tmp_path, repo, branch, lambda plan: plan["nodes"][0].update(depends_on="nope"))
    r = agent_command("run", "--repo", str(repo), "--model", _script(tmp_path), "--resume", tid)
    assert r.returncode != 0 and "plan.json" in r.stderr and "depends_on" in r.stderr
    assert git(repo, "rev-parse", branch).strip() == bad


def test_a_new_node_for_an_agent_that_does_not_exist_is_refused(tmp_path):
    repo, branch = _task(tmp_path)
    tid = branch.removeprefix("agent/task/")
    edited = _edit_plan(
        tmp_path, repo, branch, lambda plan: plan["nodes"].append({"id": "e", "title": "Min", "agent": "root-shell"})
    )
    r = agent_command("run", "--repo", str(repo), "--model", _script(tmp_path), "--resume", tid)
    assert r.returncode != 0 and "'e'" in r.stderr and "root-shell" in r.stderr and "plan.json" in r.stderr
    assert git(repo, "rev-parse", branch).strip() == edited


MEAN = {"id": "d", "title": "Mean", "goal": "the mean", "depends_on": ["b"]}


def test_a_done_nodes_goal_changed_by_a_person_runs_it_again_with_its_dependents(tmp_path):
    repo, branch = _task(tmp_path)
    tid = branch.removeprefix("agent/task/")
    goal = "sum what a counted, twice"
    edited = _edit_plan(tmp_path, repo, branch, lambda plan: next(n for n in plan["nodes"] if n["id"] == "b").update(goal=goal))
    nodes = [dict(n, goal=goal) if n["id"] == "b" else n for n in NODES]
    r = agent_command("run", "--repo", str(repo), "--model", _script(tmp_path, [MEAN], nodes=nodes), "--resume", tid)
    assert r.returncode == 0, r.stderr
    assert _executed(repo, branch, since=edited) == ["b", "d"], "the changed node and what depends on it, nothing else"
    plan = json.loads(git(repo, "show", f"{branch}:.agent/tasks/{tid}/plan.json"))
    assert next(n for n in plan["nodes"] if n["id"] == "b")["goal"] == goal and all(n["status"] == "done" for n in plan["nodes"])
    report = git(repo, "show", f"{branch}:.agent/tasks/{tid}/report.md")
    assert "| 1 | a person's edit of plan.json | b, d |" in report


def test_removing_a_done_node_is_refused_naming_it_and_nothing_runs(tmp_path):
    repo, branch = _task(tmp_path)
    tid = branch.removeprefix("agent/task/")
    edited = _edit_plan(tmp_path, repo, branch, lambda plan: plan.update(nodes=[n for n in plan["nodes"] if n["id"] != "c"]))
    r = agent_command("run", "--repo", str(repo), "--model", _script(tmp_path, [MEAN]), "--resume", tid)
    assert r.returncode != 0
    assert (
        f".agent/tasks/{tid}/plan.json" in r.stderr and "'c' (done) was removed" in r.stderr and "only pending nodes" in r.stderr
    )
    assert git(repo, "rev-parse", branch).strip() == edited, "nothing ran, nothing was committed"


def test_a_pending_node_set_to_failed_by_a_person_is_refused_naming_it(tmp_path):
    """Only the agent sets done, failed or running; a person sets a node to pending to run it
    again. A task stopped by its budget after the first plan has pending nodes to edit."""
    repo = make_repo(tmp_path)
    r = agent_command("run", "--repo", str(repo), "--model", _script(tmp_path, [MEAN]), "--max-steps", "1", "Numbers?")
    branch = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").strip()
    tid = branch.removeprefix("agent/task/")
    assert "budget" in (r.stdout + r.stderr) and _executed(repo, branch) == []
    plan = json.loads(git(repo, "show", f"{branch}:.agent/tasks/{tid}/plan.json"))
    assert {n["id"]: n["status"] for n in plan["nodes"]}["b"] == "pending"
    edited = _edit_plan(
        tmp_path, repo, branch, lambda plan: next(n for n in plan["nodes"] if n["id"] == "b").update(status="failed")
    )
    r = agent_command("run", "--repo", str(repo), "--model", _script(tmp_path, [MEAN]), "--resume", tid)
    assert r.returncode != 0
    assert (
        f".agent/tasks/{tid}/plan.json" in r.stderr and "'b'" in r.stderr and "'failed'" in r.stderr and "'pending'" in r.stderr
    )
    assert git(repo, "rev-parse", branch).strip() == edited, "nothing ran, nothing was committed"


def test_running_a_node_again_leaves_a_node_that_is_still_running_alone():
    """`/agent retry a c` (or a person's edit) while a runs: a keeps its running step (it must not
    run twice); c, done, and what depends on the retried nodes go back to pending."""
    from gitops_agent.core.plan import Plan, PlanNode
    from gitops_agent.core.plan_edits import redo

    plan = Plan(
        version=3,
        goal="g",
        nodes=[
            PlanNode(id="a", title="A", goal="a", status="running", step=7),
            PlanNode(id="b", title="B", goal="b", depends_on=["a"]),
            PlanNode(id="c", title="C", goal="c", status="done", step=5, result="steps/0005-c/result.md"),
            PlanNode(id="e", title="E", goal="e", depends_on=["c"], status="done", step=6, result="steps/0006-e/result.md"),
        ],
    )
    assert redo(plan, ["a", "c"]) == ["c", "e"]
    a = plan.get("a")
    assert a.status.value == "running" and a.step == 7
    assert [(n.id, n.status.value, n.step) for n in plan.walk()][1:] == [
        ("b", "pending", None),
        ("c", "pending", None),
        ("e", "pending", None),
    ]


def test_resuming_from_a_checkout_of_the_task_branch_stops_before_anything_runs(tmp_path):
    """Issue 23: the natural way to edit plan.json is to check the task branch out; a resume from
    there said "outcome done" with the old answer and exit 0, and nothing ran."""
    repo, branch = _task(tmp_path)
    tid = branch.removeprefix("agent/task/")
    git(repo, "checkout", "-q", branch)
    path = repo / ".agent" / "tasks" / tid / "plan.json"
    plan = json.loads(path.read_text())
    next(n for n in plan["nodes"] if n["id"] == "b")["status"] = "pending"
    path.write_text(json.dumps(plan, indent=2))
    git(repo, "commit", "-qam", "redo b")
    edited = git(repo, "rev-parse", branch).strip()
    script = _script(tmp_path, [{"id": "d", "title": "Mean", "goal": "the mean", "depends_on": ["b"]}])

    r = agent_command("run", "--model", script, "--resume", tid, cwd=repo)
    assert r.returncode == 1, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr  # one error, not a step error, then another, then the old answer
    assert f"{branch} is checked out" in lines[0] and "git switch -" in lines[0]
    assert r.stdout == "" and "outcome" not in r.stderr
    assert git(repo, "rev-parse", branch).strip() == edited, "nothing ran, nothing was committed"
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == branch and git(repo, "status", "--porcelain") == ""

    git(repo, "switch", "-q", "-")  # as the message says: then the same resume does the work
    r = agent_command("run", "--model", script, "--resume", tid, cwd=repo)
    assert r.returncode == 0, r.stderr
    assert _executed(repo, branch, since=edited) == ["b", "d"]
