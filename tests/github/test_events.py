"""What an event asks for (gitops_agent/github/events.py): the trigger phrase of a comment or an issue
body is a word of its own."""

from __future__ import annotations

import pytest

from gitops_agent.github.events import read_trigger


def comment(body: str) -> dict:
    return {
        "action": "created",
        "issue": {"number": 7, "title": "Top customer?"},
        "comment": {"body": body, "user": {"login": "alice", "type": "User"}, "html_url": "x"},
        "sender": {"login": "alice", "type": "User"},
    }


def issue(body: str) -> dict:
    return {
        "action": "opened",
        "issue": {"number": 8, "title": "Top customer?", "body": body, "labels": [], "user": {"login": "alice"}},
        "sender": {"login": "alice", "type": "User"},
    }


@pytest.mark.parametrize(
    "body",
    [
        "/agentfoo also the runner-up",
        "/agents also the runner-up",
        "/agent-x also",
        "/agent/ also",
        "/agent_2 also",
        "see /agent also",
        "/agen also",
    ],
)
def test_a_phrase_that_only_starts_like_the_trigger_starts_nothing(body):
    t = read_trigger("issue_comment", comment(body), label="agent", phrase="/agent")
    assert t.kind == "ignore" and not t.question and "does not start with '/agent'" in t.why
    t = read_trigger("issues", issue(body), label="agent", phrase="/agent")
    assert t.kind == "ignore"


@pytest.mark.parametrize(
    "body,question",
    [
        ("/agent also the runner-up", "also the runner-up"),
        ("  /AGENT\talso the runner-up", "also the runner-up"),
        ("/agent\n\nalso the runner-up", "also the runner-up"),
        ("/agent", "Top customer?"),
    ],
)
def test_the_trigger_phrase_as_a_word_continues_the_task(body, question):
    t = read_trigger("issue_comment", comment(body), label="agent", phrase="/agent")
    assert t.kind == "follow-up" and t.question == question and t.issue == 7
    t = read_trigger("issues", issue(body), label="agent", phrase="/agent")
    assert t.kind == "new" and t.issue == 8


def test_the_actions_gate_reads_the_phrase_the_same_way(tmp_path):
    """An outsider's `/agentfoo …` is not a trigger for the gate either: it stops silently, without
    the refusal comment that `/agent …` gets."""
    from gitops_agent.github import gate
    from tests.fakes.github_server import FakeGitHub

    with FakeGitHub(token="ghs_gate") as gh:
        gh.add_repo("o/r", default_branch="main")
        gh.add_user("mallory")
        n = gh.add_issue("o/r", "Question", "Body", user="alice")
        api = gate.Api(gh.url, "o/r", "ghs_gate")
        env = {"GITHUB_EVENT_NAME": "issue_comment"}

        def ev(body: str) -> dict:
            return {
                "action": "created",
                "issue": {"number": n},
                "sender": {"login": "mallory", "type": "User"},
                "comment": {"body": body, "user": {"login": "mallory", "type": "User"}},
                "repository": {"full_name": "o/r"},
            }

        for body in ("/agentfoo do it", "/agents do it"):
            proceed, why = gate.decide(env, ev(body), api)
            assert not proceed and "not a trigger" in why
        assert gh.comments("o/r", n) == []
        proceed, why = gate.decide(env, ev("/agent do it"), api)
        assert not proceed and "refused" in why and len(gh.comments("o/r", n)) == 1


