"""Each job of the reusable workflow gets a GITHUB_TOKEN with exactly the job's `permissions:`:
the fake GitHub answers 403 "Resource not accessible by integration" to what a token may not do
(as GitHub does). The whole chain must work with those tokens (each job has what it uses), and
each permission a job asks for must be used by it (no more than it needs)."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.github.test_github_flow import EVOLVE_EVAL, Harness, _write_config, evolve_script, issue_event, world  # noqa: F401 - fixture
from tests.helpers import ROOT

ROOT_WORKFLOW = ROOT / ".github" / "workflows" / "agent.yml"

JOB_OF = {
    ("issues", ""): "intake",
    ("issue_comment", ""): "intake",
    ("workflow_dispatch", ""): "intake",
    ("pull_request_review_comment", ""): "intake",
    ("pull_request_review", ""): "intake",
    ("repository_dispatch", "agent-plan"): "plan",
    ("repository_dispatch", "agent-execute"): "execute",
    ("repository_dispatch", "agent-finish"): "finish",
    ("repository_dispatch", "agent-evolve"): "evolve",
    ("repository_dispatch", "agent-eval"): "eval",
    ("schedule", ""): "reconcile",
}


def job_permissions() -> dict[str, dict[str, str]]:
    wf = yaml.safe_load(ROOT_WORKFLOW.read_text())
    assert wf.get("permissions") == {}, "the workflow grants nothing by default; each job says what it needs"
    return {name: dict(job.get("permissions") or {}) for name, job in wf["jobs"].items()}


class ScopedHarness(Harness):
    """Every job runs with a fresh token holding exactly its job's permissions."""

    def __init__(self, base: Harness):
        super().__init__(base.tmp, base.gh, base.bare)
        self.perms = job_permissions()
        self.token_job: dict[str, str] = {}

    def run(self, event_name, event, step="auto", **extra_env):
        job = JOB_OF[(event_name, event.get("action", "") if event_name == "repository_dispatch" else "")]
        tok = self.gh.job_token(self.perms[job])
        self.token_job[tok] = job
        return super().run(event_name, event, step, GITOPS_AGENT_GITHUB_TOKEN=tok, **extra_env)

    def used(self) -> dict[str, set[tuple[str, str]]]:
        out: dict[str, set[tuple[str, str]]] = {}
        for r in self.gh.requests:
            job = self.token_job.get(r.token)
            if job and r.needed:
                out.setdefault(job, set()).add(r.needed)
        return out

    def refused(self) -> list[str]:
        return [
            f"{self.token_job.get(r.token)}: {r.method} {r.path}"
            for r in self.gh.requests
            if r.status == 403 and r.path != "/user"
        ]


def covers(granted: dict[str, str], used: set[tuple[str, str]]) -> list[str]:
    """The permissions of ``granted`` that nothing in ``used`` needed at that level."""
    unused = []
    for perm, level in granted.items():
        if level == "write" and (perm, "write") not in used:
            # contents: write is also what `git push` takes; the chain's jobs all push (over file:// here)
            if not (perm == "contents"):
                unused.append(f"{perm}: write")
        elif level == "read" and not any(p == perm for p, _ in used):
            unused.append(f"{perm}: read")
    return unused


# plan and execute jobs hold pull-requests: write for the finish they may carry on with
# (github.inline_steps); with it off, they never use it
CARRIED_ON = {"plan": {"pull-requests"}, "execute": {"pull-requests"}}


