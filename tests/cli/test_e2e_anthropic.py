"""End to end, as a user runs it: `gitops-agent run` in a repository with a CSV, the model
behind ANTHROPIC_BASE_URL (a local server speaking the Messages API, JSON and SSE), two
dependent nodes, everything committed on the task branch; then a kill -9 and --resume."""

from __future__ import annotations

import json
import os
import re
import signal
import threading

import pytest

from gitops_agent.sandbox.workbench import ensure_workbench
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import commits, git, run_cli, task_branch
from tests.helpers import make_sales_repo as make_repo
from tests.helpers import make_sales_responder as make_responder

pytestmark = pytest.mark.slow


def test_run_answers_with_two_dependent_nodes_over_the_messages_api(tmp_path):
    repo, top, value = make_repo(tmp_path)
    with FakeAnthropic(api_key="sk-ant-test-key-123456", responder=make_responder(), min_cache_tokens=0) as server:
        p = run_cli(
            repo,
            server.url,
            "--planner-model",
            "anthropic:claude-sonnet-4-6",
            "--executor-model",
            "anthropic:claude-haiku-4-5",
            "Who is our top customer by revenue?",
        )
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        usage = server.total_usage()
        bodies = [r.body for r in server.requests if r.path.startswith("/v1/messages")]

    # the answer, with the number really computed, on stdout
    assert f"**{top}**" in out and f"{value:.2f}" in out
    # each executor is told what its code can import: the workbench's packages, with versions
    wb = ensure_workbench()
    executors = [json.dumps(b.get("system")) for b in bodies if "an executor of gitops-agent" in json.dumps(b.get("system"))]
    assert executors and all(f"pandas {wb.packages['pandas']}, numpy {wb.packages['numpy']}" in s for s in executors)
    # brain tools: tabular, and the warehouse client for its source `files` (the repository has a
    # CSV file; no database is declared, so no other source is named)
    assert all("import tabular" in s and "import warehouse" in s for s in executors)
    assert all("- `files`: " in s and "`'data/sales.csv'`" in s and "- `shop`" not in s for s in executors)

    branch = task_branch(repo)
    task_id = branch.removeprefix("agent/task/")
    root = f".agent/tasks/{task_id}"
    files = git(repo, "ls-tree", "-r", "--name-only", branch).split()
    plan = json.loads(git(repo, "show", f"{branch}:{root}/plan.json"))
    assert [n["status"] for n in plan["nodes"]] == ["done", "done"]
    assert plan["finish"]["outcome"] == "done"
    for f in ("task.json", "plan.json", "report.md"):
        assert f"{root}/{f}" in files
    step_files = [f for f in files if f.startswith(f"{root}/steps/")]
    assert any(re.search(r"steps/\d{4}-n1/result\.md$", f) for f in step_files)
    assert any(re.search(r"steps/\d{4}-n1/revenue\.csv$", f) for f in step_files)  # a produced file, committed
    assert any(re.search(r"steps/\d{4}-n2/turns\.jsonl$", f) for f in step_files)
    report = git(repo, "show", f"{branch}:{root}/report.md")
    assert top in report and f"{value:.2f}" in report

    # every agent commit carries the trailers; the user's branch and checkout are untouched
    agent_commits = [c for c in commits(repo, branch) if c["subject"].startswith("agent(")]
    assert len(agent_commits) >= 6  # intake, plan, n1, plan, n2, plan(finish), finish
    for c in agent_commits:
        assert c["trailers"]["Agent-Task"] == task_id and c["trailers"]["Agent-Step"].isdigit() and c["trailers"]["Agent-Role"]
    for c in agent_commits:
        if c["trailers"]["Agent-Role"] in ("planner", "executor"):
            assert re.fullmatch(r"in=\d+ out=\d+ cache_read=\d+ cache_write=\d+", c["trailers"]["Agent-Usage"])
            assert float(c["trailers"]["Agent-Cost-USD"]) > 0
    roles = {c["trailers"]["Agent-Model"] for c in agent_commits if c["trailers"]["Agent-Role"] == "executor"}
    assert roles == {"claude-haiku-4-5"}
    assert git(repo, "status", "--porcelain") == "" and git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"

    # the ledger on the branch equals what the server billed
    steps = [json.loads(git(repo, "show", f"{branch}:{f}")) for f in step_files if f.endswith("/step.json")]
    assert sum(s["usage"]["input_tokens"] for s in steps) == usage["input_tokens"]
    assert sum(s["usage"]["output_tokens"] for s in steps) == usage["output_tokens"]
    assert sum(s["usage"]["cache_read_tokens"] for s in steps) == usage["cache_read_input_tokens"]

    # prompt caching on the stable prefix; streaming for the planner's long outputs
    assert all("cache_control" in b["system"][-1] for b in bodies)
    assert all(not any("cache_control" in t for t in b["tools"]) for b in bodies)  # the system breakpoint covers them
    executor_bodies = [b for b in bodies if "You are the planner" not in b["system"][0]["text"]]
    assert any(
        sum("cache_control" in blk for m in b["messages"] if isinstance(m["content"], list) for blk in m["content"]) == 2
        for b in executor_bodies
    )  # the node prompt and the conversation so far
    assert any(b.get("stream") for b in bodies) and any(not b.get("stream") for b in bodies)
    assert usage["cache_read_input_tokens"] > 0


def test_kill_during_a_model_call_then_resume_redoes_nothing_finished(tmp_path):
    repo, top, value = make_repo(tmp_path)
    hold, seen = threading.Event(), threading.Event()
    responder = make_responder(hold_n2=hold, n2_seen=seen)
    with FakeAnthropic(api_key="sk-ant-test-key-123456", responder=responder, min_cache_tokens=0) as server:
        p = run_cli(repo, server.url, "--model", "anthropic:claude-haiku-4-5", "Who is our top customer by revenue?")
        assert seen.wait(60), p.communicate(timeout=5)
        os.killpg(p.pid, signal.SIGKILL)  # kill -9 while the n2 model call is in flight
        p.wait(10)
        hold.set()
        branch = task_branch(repo)
        before = commits(repo, branch)
        assert not any(c["trailers"].get("Agent-Role") == "finish" for c in before)
        n1_calls = responder.calls["executor:n1"]

        task_id = branch.removeprefix("agent/task/")
        responder.handlers["executor:n2"] = make_responder().handlers["executor:n2"]
        responder.calls["executor:n2"] = 0
        r = run_cli(repo, server.url, "--resume", task_id)
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
        assert responder.calls["executor:n1"] == n1_calls  # n1 was not asked again

    after = commits(repo, branch)
    assert [c["sha"] for c in after[-len(before) :]] == [c["sha"] for c in before]  # history kept, nothing rewritten
    n1_commits = [c for c in after if c["trailers"].get("Agent-Node") == "n1"]
    assert len(n1_commits) == 1
    assert f"**{top}**" in out and f"{value:.2f}" in out
    assert list((repo / ".git" / "gitops-agent" / "checkouts").iterdir()) == []  # the killed run's checkout is gone
