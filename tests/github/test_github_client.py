"""GitHubClient with the real PyGithub against a real local fake of the GitHub REST API."""

from __future__ import annotations

import json
import logging
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gitops_agent.core.errors import AgentError
from gitops_agent.github.client import (
    GitHubAuthError,
    GitHubClient,
    GitHubError,
    GitHubRateLimited,
    GitHubValidationError,
    InvalidDispatch,
)
from tests.fakes.github_server import FakeGitHub, Fault

TOKEN = "ghs_s3cr3tT0kenValue1234567890"
MARKER = "<!-- gitops-agent:task=42-avg -->"


@pytest.fixture
def srv():
    with FakeGitHub(token=TOKEN) as s:
        s.add_repo("o/r", default_branch="main")
        yield s


def client(srv: FakeGitHub, token: str = TOKEN, **kw) -> GitHubClient:
    kw.setdefault("backoff_factor", 0.1)
    kw.setdefault("seconds_between_requests", None)
    kw.setdefault("seconds_between_writes", None)
    return GitHubClient("o/r", token, api_url=srv.url, **kw)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A bare repo with main, agent/task/1 (one commit ahead) and agent/task/empty (== main)."""
    remote = tmp_path / "remote.git"
    work = tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "a.txt").write_text("a\n")
    git(work, "add", "a.txt")
    git(work, "commit", "-q", "-m", "base")
    git(work, "branch", "agent/task/empty")
    git(work, "checkout", "-q", "-b", "agent/task/1")
    (work / "b.txt").write_text("b\n")
    git(work, "add", "b.txt")
    git(work, "commit", "-q", "-m", "answer")
    git(work, "push", "-q", str(remote), "main", "agent/task/1", "agent/task/empty")
    return remote


# -- permissions -------------------------------------------------------------------------


def test_permission_roles_and_unknown_users(srv):
    srv.set_permission("o/r", "alice", "write")
    srv.set_permission("o/r", "bob", "read")
    srv.set_permission("o/r", "carol", "none")
    srv.set_permission("o/r", "mia", "maintain")
    srv.set_permission("o/r", "tom", "triage")
    srv.add_user("dave")  # exists, not a collaborator of a public repo
    gh = client(srv)
    assert gh.permission("alice") == "write" and gh.can_write("alice")
    assert gh.permission("bob") == "read" and not gh.can_write("bob")
    assert gh.permission("carol") == "none" and not gh.can_write("carol")
    assert gh.permission("mia") == "maintain" and gh.can_write("mia")  # role_name, not the legacy "write"
    assert gh.permission("tom") == "triage" and not gh.can_write("tom")
    assert gh.permission("o") == "admin"  # the owner
    assert gh.permission("dave") == "read"
    assert gh.permission("mallory") == "none"  # GitHub: 404 "mallory is not a user"
    assert srv.calls("GET", r"/collaborators/mallory/permission")[-1].status == 404
    assert gh.permission("not a login!") == "none"  # never sent
    assert not srv.calls(path="not a login")
    # like GitHub: `permission` is the legacy base role, `role_name` the real one
    status, body = raw(srv, "GET", "/repos/o/r/collaborators/mia/permission", None)
    assert status == 200 and (body["permission"], body["role_name"]) == ("write", "maintain")


def test_private_repo_non_collaborator_is_none(srv):
    srv.add_repo("o/secret", private=True)
    srv.add_user("dave")
    gh = GitHubClient("o/secret", TOKEN, api_url=srv.url, seconds_between_requests=None, seconds_between_writes=None)
    assert gh.permission("dave") == "none"


# -- issues and comments -----------------------------------------------------------------


def test_issue_and_labels(srv):
    n = srv.add_issue("o/r", "Average order value?", "Per region please", user="alice", labels=["agent"])
    gh = client(srv)
    assert gh.issue(n) == {
        "title": "Average order value?",
        "body": "Per region please",
        "user": "alice",
        "labels": ["agent"],
        "state": "open",
        "is_pull_request": False,
    }
    gh.add_labels(n, ["agent", "agent:running"])
    assert srv.repo("o/r").issues[n].labels == ["agent", "agent:running"]
    gh.add_labels(n, [])  # no request
    assert len(srv.calls("POST", r"/labels$")) == 1
    with pytest.raises(GitHubError) as e:
        gh.issue(999)
    assert e.value.status == 404


def test_comment_and_edit(srv):
    n = srv.add_issue("o/r", "q", "b")
    gh = client(srv)
    cid, url = gh.comment(n, "working on it")
    assert url.endswith(f"/o/r/issues/{n}#issuecomment-{cid}")
    gh.edit_comment(cid, "done")
    assert [c.body for c in srv.comments("o/r", n)] == ["done"]
    # lazy objects: no GET before the POST / PATCH
    assert [(r.method, r.path) for r in srv.requests] == [
        ("POST", f"/repos/o/r/issues/{n}/comments"),
        ("PATCH", f"/repos/o/r/issues/comments/{cid}"),
    ]


def test_upsert_comment_edits_in_place(srv):
    n = srv.add_issue("o/r", "q", "b")
    srv.add_comment("o/r", n, "unrelated", user="alice")
    gh = client(srv)
    first = gh.upsert_comment(n, MARKER, f"{MARKER}\nplanning…")
    second = gh.upsert_comment(n, MARKER, f"{MARKER}\nstep 2 of 3")
    assert first == second
    ours = [c for c in srv.comments("o/r", n) if MARKER in c.body]
    assert len(ours) == 1 and ours[0].body == f"{MARKER}\nstep 2 of 3"
    assert len(srv.calls("POST", r"/comments$")) == 1
    assert len(srv.calls("PATCH", r"/issues/comments/\d+$")) == 1
    # same body again: nothing to write
    gh.upsert_comment(n, MARKER, f"{MARKER}\nstep 2 of 3")
    assert len(srv.calls("PATCH")) == 1
    # a body without the marker gets it first, so the next upsert still finds the comment
    gh.upsert_comment(n, MARKER, "final answer")
    assert ours[0].body == f"{MARKER}\nfinal answer"
    assert gh.find_comment(n, MARKER) == first


def test_a_marker_in_someone_elses_comment_is_not_ours(srv):
    n = srv.add_issue("o/r", "q", "b")
    forged = srv.add_comment("o/r", n, f"{MARKER}\nI am the progress comment now", user="mallory")
    quoted = srv.add_comment("o/r", n, f"look: {MARKER}", user="gitops-agent-bot")  # a marker inside a text we posted
    gh = client(srv)
    assert gh.find_comment(n, MARKER) is None
    mine = gh.upsert_comment(n, MARKER, f"{MARKER}\nplanning")
    assert mine not in (forged, quoted) and len(srv.calls("PATCH")) == 0


def test_find_comment_paginates(srv):
    n = srv.add_issue("o/r", "q", "b")
    ids = [srv.add_comment("o/r", n, f"comment {i}") for i in range(7)]
    target = srv.add_comment("o/r", n, f"{MARKER}\nprogress", user="gitops-agent-bot")
    srv.add_comment("o/r", n, "later")
    gh = client(srv, per_page=3)
    assert gh.find_comment(n, MARKER) == target
    pages = [r.query.get("page", "1") for r in srv.calls("GET", r"/comments$")]
    assert pages == ["1", "2", "3"]
    assert all(r.query["per_page"] == "3" for r in srv.calls("GET", r"/comments$"))
    assert gh.find_comment(n, "<!-- gitops-agent:task=nope -->") is None
    assert ids  # pages 1-2 held only other comments


# -- pull requests -----------------------------------------------------------------------


def test_open_pull_is_idempotent(srv, bare):
    srv.add_repo("o/r", default_branch="main", git_dir=bare)
    srv.set_permission("o/r", "alice", "write")
    gh = client(srv)
    number, url = gh.open_pull("agent/task/1", "main", "Answer: AOV", "first body", reviewers=["alice"])
    assert url.endswith(f"/o/r/pull/{number}")
    pr = srv.repo("o/r").issues[number]
    assert pr.pull.draft and pr.pull.head == "agent/task/1" and pr.pull.requested_reviewers == ["alice"]
    again, url2 = gh.open_pull("agent/task/1", "main", "Answer: AOV", "second body", reviewers=["alice"])
    assert (again, url2) == (number, url)
    assert len(srv.repo("o/r").pulls) == 1 and pr.body == "second body"
    assert len(srv.calls("POST", r"/pulls$")) == 1
    assert len(srv.calls("PATCH", rf"/pulls/{number}$")) == 1
    lookup = srv.calls("GET", r"/pulls$")[-1]
    assert lookup.query["head"] == "o:agent/task/1" and lookup.query["state"] == "open"
    # the PR shows up as an issue too
    assert gh.issue(number)["is_pull_request"] is True


def test_open_pull_reviewer_refusals_are_ignored(srv, bare, caplog):
    srv.add_repo("o/r", default_branch="main", git_dir=bare)
    srv.set_permission("o/r", "alice", "write")
    gh = client(srv)
    with caplog.at_level(logging.WARNING, logger="gitops_agent.github.client"):
        number, _ = gh.open_pull("agent/task/1", "main", "t", "b", reviewers=[srv.login, "alice", "stranger"])
    assert srv.repo("o/r").issues[number].pull.requested_reviewers == ["alice"]
    assert "pull request author" in caplog.text and "stranger" in caplog.text


def test_open_pull_falls_back_when_drafts_unsupported(srv, bare):
    srv.add_repo("o/r", git_dir=bare, drafts=False, private=True)
    number, _ = client(srv).open_pull("agent/task/1", "main", "t", "b", draft=True)
    assert srv.repo("o/r").issues[number].pull.draft is False


def test_fake_pull_validation_like_github(srv, bare):
    srv.add_repo("o/r", git_dir=bare)
    gh = client(srv)
    with pytest.raises(GitHubValidationError) as e:
        gh.open_pull("agent/task/empty", "main", "t", "b")
    assert e.value.status == 422 and "No commits between main and agent/task/empty" in str(e.value)
    with pytest.raises(GitHubValidationError) as e:
        gh.open_pull("agent/task/missing", "main", "t", "b")
    assert "PullRequest head invalid" in str(e.value)
    # a second create for the same head is refused by the fake as by GitHub
    number, _ = gh.open_pull("agent/task/1", "main", "t", "b")
    status, body = raw(srv, "POST", "/repos/o/r/pulls", {"head": "agent/task/1", "base": "main", "title": "t"})
    assert status == 422 and body["errors"][0]["message"] == "A pull request already exists for o:agent/task/1."


# -- repository_dispatch -----------------------------------------------------------------


def test_dispatch_is_recorded(srv):
    gh = client(srv)
    payload = {"task": "42-avg", "branch": "agent/task/42-avg", "node": "n2", "step": 5, "hop": 3}
    gh.dispatch("agent-execute", payload)
    assert srv.dispatches == [{"event_type": "agent-execute", "client_payload": payload}]
    assert srv.requests[-1].status == 204


def raw(srv: FakeGitHub, method: str, path: str, body: object, token: str = TOKEN) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        srv.url + path, data=data, method=method, headers={"Authorization": f"token {token}", "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            data = r.read()
            return r.status, json.loads(data) if data else {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_dispatch_with_eleven_keys_is_refused_locally_and_by_the_fake(srv):
    gh = client(srv)
    payload = {f"k{i}": i for i in range(11)}
    with pytest.raises(InvalidDispatch) as e:
        gh.dispatch("agent-plan", payload)
    assert isinstance(e.value, AgentError)
    assert "11 top-level keys" in str(e.value) and "at most 10" in str(e.value)
    assert srv.requests == []  # nothing sent
    status, body = raw(srv, "POST", "/repos/o/r/dispatches", {"event_type": "agent-plan", "client_payload": payload})
    assert status == 422
    assert "client_payload" in body["message"] and "No more than 10 properties are allowed; 11 were supplied" in body["message"]
    assert srv.dispatches == []
    # the other local checks
    with pytest.raises(InvalidDispatch, match="non-empty"):
        gh.dispatch("", {})
    with pytest.raises(InvalidDispatch, match="at most 100"):
        gh.dispatch("x" * 101, {})
    with pytest.raises(InvalidDispatch, match="JSON"):
        gh.dispatch("agent-plan", {"t": object()})
    assert raw(srv, "POST", "/repos/o/r/dispatches", {"event_type": "x" * 101})[0] == 422
    assert raw(srv, "POST", "/repos/o/r/dispatches", {"client_payload": {}})[0] == 422
    assert raw(srv, "POST", "/repos/o/r/dispatches", {"event_type": "agent-plan"})[0] == 204


# -- errors and retries ------------------------------------------------------------------


def test_bad_token_is_a_clear_error_without_the_token(srv, caplog):
    wrong = "ghp_wrongTokenDoNotLeak987654321"
    gh = client(srv, token=wrong)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(GitHubAuthError) as e:
            gh.dispatch("agent-plan", {"task": "t"})
    err = e.value
    assert err.status == 401 and "Bad credentials" in str(err)
    assert wrong not in str(err) and wrong not in repr(err) and wrong not in repr(gh)
    assert wrong not in caplog.text
    assert srv.requests[-1].headers["authorization"] == f"token {wrong}"  # it was sent, just never shown
    assert len(srv.requests) == 1  # 401 is not retried
    # no Authorization header at all: the fake answers 401 too
    assert raw(srv, "GET", "/repos/o/r", None, token="")[0] == 401


def gaps(srv: FakeGitHub, path: str) -> list[float]:
    times = [r.time for r in srv.calls(path=path)]
    return [b - a for a, b in zip(times, times[1:])]


def test_secondary_rate_limit_honours_retry_after(srv):
    srv.fail(Fault(status=403, secondary_rate_limit=True, retry_after=1, match=r"/dispatches$"))
    client(srv).dispatch("agent-plan", {"task": "t"})
    assert [r.status for r in srv.calls(path="/dispatches")] == [403, 204]
    assert gaps(srv, "/dispatches")[0] >= 0.95
    assert len(srv.dispatches) == 1


def test_429_waits_for_rate_limit_reset(srv):
    n = srv.add_issue("o/r", "q", "b")
    srv.fail(Fault(status=429, reset_in=1))
    t0 = time.monotonic()
    assert client(srv).issue(n)["title"] == "q"
    assert [r.status for r in srv.requests] == [429, 200]
    assert gaps(srv, "/issues/")[0] >= 0.95
    assert time.monotonic() - t0 < 5


def test_rate_limit_longer_than_allowed_fails_fast(srv):
    n = srv.add_issue("o/r", "q", "b")
    srv.fail(Fault(status=403, reset_in=3600))
    t0 = time.monotonic()
    with pytest.raises(GitHubRateLimited) as e:
        client(srv, max_rate_limit_wait=30).issue(n)
    assert time.monotonic() - t0 < 5 and e.value.status == 403
    assert len(srv.requests) == 1


def test_5xx_retried_then_success(srv):
    n = srv.add_issue("o/r", "q", "b")
    srv.fail(Fault(status=500, times=2))
    cid, _ = client(srv).comment(n, "hello")
    assert [r.status for r in srv.requests] == [500, 500, 201]
    assert len(srv.comments("o/r", n)) == 1 and cid


def test_5xx_gives_up_after_retries_with_githubs_message(srv):
    srv.fail(Fault(status=502, times=None, match=r"/permission$"))
    with pytest.raises(GitHubError) as e:
        client(srv, retries=2).permission("alice")
    assert e.value.status == 502 and "Server Error" in str(e.value)
    assert len(srv.requests) == 3  # the first try and 2 retries


def test_unreachable_server_is_a_github_error():
    gh = GitHubClient(
        "o/r",
        TOKEN,
        api_url="http://127.0.0.1:9",
        retries=1,
        backoff_factor=0.01,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )
    with pytest.raises(GitHubError) as e:
        gh.dispatch("agent-plan", {})
    assert e.value.status is None and TOKEN not in str(e.value)


def test_slow_answer_within_timeout(srv):
    srv.fail(Fault(delay=0.3))
    t0 = time.monotonic()
    assert client(srv).permission("o") == "admin"
    assert time.monotonic() - t0 >= 0.3


def test_fake_serves_plain_pygithub(srv):
    """The fake as other tests use it: PyGithub's own (non-lazy) objects, lists, Link pagination."""
    import github

    gh = github.Github(
        base_url=srv.url,
        auth=github.Auth.Token(TOKEN),
        per_page=2,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )
    assert gh.get_user().login == srv.login
    assert gh.get_rate_limit().resources.core.limit == 5000
    repo = gh.get_repo("o/r")  # GET /repos/o/r
    assert (repo.full_name, repo.default_branch, repo.private) == ("o/r", "main", False)
    for i in range(5):
        repo.create_issue(title=f"issue {i}", body="b", labels=["agent"])
    issues = list(repo.get_issues(state="open", labels=["agent"]))
    assert [i.number for i in issues] == [5, 4, 3, 2, 1]
    issue = repo.get_issue(3)
    assert issue.user.login == srv.login and [lb.name for lb in issue.labels] == ["agent"]
    issue.edit(state="closed")
    assert repo.get_issue(3).state == "closed" and len(list(repo.get_issues())) == 4
    repo.create_label("bug", "ff0000")
    assert sorted(lb.name for lb in repo.get_labels()) == ["agent", "bug"]
    issue.add_to_labels("bug")
    assert [lb.name for lb in issue.get_labels()] == ["agent", "bug"]
    c = issue.create_comment("hi")
    assert repo.get_issue(3).get_comment(c.id).body == "hi"
    assert repo.create_repository_dispatch("agent-plan", {"task": "t"}) is True
    assert srv.dispatches[-1] == {"event_type": "agent-plan", "client_payload": {"task": "t"}}
    pr = repo.create_pull(base="main", head="agent/task/x", title="t", body="b", draft=True)  # no git_dir: no checks
    same = repo.get_pull(pr.number)
    assert (same.head.ref, same.base.ref, same.draft, same.user.login) == ("agent/task/x", "main", True, srv.login)
    assert [p.number for p in repo.get_pulls(state="open", head="o:agent/task/x")] == [pr.number]
    assert list(repo.get_pulls(state="open", head="o:other")) == []
    with pytest.raises(github.GithubException) as e:
        repo.get_issue(999)
    assert e.value.status == 404
    link = srv.calls("GET", r"/issues$")[0]
    assert link.query == {"state": "open", "labels": "agent", "per_page": "2"}


def test_403_without_rate_limit_is_not_retried(srv):
    srv.fail(Fault(status=403, message="Resource not accessible by integration"))
    with pytest.raises(GitHubAuthError) as e:
        client(srv).dispatch("agent-plan", {})
    assert e.value.status == 403 and "Resource not accessible by integration" in str(e.value)
    assert len(srv.requests) == 1


def test_secondary_rate_limit_without_retry_after_waits_secondary_rate_wait(srv):
    srv.fail(Fault(status=403, secondary_rate_limit=True), Fault(status=429))
    client(srv, secondary_rate_wait=0.3).dispatch("agent-plan", {})
    assert [r.status for r in srv.requests] == [403, 429, 204]
    assert all(g >= 0.28 for g in gaps(srv, "/dispatches"))