def test_the_actions_gate_stops_an_outsiders_review_events(tmp_path):
    """Line review comments and reviews are gated like comments: an outsider's `/agent` (or
    "request changes") is refused once, before the install; a writer's goes on."""
    from gitops_agent.github import gate
    from tests.fakes.github_server import FakeGitHub

    with FakeGitHub(token="ghs_gate") as gh:
        gh.add_repo("o/r", default_branch="main")
        gh.add_user("mallory")
        gh.set_permission("o/r", "alice", "write")
        n = gh.add_issue("o/r", "A PR stand-in", "Body", user="alice")
        api = gate.Api(gh.url, "o/r", "ghs_gate")
        pr = {"number": n, "head": {"ref": "agent/task/1-x"}}
        line = {
            "action": "created",
            "pull_request": pr,
            "sender": {"login": "mallory", "type": "User"},
            "comment": {"body": "/agent leak it", "user": {"login": "mallory", "type": "User"}},
        }
        review = {
            "action": "submitted",
            "pull_request": pr,
            "sender": {"login": "mallory", "type": "User"},
            "review": {"body": "no", "state": "changes_requested", "user": {"login": "mallory", "type": "User"}},
        }
        ok, why = gate.decide({"GITHUB_EVENT_NAME": "pull_request_review_comment"}, line, api)
        assert not ok and "refused" in why and len(gh.comments("o/r", n)) == 1
        ok, why = gate.decide({"GITHUB_EVENT_NAME": "pull_request_review"}, review, api)
        assert not ok and len(gh.comments("o/r", n)) == 1, "told once"
        quiet = {**review, "review": {**review["review"], "state": "commented", "body": "nice"}}
        ok, why = gate.decide({"GITHUB_EVENT_NAME": "pull_request_review"}, quiet, api)
        assert not ok and "not a trigger" in why
        writer = {
            **line,
            "comment": {"body": "/agent go", "user": {"login": "alice", "type": "User"}},
            "sender": {"login": "alice"},
        }
        assert gate.decide({"GITHUB_EVENT_NAME": "pull_request_review_comment"}, writer, api)[0]


def _gate_comment(login: str, kind: str = "User", role: str | None = None) -> tuple[bool, str, list[str]]:
    """The actions gate on `/agent do it` commented by ``login`` (a ``kind`` with ``role``):
    (proceed, why, the comments on the issue after it)."""
    from gitops_agent.github import gate
    from tests.fakes.github_server import FakeGitHub

    with FakeGitHub(token="ghs_gate") as gh:
        gh.add_repo("o/r", default_branch="main")
        gh.add_user(login)
        if role is not None:
            gh.set_permission("o/r", login, role)
        n = gh.add_issue("o/r", "Question", "Body", user="alice")
        ev = {
            "action": "created",
            "issue": {"number": n},
            "sender": {"login": login, "type": kind},
            "comment": {"body": "/agent do it", "user": {"login": login, "type": kind}},
            "repository": {"full_name": "o/r"},
        }
        proceed, why = gate.decide({"GITHUB_EVENT_NAME": "issue_comment"}, ev, gate.Api(gh.url, "o/r", "ghs_gate"))
        return proceed, why, [c.body for c in gh.comments("o/r", n)]


def test_the_actions_gate_stops_a_bot_known_by_its_type_without_a_reply():
    """A bot whose login has no `[bot]` suffix (type `Bot`) trying to trigger is stopped, and bots
    are not answered."""
    proceed, why, said = _gate_comment("machine", kind="Bot")
    assert not proceed and "bot @machine" in why and said == []


def test_the_actions_gate_refuses_a_triager_who_cannot_write():
    """The `triage` role cannot write to the repository: its `/agent` is refused once, before the
    install, as intake would refuse it; `write` goes on."""
    proceed, why, said = _gate_comment("tina", role="triage")
    assert not proceed and "cannot write" in why
    assert len(said) == 1 and "gitops-agent:refused=tina" in said[0]
    assert _gate_comment("wanda", role="write")[0]


def test_a_max_usd_input_that_is_not_a_finite_amount_is_refused():
    import pytest

    from gitops_agent.core.errors import ConfigError
    from gitops_agent.github.settings import Settings

    base = {"GITHUB_REPOSITORY": "o/r", "GITHUB_TOKEN": "ghs_x"}
    assert Settings.from_env({**base, "GITOPS_AGENT_MAX_USD": "2.5"}).max_usd == 2.5
    for bad in ("nan", "inf", "-1", "lots"):
        with pytest.raises(ConfigError, match="max-usd"):
            Settings.from_env({**base, "GITOPS_AGENT_MAX_USD": bad})
