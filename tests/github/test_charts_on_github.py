"""Charts reach GitHub (issue 24, item 4): the PNG the model's code saved in its step folder is shown
in the pull request body and in the answer comment on the issue as the repository's own file at
the task branch's commit (`SERVER/OWNER/REPO/raw/<sha>/<path>`, the server the job is configured
with), through the fake GitHub; no other image is."""

from __future__ import annotations

import re
import subprocess

from tests.fakes.agent_responder import AgentResponder, last_stdout, tool
from tests.github.test_github_flow import issue_event, world  # noqa: F401 - the fixture
from tests.observe.chart_script import PNG_CODE

NODE = {"id": "n1", "title": "Chart of revenue", "goal": "Draw revenue per product as a PNG in your step folder."}


def chart_responder() -> AgentResponder:
    def planner(body, text, n):
        if "There is no plan yet" in text:
            return tool("update_plan", nodes=[NODE], note="one chart")
        return tool("finish", answer="Widgets lead the revenue (chart below).", summary="revenue chart")

    def n1(body, text, n):
        if n == 0:
            return tool("run_python", code="EXTRAS = False\n" + PNG_CODE)
        return tool("finish_step", status="done", result=last_stdout(body))

    return AgentResponder({"planner": planner, "executor:n1": n1})


def _images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]*)", markdown)


def test_the_chart_is_in_the_pull_request_and_the_answer_comment_at_the_branch_commit(world):
    h, _top, _value, llm = world
    llm.responder = chart_responder()
    ev = issue_event(h.gh, "alice", title="Which product leads? Show a chart.")
    assert h.run("issues", ev) == 0
    h.drain()
    (pr,) = h.gh.repo("o/r").pulls.values()
    branch = pr.pull.head
    root = f".agent/tasks/{branch.removeprefix('agent/task/')}"
    files = subprocess.run(
        ["git", "-C", str(h.bare), "ls-tree", "-r", "--name-only", branch, root], capture_output=True, text=True, check=True
    ).stdout.split()
    chart = next(f for f in files if f.endswith("/chart.png"))
    tip = subprocess.run(["git", "-C", str(h.bare), "rev-parse", branch], capture_output=True, text=True).stdout.strip()

    url = f"https://github.example/o/r/raw/{tip}/{chart}"  # GITHUB_SERVER_URL of the job, the pushed tip
    assert _images(pr.body) == [url], pr.body
    assert "### Charts" in pr.body
    (answer,) = [c for c in h.gh.comments("o/r", ev["issue"]["number"]) if "gitops-agent:answer=" in c.body]
    assert _images(answer.body) == [url], answer.body
    shown = subprocess.run(["git", "-C", str(h.bare), "show", f"{tip}:{chart}"], capture_output=True, check=True).stdout
    assert shown.startswith(b"\x89PNG\r\n\x1a\n")  # the URL names the committed PNG
