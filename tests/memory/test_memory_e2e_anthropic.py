"""Acceptance: two tasks in a row on related questions, as a user runs them (`gitops-agent run`),
the model behind ANTHROPIC_BASE_URL (a local server speaking the Messages API). The second
task's first planner request carries the first task's experience (its task id, its lessons),
the planner cites it, and the memory branch holds both experiences."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.fakes.agent_responder import AgentResponder, last_stdout, prompt_text, text_and_tool, tool
from tests.fakes.anthropic_server import FakeAnthropic
from tests.memory.helpers import GIT_ENV, ROOT, git, make_repo

pytestmark = pytest.mark.slow
KEY = "sk-ant-test-key-123456"
CODE = """
import csv
from collections import defaultdict
tot = defaultdict(float)
for r in csv.DictReader(open("data/orders.csv")):
    tot[r["region"]] += float(r["amount"])
best = max(tot, key=tot.get)
print(f"BEST={best} {tot[best]:.2f}")
"""


def responder() -> AgentResponder:
    def planner(body, text, n):
        past = re.findall(r"- task `([0-9A-Za-z_-]+)` \(done", text)
        if "There is no plan yet" in text:
            note = f"sum per region, as in task {past[0]}" if past else "sum per region"
            return text_and_tool(
                "One step.",
                "update_plan",
                note=note,
                nodes=[{"id": "n1", "title": "Total amount per region", "goal": "Sum amount per region in data/orders.csv."}],
            )
        m = re.search(r"BEST=(\S+) ([\d.]+)", text)
        cite = f" Same method as task {past[0]}." if past else ""
        return tool(
            "finish",
            answer=f"**{m.group(1)}** has the highest total ({m.group(2)}).{cite}",
            summary=f"{m.group(1)} leads",
            lessons=["Summing amount per region in one pass over the CSV is enough."],
        )

    def n1(body, text, n):
        if n % 2 == 0:
            return tool("run_python", code=CODE)
        return tool("finish_step", status="done", result=last_stdout(body))

    return AgentResponder({"planner": planner, "executor:n1": n1})


def run_cli(repo, server, question: str, task_id: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in GIT_ENV.items() if not k.startswith("ANTHROPIC")}
    env.update(ANTHROPIC_BASE_URL=server.url, ANTHROPIC_API_KEY=KEY, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gitops_agent",
            "run",
            "--repo",
            str(repo),
            "--model",
            "anthropic:claude-haiku-4-5",
            "--task-id",
            task_id,
            question,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_second_task_is_planned_with_the_first_tasks_experience(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(api_key=KEY, responder=responder(), min_cache_tokens=0) as server:
        p1 = run_cli(repo, server, "Which region has the highest total order amount?", "1-top-region")
        assert p1.returncode == 0, p1.stderr
        n_first = len(server.requests)
        p2 = run_cli(
            repo, server, "What is the total amount of orders in each region, and which one is the largest?", "2-region-totals"
        )
        assert p2.returncode == 0, p2.stderr
        bodies = [r.body for r in server.requests[n_first:] if r.path.startswith("/v1/messages")]

    planner_bodies = [b for b in bodies if "You are the planner" in prompt_text(b)]
    first = prompt_text(planner_bodies[0])
    assert "Similar past tasks, from memory" in first
    assert "task `1-top-region` (done" in first and "lesson: Summing amount per region" in first
    # the first task's own first request had no memory to show
    assert "**East**" in p1.stdout and "Same method as task 1-top-region" in p2.stdout

    files = git(repo, "ls-tree", "-r", "--name-only", "agent/memory").split()
    assert files == ["experiences/1-top-region.json", "experiences/2-region-totals.json"]
    second = json.loads(git(repo, "show", "agent/memory:experiences/2-region-totals.json"))
    assert second["reused"] == ["1-top-region"] and second["outcome"] == "done" and second["cost_usd"] > 0
    assert second["lessons"] == ["Summing amount per region in one pass over the CSV is enough."]
    report = git(repo, "show", "agent/task/2-region-totals:.agent/tasks/2-region-totals/report.md")
    assert "`1-top-region` (done, **cited**)" in report