@pytest.mark.parametrize("inline", [False, True], ids=["a-job-per-step", "inline-steps"])
def test_the_chain_works_with_each_jobs_own_token_and_uses_all_it_asks_for(world, inline):
    base, top, value, llm = world
    h = ScopedHarness(base)
    if not inline:
        _write_config(h, "github: {inline_steps: false}\n")
    ev = issue_event(h.gh, "alice")
    assert h.run("issues", ev) == 0
    h.drain()
    prs = list(h.gh.repo("o/r").pulls.values())
    assert len(prs) == 1 and top in prs[0].body
    # and a round steered from the pull request: a comment on it, then a line review comment
    pr = prs[0]
    assert (
        h.run(
            "issue_comment",
            {
                "action": "created",
                "issue": {"number": pr.number, "title": pr.title, "pull_request": {}},
                "comment": {"body": "/agent and the second customer", "user": {"login": "alice", "type": "User"}},
                "sender": {"login": "alice", "type": "User"},
            },
        )
        == 0
    )
    h.drain()
    c = h.gh.add_review_comment(
        "o/r", pr.number, user="alice", body="/agent round it", path="data/sales.csv", line=2, diff_hunk="@@ -1 +1 @@"
    )
    head = {"ref": pr.pull.head, "repo": {"full_name": "o/r"}}
    assert (
        h.run(
            "pull_request_review_comment",
            {
                "action": "created",
                "comment": c,
                "sender": {"login": "alice", "type": "User"},
                "pull_request": {"number": pr.number, "head": head, "base": {"repo": {"full_name": "o/r"}}},
            },
        )
        == 0
    )
    h.drain()
    assert [r for r in h.gh.review_comments if r["in_reply_to_id"] == c["id"]], "answered in the thread"
    assert h.refused() == [], "a job was refused something it needs"

    perms, used = h.perms, h.used()
    ran = {h.token_job[r.token] for r in h.gh.requests if r.token in h.token_job}
    for job in ("intake", "plan", "execute", "finish"):
        if inline and job not in ran:
            continue  # carried on by another job
        granted = {p: v for p, v in perms[job].items() if inline or p not in CARRIED_ON.get(job, ())}
        assert covers(granted, used.get(job, set())) == [], f"{job} asks for more than it uses"
    if inline:
        assert ("pull-requests", "write") in used.get("plan", set()), "the plan job carried on to finish and published"
        assert "finish" not in ran and "execute" not in ran
    # and a token without a job's permission is really refused (the fake is not kind)
    weak = h.gh.job_token({"contents": "read"})
    from github import Auth, Github, GithubException

    g = Github(auth=Auth.Token(weak), base_url=h.gh.url)
    try:
        g.get_repo("o/r").get_issue(ev["issue"]["number"]).create_comment("hi")
        raise AssertionError("a comment without issues: write")
    except GithubException as e:
        assert e.status == 403 and "Resource not accessible by integration" in str(e.data)


def test_reconcile_has_what_it_uses(world):
    base, *_ = world
    h = ScopedHarness(base)
    _write_config(h, "github: {lease_minutes: 0.0001, max_redispatch: 1, inline_steps: false, sweep: false}\n")
    h.run("issues", issue_event(h.gh, "alice"))
    d = h.gh.dispatches[0]
    h.run("repository_dispatch", {"action": d["event_type"], "client_payload": d["client_payload"]})
    time.sleep(0.1)
    assert h.run("schedule", {"schedule": "*/20 * * * *"}) == 0
    assert len(h.gh.dispatches) > 2, "the lost step was sent again"
    assert h.refused() == []
    assert covers(h.perms["reconcile"], h.used().get("reconcile", set())) == []


def test_evolve_has_what_it_uses(world, tmp_path):
    base, *_ = world
    h = ScopedHarness(base)
    _write_config(h, EVOLVE_EVAL)
    h.run("issues", issue_event(h.gh, "alice"))
    h.drain()
    script = evolve_script(tmp_path)
    assert h.run("repository_dispatch", {"action": "agent-evolve"}, GITOPS_AGENT_PLANNER_MODEL=f"scripted:{script}") == 0
    assert [p for p in h.gh.repo("o/r").pulls.values() if p.pull.base == "agent/brain"]
    assert h.refused() == []
    assert covers(h.perms["evolve"], h.used().get("evolve", set())) == []


def test_eval_has_what_it_uses(world):
    base, *_ = world
    h = ScopedHarness(base)
    assert (
        h.run("repository_dispatch", {"action": "agent-eval", "client_payload": {"model": "scripted", "questions": "q01,q28"}})
        == 0
    )
    assert h.refused() == []
    assert covers(h.perms["eval"], h.used().get("eval", set())) == []
