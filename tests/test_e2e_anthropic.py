"""End to end, as a user runs it: `gitops-agent run` in a repository with a CSV, the model
behind ANTHROPIC_BASE_URL (a local server speaking the Messages API, JSON and SSE), two
dependent nodes, everything committed on the task branch; then a kill -9 and --resume."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.fakes.agent_responder import AgentResponder, last_stdout, text_and_tool, tool
from tests.fakes.anthropic_server import FakeAnthropic

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

N1_CODE = """
import csv, glob, os
from collections import defaultdict
rev = defaultdict(float)
for r in csv.DictReader(open("data/sales.csv")):
    rev[r["customer"]] += float(r["qty"]) * float(r["price"])
out = glob.glob(".agent/tasks/*/steps/*-n1")[0]
with open(os.path.join(out, "revenue.csv"), "w") as f:
    f.write("customer,revenue\\n")
    for c, v in sorted(rev.items()):
        f.write(f"{c},{v:.2f}\\n")
print(f"{len(rev)} customers written to {out}/revenue.csv")
"""

N2_CODE = """
import csv, glob
path = glob.glob(".agent/tasks/*/steps/*-n1/revenue.csv")[0]
rows = list(csv.DictReader(open(path)))
top = max(rows, key=lambda r: float(r["revenue"]))
print(f"TOP={top['customer']} {float(top['revenue']):.2f}")
"""

NODES = [
    {"id": "n1", "title": "Revenue per customer", "goal": "Sum qty*price per customer from data/sales.csv; save revenue.csv in your step folder."},
    {"id": "n2", "title": "Top customer", "goal": "From n1's revenue.csv, find the customer with the highest revenue.", "depends_on": ["n1"]},
]


def make_repo(tmp_path: Path) -> tuple[Path, str, float]:
    repo = tmp_path / "shop"
    (repo / "data").mkdir(parents=True)
    rnd = random.Random(42)
    rev: dict[str, float] = defaultdict(float)
    with open(repo / "data" / "sales.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["order", "customer", "qty", "price"])
        for i in range(300):
            c, q, p = f"cust{rnd.randrange(25):02d}", rnd.randrange(1, 6), round(rnd.uniform(2, 90), 2)
            rev[c] += q * p
            w.writerow([i, c, q, p])
    env = {**os.environ, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x", "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@x"}
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "data"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    top = max(rev, key=rev.get)
    return repo, top, round(rev[top], 2)


def make_responder(hold_n2: threading.Event | None = None, n2_seen: threading.Event | None = None) -> AgentResponder:
    def planner(body, text, n):
        if "There is no plan yet" in text:
            return text_and_tool("Two steps: per-customer revenue, then the top one.", "update_plan", nodes=NODES, note="first plan")
        m = re.search(r"TOP=(\S+) ([\d.]+)", text)
        if m and "## n2 (done)" in text:
            return tool("finish", answer=f"The top customer is **{m.group(1)}** with revenue **{m.group(2)}** (node n2).", summary=f"top customer {m.group(1)}")
        return tool("update_plan", nodes=NODES, note="n1 done; n2 next")

    def n1(body, text, n):
        if n == 0:
            return text_and_tool("Computing revenue.", "run_python", code=N1_CODE)
        return tool("finish_step", status="done", result=last_stdout(body))

    def n2(body, text, n):
        if n == 0:
            if n2_seen is not None:
                n2_seen.set()
            if hold_n2 is not None:
                hold_n2.wait(30)
            return tool("run_python", code=N2_CODE)
        return tool("finish_step", status="done", result=last_stdout(body))

    return AgentResponder({"planner": planner, "executor:n1": n1, "executor:n2": n2})


def cli(repo: Path, server: FakeAnthropic, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC")}
    env.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY="sk-ant-test-key-123456", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--repo", str(repo), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def task_branch(repo: Path) -> str:
    refs = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split()
    assert len(refs) == 1, refs
    return refs[0]


def commits(repo: Path, branch: str) -> list[dict]:
    out = git(repo, "log", "--format=%H%x00%s%x00%(trailers:only,unfold)%x01", branch)
    res = []
    for chunk in out.split("\x01"):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        sha, subject, trailers = chunk.split("\x00")
        t = dict(line.split(": ", 1) for line in trailers.strip().splitlines() if ": " in line)
        res.append({"sha": sha, "subject": subject, "trailers": t})
    return res


def test_run_answers_with_two_dependent_nodes_over_the_messages_api(tmp_path):
    repo, top, value = make_repo(tmp_path)
    with FakeAnthropic(api_key="sk-ant-test-key-123456", responder=make_responder(), min_cache_tokens=0) as server:
        p = cli(repo, server, "--planner-model", "anthropic:claude-sonnet-4-6", "--executor-model", "anthropic:claude-haiku-4-5",
                "Who is our top customer by revenue?")
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        usage = server.total_usage()
        bodies = [r.body for r in server.requests if r.path.startswith("/v1/messages")]

    # the answer, with the number really computed, on stdout
    assert f"**{top}**" in out and f"{value:.2f}" in out

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
    assert any(sum("cache_control" in blk for m in b["messages"] if isinstance(m["content"], list) for blk in m["content"]) == 2
               for b in executor_bodies)  # the node prompt and the conversation so far
    assert any(b.get("stream") for b in bodies) and any(not b.get("stream") for b in bodies)
    assert usage["cache_read_input_tokens"] > 0


def test_kill_during_a_model_call_then_resume_redoes_nothing_finished(tmp_path):
    repo, top, value = make_repo(tmp_path)
    hold, seen = threading.Event(), threading.Event()
    responder = make_responder(hold_n2=hold, n2_seen=seen)
    with FakeAnthropic(api_key="sk-ant-test-key-123456", responder=responder, min_cache_tokens=0) as server:
        p = cli(repo, server, "--model", "anthropic:claude-haiku-4-5", "Who is our top customer by revenue?")
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
        r = cli(repo, server, "--resume", task_id)
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
        assert responder.calls["executor:n1"] == n1_calls  # n1 was not asked again

    after = commits(repo, branch)
    assert [c["sha"] for c in after[-len(before):]] == [c["sha"] for c in before]  # history kept, nothing rewritten
    n1_commits = [c for c in after if c["trailers"].get("Agent-Node") == "n1"]
    assert len(n1_commits) == 1
    assert f"**{top}**" in out and f"{value:.2f}" in out
    assert git(repo, "worktree", "list").count("\n") == 1  # the killed run's worktree was cleaned up
