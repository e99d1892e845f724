"""`fork <task-id> --at <step> "instruction"`: a new task branch from the old task's step
commit; done nodes keep their results (copied step folders), the old branch is untouched, and
the planner re-plans from there with the new instruction."""

from __future__ import annotations

import json

from gitops_agent.core.state import task_dir
from gitops_agent.git.repo import GitRepo
from gitops_agent.memory.store import MemoryStore
from gitops_agent.models.scripted import ScriptedModel
from tests.memory.helpers import cli, finish, git, make_repo, node, plan, run_task, runtime

N1 = node("n1", title="Load amounts", goal="Print the amounts of data/orders.csv.")
N2 = node("n2", ["n1"], title="Average amount", goal="Average of the amounts.")
N2_MEDIAN = node("n2", ["n1"], title="Median amount", goal="Median of the amounts.")
CODE_N1 = "import csv\nprint([float(r['amount']) for r in csv.DictReader(open('data/orders.csv'))])"
CODE_AVG = "print('MEAN', (10 + 20 + 30) / 3)"
CODE_MEDIAN = "import statistics\nprint('MEDIAN', statistics.median([10, 20, 30, 40]))"


def original() -> dict:
    return {
        "planner": [plan(N1, N2), plan(N1, N2), finish("The mean is {{ results.n2 }}", "mean")],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": CODE_N1}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
        "executor:n2": [
            {"tool": "run_python", "input": {"code": CODE_AVG}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
    }


def test_fork_at_a_step_keeps_done_work_and_replans_with_the_new_instruction(tmp_path):
    repo = make_repo(tmp_path)
    res, *_ = run_task(repo, original(), "What is the typical order amount?", task_id="5-typical")
    assert res.outcome == "done" and "MEAN 20.0" in res.answer
    old_tip = git(repo, "rev-parse", res.branch).strip()
    steps = {
        c.trailers["Agent-Step"]: c.sha for c in GitRepo(repo).log(res.branch) if c.trailers.get("Agent-Task") == "5-typical"
    }
    assert sorted(map(int, steps)) == [1, 2, 3, 4, 5, 6, 7]

    fork_model = ScriptedModel(
        {
            "planner": [
                plan(N1, N2_MEDIAN, note="the instruction asks for the median"),
                finish("The median is {{ results.n2 }} (forked)", "median"),
            ],
            "executor:n2": [
                {"tool": "run_python", "input": {"code": CODE_MEDIAN}},
                {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
            ],
        }
    )
    rt, rep = runtime(repo, fork_model)
    from gitops_agent.app.fork import run_fork

    out = run_fork(rt, "5-typical", 4, "Use the median instead of the mean.")
    assert out.outcome == "done", out.reason
    assert out.task_id == "5-typical-fork4" and "MEDIAN 25" in out.answer
    # the old branch did not move; the new one starts at its step-4 commit
    assert git(repo, "rev-parse", res.branch).strip() == old_tip
    assert git(repo, "merge-base", res.branch, out.branch).strip() == steps["4"]
    # task.json: same question, the new instruction, a fork with its parent
    new_root, old_root = task_dir(out.task_id), task_dir("5-typical")
    task = json.loads(git(repo, "show", f"{out.branch}:{new_root}/task.json"))
    assert task["question"] == "What is the typical order amount?" and task["instructions"] == [
        "Use the median instead of the mean."
    ]
    assert task["source"]["kind"] == "fork" and task["parent"] == {"task_id": "5-typical", "step": 4, "commit": steps["4"]}
    # n1 was not redone: its result was carried over (same blob), n2 re-ran under the new plan
    assert not any(c.meta.get("node") == "n1" for c in fork_model.calls)
    plan_json = json.loads(git(repo, "show", f"{out.branch}:{new_root}/plan.json"))
    n1 = next(n for n in plan_json["nodes"] if n["id"] == "n1")
    assert n1["status"] == "done" and n1["result"] == "steps/0003-n1/result.md" and n1["step"] == 3
    assert git(repo, "rev-parse", f"{out.branch}:{new_root}/steps/0003-n1/result.md") == git(
        repo, "rev-parse", f"{res.branch}:{old_root}/steps/0003-n1/result.md"
    )
    n2 = next(n for n in plan_json["nodes"] if n["id"] == "n2")
    assert n2["title"] == "Median amount" and n2["status"] == "done" and n2["step"] == 6
    # the planner saw the inherited result and the instruction
    first = fork_model.calls[0]
    text = "\n".join(b.text for m in first.messages for b in m.content if hasattr(b, "text"))
    assert "Use the median instead of the mean." in text and "[10.0, 20.0, 30.0]" in text
    # the old task's folder stays as it was at step 4 (no report there); the fork has its own report
    files = git(repo, "ls-tree", "-r", "--name-only", out.branch).split()
    assert f"{old_root}/report.md" not in files and f"{new_root}/report.md" in files
    # intake-like commit of the fork, and an experience that says where it came from
    intake = GitRepo(repo).find_commit(out.branch, {"Agent-Task": out.task_id, "Agent-Role": "intake"})
    assert intake is not None and intake.parents == [steps["4"]]
    assert (
        intake.subject == "agent(fork): 5-typical at step 4: Use the median instead of the mean."
        and intake.trailers["Agent-Fork"] == "5-typical@4"
    )
    exp = MemoryStore.open(GitRepo(repo)).get(out.task_id)
    assert exp is not None and exp.parent == "5-typical@4" and exp.instructions == ["Use the median instead of the mean."]
    # the trace of the fork shows the inherited steps with their commits, and its ledger holds
    from gitops_agent.observe.trace_build import build_trace

    tr = build_trace(GitRepo(repo), out.task_id)
    assert tr.ledger_consistent, tr.ledger.problems
    assert tr.step(3).commit is not None and tr.step(3).commit.sha in (c.sha for c in GitRepo(repo).log(res.branch))


def test_fork_after_the_finish_and_the_cli(tmp_path):
    repo = make_repo(tmp_path)
    res, *_ = run_task(repo, original(), "What is the typical order amount?", task_id="6-typical")
    r = cli("fork", "6-typical", "--at", "99", "--repo", str(repo))
    assert r.returncode == 1 and "has no commit for step 99; its steps are: 1, 2, 3, 4, 5, 6, 7" in r.stderr
    r = cli("fork", "nope", "--at", "2", "--repo", str(repo))
    assert r.returncode == 1 and "no task branch" in r.stderr
    r = cli("fork", "6-typical", "--at", "7", "Also give the median.", "--no-run", "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    assert "as 6-typical-fork7" in r.stdout and "run --repo" in r.stdout
    plan_json = json.loads(git(repo, "show", f"agent/task/6-typical-fork7:{task_dir('6-typical-fork7')}/plan.json"))
    assert plan_json["finish"] is None and {n["status"] for n in plan_json["nodes"]} == {"done"}
    task = json.loads(git(repo, "show", f"agent/task/6-typical-fork7:{task_dir('6-typical-fork7')}/task.json"))
    assert task["budget"]["max_steps"] == 40 + 5  # the old task's allowance plus its 5 model steps
    # a second fork at the same step gets its own id; both sit side by side
    r = cli("fork", "6-typical", "--at", "7", "--no-run", "--repo", str(repo))
    assert r.returncode == 0 and "as 6-typical-fork7-2" in r.stdout
    branches = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split()
    assert branches == ["agent/task/6-typical", "agent/task/6-typical-fork7", "agent/task/6-typical-fork7-2"]
