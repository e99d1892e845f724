"""On GitHub, once is once (issue 12.9-12.12): an issue created with the label starts one task
(GitHub sends issues.opened and issues.labeled; two intake jobs may race); a late duplicate of any
step changes nothing, comments and reviewers included; every follow-up gets its own reply and the
conversation is in the PR and the report; the memory branch's first commit has trailers."""

from __future__ import annotations

import threading

from tests.github.test_github_flow import TOKEN, issue_event, world  # noqa: F401 - the fixture
from tests.helpers import commits, git


def _labeled(ev: dict) -> dict:
    return {**ev, "action": "labeled", "label": {"name": "agent"}}


def test_an_issue_created_with_the_label_starts_one_task(world):
    h, top, value, llm = world
    ev = issue_event(h.gh, "alice")
    n = ev["issue"]["number"]
    assert h.run("issues", ev) == 0
    assert h.run("issues", _labeled(ev)) == 0  # the second event of the same creation
    h.drain()
    # and two intake jobs racing for a second issue
    ev2 = issue_event(h.gh, "alice", title="Which customer bought least?")
    results = []

    def intake(e):
        try:
            results.append(h.run("issues", e))
        except Exception as exc:  # noqa: BLE001 - shown by the assertion below
            results.append(repr(exc))

    threads = [threading.Thread(target=intake, args=(e,)) for e in (ev2, _labeled(ev2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0, 0]
    branches = git(h.bare, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split()
    assert len(branches) == 2 and not any(b.endswith("-2") for b in branches), branches
    assert len([p for p in h.gh.repo("o/r").pulls.values()]) == 1  # the first one finished; the second was not drained
    for issue in (n, ev2["issue"]["number"]):
        assert sum("gitops-agent:task=" in c.body for c in h.gh.comments("o/r", issue)) == 1


def test_a_late_duplicate_of_any_step_changes_nothing(world):
    h, top, value, llm = world
    ev = issue_event(h.gh, "alice")
    h.run("issues", ev)
    h.drain()
    sent = list(h.gh.dispatches)
    refs = git(h.bare, "for-each-ref")
    writes = [r for r in h.gh.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")]
    bodies = {c.id: c.body for c in h.gh.comments("o/r", ev["issue"]["number"])}
    for d in sent:  # every step of the finished task, delivered again
        assert (
            h.run(
                "repository_dispatch",
                {
                    "action": d["event_type"],
                    "client_payload": d["client_payload"],
                    "sender": {"login": "github-actions[bot]", "type": "Bot"},
                },
            )
            == 0
        )
    assert git(h.bare, "for-each-ref") == refs and h.gh.dispatches == sent
    assert [r for r in h.gh.requests if r.method in ("POST", "PATCH", "PUT", "DELETE")] == writes  # no comment, no reviewer
    assert {c.id: c.body for c in h.gh.comments("o/r", ev["issue"]["number"])} == bodies
    [pr] = h.gh.repo("o/r").pulls.values()
    assert pr.pull.requested_reviewers == ["alice"]


def test_every_follow_up_gets_its_own_reply_and_is_in_the_pr_and_the_report(world):
    h, top, value, llm = world
    ev = issue_event(h.gh, "alice")
    n = ev["issue"]["number"]
    h.run("issues", ev)
    h.drain()
    for text in ("and the runner-up?", "and the third?"):
        comment = {
            "action": "created",
            "issue": {"number": n, "title": ev["issue"]["title"]},
            "comment": {"body": f"/agent {text}", "user": {"login": "alice", "type": "User"}, "html_url": "x"},
            "sender": {"login": "alice", "type": "User"},
        }
        assert h.run("issue_comment", comment) == 0
        h.drain()
    answers = [c.body for c in h.gh.comments("o/r", n) if "gitops-agent:answer=" in c.body]
    assert len(answers) == 3  # the answer, then one reply per follow-up: each one notifies
    assert "Follow-up 1" in answers[1] and "runner-up" in answers[1] and "Follow-up 2" in answers[2]
    [pr] = h.gh.repo("o/r").pulls.values()
    assert "Follow-ups" in pr.body and "runner-up" in pr.body and "third" in pr.body and "@" in pr.body
    branch = pr.pull.head
    report = git(h.bare, "show", f"{branch}:.agent/tasks/{branch.removeprefix('agent/task/')}/report.md")
    assert "Follow-ups" in report and "runner-up" in report and "from `@alice`" in report


def test_the_first_commit_of_the_memory_branch_has_trailers(world):
    h, *_ = world
    h.run("issues", issue_event(h.gh, "alice"))
    h.drain()
    first = commits(h.bare, "agent/memory")[-1]
    assert first["trailers"].get("Agent-Role") == "memory"
