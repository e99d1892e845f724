"""A real local HTTP server that speaks enough of the GitHub REST API v3 for gitops-agent, for tests.

    with FakeGitHub(token="ghs_test") as srv:
        srv.add_repo("o/r", default_branch="main", git_dir=bare_repo_path)   # git_dir optional
        srv.set_permission("o/r", "alice", "write")
        n = srv.add_issue("o/r", "Average order value?", "…", user="alice", labels=["agent"])
        gh = github.Github(base_url=srv.url, auth=github.Auth.Token("ghs_test"))
        ...
        srv.requests[-1]          # RecordedRequest(method, path, query, headers, body, time, status)
        srv.dispatches            # [{"event_type": ..., "client_payload": {...}}, ...]
        srv.repo("o/r").comments  # the state, for assertions

Endpoints (all under the server root, like api.github.com; JSON objects carry `url`, `id`,
`node_id`, `number`, `html_url`, … with `url` fields pointing at this server, so PyGithub's lazy
completion works):

- GET  /repos/{o}/{r}
- GET  /repos/{o}/{r}/issues (state, labels, creator; PRs are issues too), POST (title required)
- GET/PATCH /repos/{o}/{r}/issues/{n}
- GET/POST  /repos/{o}/{r}/issues/{n}/comments;  GET/PATCH/DELETE /repos/{o}/{r}/issues/comments/{id}
- GET/POST  /repos/{o}/{r}/issues/{n}/labels (POST adds; unknown labels are created, like GitHub),
  DELETE /repos/{o}/{r}/issues/{n}/labels/{name};  GET/POST /repos/{o}/{r}/labels
- POST /repos/{o}/{r}/pulls: 422 "Validation Failed" with GitHub's `errors` entries for a missing
  field, a head/base branch that does not exist (checked only when the repo has a `git_dir`, a
  bare repository), "No commits between B and H" (git_dir only), "A pull request already exists
  for o:H." (an open PR with the same head and base), "Draft pull requests are not supported in
  this repository." (`add_repo(..., drafts=False)`); 403 "GitHub Actions is not permitted to create or
  approve pull requests." when the repository's setting is off (`add_repo(..., actions_may_open_prs=False)`)
- GET /repos/{o}/{r}/pulls (state, head=`owner:branch`, base), GET/PATCH /repos/{o}/{r}/pulls/{n}
- POST /repos/{o}/{r}/pulls/{n}/requested_reviewers: 422 for the PR's author ("Review cannot be
  requested from pull request author.") and for non-collaborators
- POST /repos/{o}/{r}/dispatches: 204; 422 when event_type is missing/empty or longer than 100
  characters, client_payload is not an object, or has more than 10 top-level properties
  ("Invalid request.\n\nclient_payload: No more than 10 properties are allowed; 11 were supplied.")
- GET /repos/{o}/{r}/collaborators/{u}/permission: {"permission", "role_name", "user"}. `permission`
  is the legacy base role (maintain -> write, triage -> read), `role_name` the real one. A user
  the server knows (an issue author, `add_user`) without a role gets "read" on a public repo and
  "none" on a private one (what GitHub answers); an unknown login is a 404 "… is not a user".
- GET /rate_limit, GET /user (the token's user: `login`, default "gitops-agent-bot")

Auth: every request needs `Authorization: token X` or `Bearer X` (X == `token` when the server
was given one), else 401 {"message": "Bad credentials"}. Unknown repos/issues/routes are 404
{"message": "Not Found"}. Lists are paginated like GitHub: `per_page` (default 30, max 100),
`page`, and a `Link` header with next/last/first/prev.

Faults (`faults=[Fault(...)]` or `.fail(Fault(...))`) are taken, first matching one first, after
the auth check and before the answer:
- `Fault(status=403, secondary_rate_limit=True, retry_after=1)`: "You have exceeded a secondary
  rate limit…" with `retry-after: 1`
- `Fault(status=429, reset_in=1)` (or 403): "API rate limit exceeded…" with
  `x-ratelimit-remaining: 0` and `x-ratelimit-reset: now+1` (epoch seconds, rounded up)
- `Fault(status=500)` / `502` / any status with `message=`; `Fault(delay=2)` only slows the answer
- `match=` a regex searched in the path (no query), `method=` restricts to one method,
  `times=None` repeats forever.

`on_dispatch(repo_full_name, {"event_type", "client_payload"})` (optional) is called after a
dispatch was answered: a test can play GitHub Actions and run the next step from it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import urllib.parse
import uuid
from base64 import b64encode
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable

DOCS = "https://docs.github.com/rest"
ROLES = ("admin", "maintain", "write", "triage", "read", "none")
LEGACY = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read", "none": "none"}
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {rid}."
)
PRIMARY_MESSAGE = (
    "API rate limit exceeded for installation ID 1. If you reach out to GitHub Support for help, "
    "please include the request ID {rid}."
)
DEFAULT_MESSAGES = {
    400: "Problems parsing JSON",
    401: "Bad credentials",
    403: "Resource not accessible by integration",
    404: "Not Found",
    409: "Conflict",
    422: "Validation Failed",
    500: "Server Error",
    502: "Server Error",
    503: "Service Unavailable",
    504: "We couldn't respond to your request in time. Sorry about that. Please try resubmitting your request and contact us "
    "if the problem persists.",
}
REASONS = {200: "OK", 201: "Created", 204: "No Content"}


@dataclass
class Fault:
    """One injected failure. `status=None` with `delay` only slows the answer down."""

    status: int | None = None
    message: str | None = None
    secondary_rate_limit: bool = False  # the secondary-rate-limit message
    retry_after: float | None = None  # seconds, sent as `retry-after`
    reset_in: float | None = None  # primary rate limit: x-ratelimit-remaining 0, x-ratelimit-reset now+N
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    match: str | None = None  # regex searched in the request path (without the query)
    method: str | None = None
    times: int | None = 1  # None: every matching request until cleared


@dataclass
class RawBody:
    """A response body sent as it is (the raw media type), not as JSON."""

    data: bytes


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON (None when empty or not JSON)
    raw: bytes = b""
    time: float = 0.0
    status: int | None = None  # what the fake answered
    token: str = ""  # the credential it came with
    needed: tuple[str, str] | None = None  # (permission, "read"|"write") the route takes from a job token

    @property
    def json(self) -> Any:
        return self.body

    @property
    def target(self) -> str:
        return self.path + ("?" + urllib.parse.urlencode(self.query) if self.query else "")


class ApiError(Exception):
    def __init__(
        self, status: int, message: str | None = None, errors: list[dict] | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message or DEFAULT_MESSAGES.get(status, "Error")
        self.errors = errors
        self.headers = headers or {}


def validation_failed(*errors: dict) -> ApiError:
    return ApiError(422, "Validation Failed", list(errors))


def now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def node_id(kind: str, id_: int) -> str:
    return b64encode(f"0:{kind}{id_}".encode()).decode().rstrip("=")


@dataclass
class Issue:
    number: int
    id: int
    title: str
    body: str | None
    user: str
    labels: list[str]
    state: str = "open"
    state_reason: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    closed_at: float | None = None
    pull: "Pull | None" = None  # set when this issue is a pull request


@dataclass
class Pull:
    id: int
    head: str  # branch name
    base: str
    draft: bool
    head_sha: str
    base_sha: str
    maintainer_can_modify: bool = True
    merged: bool = False
    requested_reviewers: list[str] = field(default_factory=list)
    requested_teams: list[str] = field(default_factory=list)
    head_repo: str | None = None  # "owner/name" of a fork the head branch lives in (None: this repository)


@dataclass
class Comment:
    id: int
    issue: int
    body: str
    user: str
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None


@dataclass
class Repo:
    owner: str
    name: str
    id: int
    default_branch: str = "main"
    private: bool = False
    git_dir: Path | None = None
    drafts: bool = True
    #: Settings -> Actions -> "Allow GitHub Actions to create and approve pull requests" (off by
    #: default for new organisations): off, an Actions token's POST /pulls is refused with 403
    actions_may_open_prs: bool = True
    permissions: dict[str, str] = field(default_factory=dict)  # login (lower) -> role
    issues: dict[int, Issue] = field(default_factory=dict)
    comments: dict[int, Comment] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)  # lower name -> label
    dispatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def pulls(self) -> dict[int, Issue]:
        return {n: i for n, i in self.issues.items() if i.pull is not None}


class FakeGitHub:
    """See the module docstring."""

    def __init__(
        self,
        *,
        token: str | None = None,
        login: str = "gitops-agent-bot",
        faults: Iterable[Fault] = (),
        on_dispatch: Callable[[str, dict[str, Any]], None] | None = None,
        rate_limit: int = 5000,
    ) -> None:
        self.token = token
        self.login = login
        self.faults: deque[Fault] = deque(faults)
        self.on_dispatch = on_dispatch
        self.rate_limit = rate_limit
        self.rate_used = 0
        self.rate_reset = int(time.time()) + 3600
        self.requests: list[RecordedRequest] = []
        self.dispatches: list[dict[str, Any]] = []
        self.repos: dict[str, Repo] = {}
        self.users: dict[str, tuple[str, int]] = {}  # lower login -> (login, id)
        # job tokens (a workflow job's GITHUB_TOKEN): token -> its `permissions:`; a route needs its
        # permission (403 "Resource not accessible by integration" without it), and GET /user is refused
        self.job_tokens: dict[str, dict[str, str]] = {}
        self.review_comments: list[dict[str, Any]] = []  # line comments and their replies
        self.lock = threading.RLock()
        self._ids = 1000
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_user(login)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "FakeGitHub":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # keep-alive + small writes: no 40 ms delayed-ACK stalls
            wbufsize = 1 << 16  # headers and body leave in one write (flushed per answer)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                fake._handle(self)

            do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                import sys

                if isinstance(sys.exc_info()[1], (OSError, ValueError)):
                    return
                super().handle_error(request, client_address)

        self._stop.clear()
        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeGitHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- seeding (Python side) -------------------------------------------------------------

    def _next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def add_user(self, login: str) -> None:
        with self.lock:
            self.users.setdefault(login.lower(), (login, self._next_id()))

    def add_repo(
        self,
        full_name: str,
        *,
        default_branch: str = "main",
        private: bool = False,
        git_dir: Path | str | None = None,
        drafts: bool = True,
        actions_may_open_prs: bool = True,
    ) -> Repo:
        owner, name = full_name.split("/", 1)
        with self.lock:
            self.add_user(owner)
            repo = Repo(
                owner=owner,
                name=name,
                id=self._next_id(),
                default_branch=default_branch,
                private=private,
                git_dir=Path(git_dir) if git_dir else None,
                drafts=drafts,
                actions_may_open_prs=actions_may_open_prs,
            )
            repo.permissions[owner.lower()] = "admin"
            self.repos[full_name.lower()] = repo
            return repo

    def repo(self, full_name: str) -> Repo:
        return self.repos[full_name.lower()]

    def set_permission(self, full_name: str, user: str, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        with self.lock:
            self.add_user(user)
            self.repo(full_name).permissions[user.lower()] = role

    def add_label(self, full_name: str, name: str, color: str = "ededed", description: str | None = None) -> Label:
        with self.lock:
            repo = self.repo(full_name)
            if name.lower() not in repo.labels:
                repo.labels[name.lower()] = Label(self._next_id(), name, color, description)
            return repo.labels[name.lower()]

    def add_issue(
        self,
        full_name: str,
        title: str,
        body: str | None = "",
        *,
        user: str = "octocat",
        labels: Iterable[str] = (),
        state: str = "open",
    ) -> int:
        with self.lock:
            repo = self.repo(full_name)
            self.add_user(user)
            names = [self.add_label(full_name, n).name for n in labels]
            number = len(repo.issues) + 1
            repo.issues[number] = Issue(number, self._next_id(), title, body, user, names, state=state)
            return number

    def add_comment(self, full_name: str, issue_number: int, body: str, *, user: str = "octocat") -> int:
        with self.lock:
            repo = self.repo(full_name)
            if issue_number not in repo.issues:
                raise KeyError(f"no issue #{issue_number} in {full_name}")
            self.add_user(user)
            c = Comment(self._next_id(), issue_number, body, user)
            repo.comments[c.id] = c
            return c.id

    def comments(self, full_name: str, issue_number: int) -> list[Comment]:
        with self.lock:
            return [c for c in self.repo(full_name).comments.values() if c.issue == issue_number]

    # -- scripting -------------------------------------------------------------------------

    def fail(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def calls(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, filtered by method and a regex searched in the path."""
        return [
            r
            for r in list(self.requests)
            if (method is None or r.method == method.upper()) and (path is None or re.search(path, r.path))
        ]

    def _next_fault(self, rec: RecordedRequest) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.method is not None and f.method.upper() != rec.method:
                    continue
                if f.match is not None and not re.search(f.match, rec.path):
                    continue
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        self.faults.remove(f)
                return f
            return None

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # -- JSON shapes -----------------------------------------------------------------------

    def _user(self, login: str) -> dict[str, Any]:
        with self.lock:
            login, uid = self.users.get(login.lower(), (login, 0))
        return {
            "login": login,
            "id": uid,
            "node_id": node_id("User", uid),
            "avatar_url": f"{self.url}/avatars/{login}",
            "gravatar_id": "",
            "url": f"{self.url}/users/{login}",
            "html_url": f"{self.url}/{login}",
            "type": "Bot" if login.endswith("[bot]") else "User",
            "site_admin": False,
        }

    def _api(self, repo: Repo) -> str:
        return f"{self.url}/repos/{repo.full_name}"

    def _html(self, repo: Repo) -> str:
        return f"{self.url}/{repo.full_name}"

    def _repo_json(self, repo: Repo) -> dict[str, Any]:
        api = self._api(repo)
        return {
            "id": repo.id,
            "node_id": node_id("Repository", repo.id),
            "name": repo.name,
            "full_name": repo.full_name,
            "owner": self._user(repo.owner),
            "private": repo.private,
            "visibility": "private" if repo.private else "public",
            "html_url": self._html(repo),
            "description": None,
            "fork": False,
            "url": api,
            "default_branch": repo.default_branch,
            "issues_url": api + "/issues{/number}",
            "pulls_url": api + "/pulls{/number}",
            "labels_url": api + "/labels{/name}",
            "collaborators_url": api + "/collaborators{/collaborator}",
            "clone_url": f"{self._html(repo)}.git",
            "has_issues": True,
            "archived": False,
            "disabled": False,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": now_iso(),
            "pushed_at": now_iso(),
        }

    def _label_json(self, repo: Repo, label: Label) -> dict[str, Any]:
        return {
            "id": label.id,
            "node_id": node_id("Label", label.id),
            "url": f"{self._api(repo)}/labels/{urllib.parse.quote(label.name, safe='')}",
            "name": label.name,
            "color": label.color,
            "default": False,
            "description": label.description,
        }

    def _issue_json(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        api = f"{self._api(repo)}/issues/{issue.number}"
        out = {
            "id": issue.id,
            "node_id": node_id("Issue", issue.id),
            "url": api,
            "repository_url": self._api(repo),
            "labels_url": api + "/labels{/name}",
            "comments_url": api + "/comments",
            "events_url": api + "/events",
            "html_url": f"{self._html(repo)}/{'pull' if issue.pull else 'issues'}/{issue.number}",
            "number": issue.number,
            "state": issue.state,
            "state_reason": issue.state_reason,
            "title": issue.title,
            "body": issue.body,
            "user": self._user(issue.user),
            "labels": [self._label_json(repo, repo.labels[n.lower()]) for n in issue.labels if n.lower() in repo.labels],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "comments": sum(1 for c in repo.comments.values() if c.issue == issue.number),
            "created_at": now_iso(issue.created_at),
            "updated_at": now_iso(issue.updated_at),
            "closed_at": now_iso(issue.closed_at) if issue.closed_at else None,
            "author_association": self._association(repo, issue.user),
        }
        if issue.pull is not None:
            pr_api = f"{self._api(repo)}/pulls/{issue.number}"
            out["pull_request"] = {
                "url": pr_api,
                "html_url": out["html_url"],
                "diff_url": out["html_url"] + ".diff",
                "patch_url": out["html_url"] + ".patch",
                "merged_at": None,
            }
            out["draft"] = issue.pull.draft
        return out

    def _association(self, repo: Repo, login: str) -> str:
        if login.lower() == repo.owner.lower():
            return "OWNER"
        return "COLLABORATOR" if repo.permissions.get(login.lower(), "none") != "none" else "NONE"

    def _comment_json(self, repo: Repo, c: Comment) -> dict[str, Any]:
        return {
            "id": c.id,
            "node_id": node_id("IssueComment", c.id),
            "url": f"{self._api(repo)}/issues/comments/{c.id}",
            "html_url": f"{self._html(repo)}/issues/{c.issue}#issuecomment-{c.id}",
            "issue_url": f"{self._api(repo)}/issues/{c.issue}",
            "body": c.body,
            "user": self._user(c.user),
            "created_at": now_iso(c.created_at),
            "updated_at": now_iso(c.updated_at),
            "author_association": self._association(repo, c.user),
        }

    def _pull_json(self, repo: Repo, issue: Issue) -> dict[str, Any]:
        pr = issue.pull
        assert pr is not None
        api = f"{self._api(repo)}/pulls/{issue.number}"
        html = f"{self._html(repo)}/pull/{issue.number}"
        repo_json = self._repo_json(repo)

        def part(branch: str, sha: str, fork: str | None = None) -> dict[str, Any]:
            if fork:
                owner = fork.split("/")[0]
                return {
                    "label": f"{owner}:{branch}",
                    "ref": branch,
                    "sha": sha,
                    "user": self._user(owner),
                    "repo": {
                        **repo_json,
                        "full_name": fork,
                        "name": fork.split("/")[1],
                        "owner": self._user(owner),
                        "fork": True,
                    },
                }
            return {
                "label": f"{repo.owner}:{branch}",
                "ref": branch,
                "sha": sha,
                "user": self._user(repo.owner),
                "repo": repo_json,
            }

        return {
            "id": pr.id,
            "node_id": node_id("PullRequest", pr.id),
            "url": api,
            "html_url": html,
            "diff_url": html + ".diff",
            "patch_url": html + ".patch",
            "issue_url": f"{self._api(repo)}/issues/{issue.number}",
            "commits_url": api + "/commits",
            "review_comments_url": api + "/comments",
            "comments_url": f"{self._api(repo)}/issues/{issue.number}/comments",
            "statuses_url": f"{self._api(repo)}/statuses/{pr.head_sha}",
            "number": issue.number,
            "state": issue.state,
            "locked": False,
            "title": issue.title,
            "user": self._user(issue.user),
            "body": issue.body,
            "labels": [self._label_json(repo, repo.labels[n.lower()]) for n in issue.labels if n.lower() in repo.labels],
            "milestone": None,
            "active_lock_reason": None,
            "created_at": now_iso(issue.created_at),
            "updated_at": now_iso(issue.updated_at),
            "closed_at": now_iso(issue.closed_at) if issue.closed_at else None,
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [self._user(u) for u in pr.requested_reviewers],
            "requested_teams": [{"slug": t, "name": t} for t in pr.requested_teams],
            "head": part(pr.head, pr.head_sha, pr.head_repo),
            "base": part(pr.base, pr.base_sha),
            "_links": {
                "self": {"href": api},
                "html": {"href": html},
                "issue": {"href": f"{self._api(repo)}/issues/{issue.number}"},
            },
            "author_association": self._association(repo, issue.user),
            "auto_merge": None,
            "draft": pr.draft,
            "merged": pr.merged,
            "mergeable": None,
            "rebaseable": None,
            "mergeable_state": "unknown",
            "merged_by": None,
            "comments": sum(1 for c in repo.comments.values() if c.issue == issue.number),
            "review_comments": 0,
            "maintainer_can_modify": pr.maintainer_can_modify,
            "commits": 1,
            "additions": 0,
            "deletions": 0,
            "changed_files": 0,
        }

    # -- HTTP ------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        split = urllib.parse.urlsplit(h.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in h.headers.items()}
        rec = RecordedRequest(
            method=h.command, path=split.path, query=query, headers=headers, body=body, raw=raw, time=time.time()
        )
        with self.lock:
            self.requests.append(rec)
        after: Callable[[], None] | None = None
        try:
            self._check_auth(rec)
            fault = self._next_fault(rec)
            if fault is not None and fault.delay:
                self.sleep(fault.delay)
            if fault is not None and fault.status is not None:
                raise self._fault_error(fault)
            if raw and body is None:
                raise ApiError(400, "Problems parsing JSON")
            status, payload, extra, after = self._route(rec)
            self._send(h, rec, status, payload, extra)
        except ApiError as e:
            err: dict[str, Any] = {"message": e.message, "documentation_url": DOCS}
            if e.errors:
                err["errors"] = e.errors
            if e.status in (401, 404):
                err["status"] = str(e.status)
            self._send(h, rec, e.status, err, e.headers)
        except (BrokenPipeError, ConnectionResetError):
            return
        if after is not None:
            after()

    def _check_auth(self, rec: RecordedRequest) -> None:
        auth = rec.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not given.strip():
            raise ApiError(401, "Bad credentials")
        rec.token = given.strip()
        if self.token is not None and rec.token != self.token and rec.token not in self.job_tokens:
            raise ApiError(401, "Bad credentials")

    def job_token(self, permissions: dict[str, str]) -> str:
        """A new GITHUB_TOKEN with exactly these `permissions:` (metadata: read is implied)."""
        with self.lock:
            tok = f"ghs_job{len(self.job_tokens) + 1:04d}" + "x" * 28
            self.job_tokens[tok] = dict(permissions)
        return tok

    # the permission each route takes from a job token (GitHub's "Permissions required for
    # GitHub Apps"); None: metadata, always granted
    SCOPES: dict[str, tuple[str, str] | None] = {
        "get_rate_limit": None,
        "get_repo": None,
        "get_permission": None,
        "list_issues": ("issues", "read"),
        "get_issue": ("issues", "read"),
        "create_issue": ("issues", "write"),
        "edit_issue": ("issues", "write"),
        "list_comments": ("issues", "read"),
        "get_comment": ("issues", "read"),
        "create_comment": ("issues", "write"),
        "edit_comment": ("issues", "write"),
        "delete_comment": ("issues", "write"),
        "list_issue_labels": ("issues", "read"),
        "add_issue_labels": ("issues", "write"),
        "remove_issue_label": ("issues", "write"),
        "list_labels": ("issues", "read"),
        "create_label": ("issues", "write"),
        "list_pulls": ("pull-requests", "read"),
        "create_pull": ("pull-requests", "write"),
        "get_pull": ("pull-requests", "read"),
        "edit_pull": ("pull-requests", "write"),
        "request_reviewers": ("pull-requests", "write"),
        "review_reply": ("pull-requests", "write"),
        "graphql": ("pull-requests", "write"),
        "review_comments": ("pull-requests", "read"),
        "dispatch": ("contents", "write"),
        "get_contents": ("contents", "read"),
    }

    def _check_scope(self, rec: RecordedRequest, name: str, args: dict[str, str]) -> None:
        granted = self.job_tokens.get(rec.token)
        if granted is None:
            return  # the server's own token: a personal access token with every scope
        if name == "get_user":
            raise ApiError(403, "Resource not accessible by integration")
        need = self.SCOPES.get(name, ("unknown", "write"))
        rec.needed = need
        if need is None:
            return
        perm, level = need
        ok = {"read": ("read", "write"), "write": ("write",)}[level]
        if granted.get(perm) in ok:
            return
        # an issue-API call on a pull request is allowed by pull-requests too
        if perm == "issues" and "n" in args:
            repo = self.repos.get(f"{args.get('o')}/{args.get('r')}".lower())
            issue = repo.issues.get(int(args["n"])) if repo else None
            if issue is not None and issue.pull is not None and granted.get("pull-requests") in ok:
                rec.needed = ("pull-requests", level)
                return
        raise ApiError(403, "Resource not accessible by integration")

    def _fault_error(self, f: Fault) -> ApiError:
        assert f.status is not None
        rid = uuid.uuid4().hex[:16].upper()
        headers = dict(f.headers)
        message = f.message
        if f.retry_after is not None:
            headers.setdefault("retry-after", str(math.ceil(f.retry_after)))
        if f.reset_in is not None:
            headers.setdefault("x-ratelimit-limit", str(self.rate_limit))
            headers.setdefault("x-ratelimit-remaining", "0")
            headers.setdefault("x-ratelimit-used", str(self.rate_limit))
            headers.setdefault("x-ratelimit-reset", str(math.ceil(time.time() + f.reset_in)))
            headers.setdefault("x-ratelimit-resource", "core")
            message = message or PRIMARY_MESSAGE.format(rid=rid)
        if f.secondary_rate_limit:
            message = message or SECONDARY_MESSAGE.format(rid=rid)
        headers.setdefault("x-github-request-id", rid)
        return ApiError(f.status, message, headers=headers)

    def _rate_headers(self) -> dict[str, str]:
        with self.lock:
            self.rate_used += 1
            used = self.rate_used
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(max(0, self.rate_limit - used)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(self.rate_reset),
            "x-ratelimit-resource": "core",
        }

    def _send(
        self, h: BaseHTTPRequestHandler, rec: RecordedRequest, status: int, payload: Any, extra: dict[str, str] | None = None
    ) -> None:
        rec.status = status
        raw = isinstance(payload, RawBody)
        data = b"" if payload is None else (payload.data if raw else json.dumps(payload).encode())
        headers = {
            "x-github-media-type": "github.v3; format=raw" if raw else "github.v3; format=json",
            "x-github-request-id": uuid.uuid4().hex[:16].upper(),
            **self._rate_headers(),
        }
        headers.update({k.lower(): v for k, v in (extra or {}).items()})
        try:
            h.send_response(status, REASONS.get(status))
            if payload is not None:
                h.send_header("content-type", "application/vnd.github.raw" if raw else "application/json; charset=utf-8")
            h.send_header("content-length", str(len(data)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- routing ---------------------------------------------------------------------------

    ROUTES: list[tuple[str, str, str]] = [
        ("GET", r"/user", "get_user"),
        ("GET", r"/rate_limit", "get_rate_limit"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)", "get_repo"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues", "list_issues"),
        ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues", "create_issue"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/comments/(?P<id>\d+)", "get_comment"),
        ("PATCH", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/comments/(?P<id>\d+)", "edit_comment"),
        ("DELETE", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/comments/(?P<id>\d+)", "delete_comment"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)", "get_issue"),
        ("PATCH", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)", "edit_issue"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/comments", "list_comments"),
        ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/comments", "create_comment"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/labels", "list_issue_labels"),
        ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/labels", "add_issue_labels"),
        ("DELETE", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/issues/(?P<n>\d+)/labels/(?P<name>[^/]+)", "remove_issue_label"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/labels", "list_labels"),
        ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/labels", "create_label"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls", "list_pulls"),
        ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls", "create_pull"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)", "get_pull"),
        ("PATCH", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)", "edit_pull"),
        ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)/requested_reviewers", "request_reviewers"),
        ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)/comments/(?P<id>\d+)/replies", "review_reply"),
        ("POST", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/dispatches", "dispatch"),
        ("POST", r"/graphql", "graphql"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/pulls/(?P<n>\d+)/reviews/(?P<id>\d+)/comments", "review_comments"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/collaborators/(?P<u>[^/]+)/permission", "get_permission"),
        ("GET", r"/repos/(?P<o>[^/]+)/(?P<r>[^/]+)/contents/(?P<path>.+)", "get_contents"),
    ]

    def _route(self, rec: RecordedRequest) -> tuple[int, Any, dict[str, str] | None, Callable[[], None] | None]:
        path = rec.path.rstrip("/") or "/"
        for method, pattern, name in self.ROUTES:
            m = re.fullmatch(pattern, path)
            if m and method == rec.method:
                args = {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
                self._check_scope(rec, name, args)
                with self.lock:
                    out = getattr(self, "_r_" + name)(rec, **args)
                if len(out) == 2:
                    return out[0], out[1], None, None
                if len(out) == 3:
                    return out[0], out[1], out[2], None
                return out
        raise ApiError(404)

    def _find_repo(self, o: str, r: str) -> Repo:
        repo = self.repos.get(f"{o}/{r}".lower())
        if repo is None:
            raise ApiError(404)
        return repo

    def _find_issue(self, repo: Repo, n: str | int) -> Issue:
        issue = repo.issues.get(int(n))
        if issue is None:
            raise ApiError(404)
        return issue

    def _object(self, rec: RecordedRequest) -> dict[str, Any]:
        if not isinstance(rec.body, dict):
            raise ApiError(400, "Problems parsing JSON")
        return rec.body

    def _paginate(self, rec: RecordedRequest, items: list[Any]) -> tuple[int, list[Any], dict[str, str]]:
        try:
            per_page = max(1, min(100, int(rec.query.get("per_page") or 30)))
            page = max(1, int(rec.query.get("page") or 1))
        except ValueError:
            raise ApiError(422, "Invalid pagination parameter") from None
        last = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]

        def link(p: int) -> str:
            q = dict(rec.query, per_page=str(per_page), page=str(p))
            return f"<{self.url}{rec.path}?{urllib.parse.urlencode(q)}>"

        rels = []
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels += [f'{link(1)}; rel="first"', f'{link(page - 1)}; rel="prev"']
        return 200, chunk, ({"link": ", ".join(rels)} if rels else {})

    # user, rate limit, repo

    def _r_get_user(self, rec: RecordedRequest) -> tuple:
        return 200, {**self._user(self.login), "name": self.login, "email": None}

    def _r_get_rate_limit(self, rec: RecordedRequest) -> tuple:
        core = {
            "limit": self.rate_limit,
            "used": self.rate_used,
            "remaining": max(0, self.rate_limit - self.rate_used),
            "reset": self.rate_reset,
        }
        other = {"limit": 30, "used": 0, "remaining": 30, "reset": self.rate_reset}
        return 200, {"resources": {"core": core, "search": other, "graphql": dict(core)}, "rate": core}

    def _r_get_repo(self, rec: RecordedRequest, o: str, r: str) -> tuple:
        return 200, self._repo_json(self._find_repo(o, r))

    # issues

    def _r_list_issues(self, rec: RecordedRequest, o: str, r: str) -> tuple:
        repo = self._find_repo(o, r)
        state = rec.query.get("state", "open")
        wanted = [x.strip().lower() for x in rec.query.get("labels", "").split(",") if x.strip()]
        creator = rec.query.get("creator", "").lower()
        items = [
            i
            for i in sorted(repo.issues.values(), key=lambda i: i.number, reverse=rec.query.get("direction", "desc") == "desc")
            if (state == "all" or i.state == state)
            and all(w in [n.lower() for n in i.labels] for w in wanted)
            and (not creator or i.user.lower() == creator)
        ]
        status, chunk, link = self._paginate(rec, items)
        return status, [self._issue_json(repo, i) for i in chunk], link

    def _r_create_issue(self, rec: RecordedRequest, o: str, r: str) -> tuple:
        repo = self._find_repo(o, r)
        body = self._object(rec)
        if not isinstance(body.get("title"), (str, int)) or not str(body.get("title")).strip():
            raise validation_failed({"resource": "Issue", "code": "missing_field", "field": "title"})
        labels = [self.add_label(repo.full_name, str(n)).name for n in body.get("labels") or []]
        number = len(repo.issues) + 1
        issue = Issue(number, self._next_id(), str(body["title"]), body.get("body"), self.login, labels)
        repo.issues[number] = issue
        return 201, self._issue_json(repo, issue)

    def _r_get_issue(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        return 200, self._issue_json(repo, self._find_issue(repo, n))

    def _r_edit_issue(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        issue = self._find_issue(repo, n)
        body = self._object(rec)
        self._apply_issue_edit(repo, issue, body)
        return 200, self._issue_json(repo, issue)

    def _apply_issue_edit(self, repo: Repo, issue: Issue, body: dict[str, Any]) -> None:
        if "title" in body:
            if not str(body["title"] or "").strip():
                raise validation_failed({"resource": "Issue", "code": "missing_field", "field": "title"})
            issue.title = str(body["title"])
        if "body" in body:
            issue.body = body["body"]
        if "state" in body:
            if body["state"] not in ("open", "closed"):
                raise validation_failed({"resource": "Issue", "code": "invalid", "field": "state"})
            issue.state = body["state"]
            issue.closed_at = time.time() if issue.state == "closed" else None
            issue.state_reason = body.get("state_reason") or ("completed" if issue.state == "closed" else "reopened")
        if "labels" in body:
            issue.labels = [self.add_label(repo.full_name, str(x)).name for x in body["labels"] or []]
        issue.updated_at = time.time()

    # comments

    def _r_list_comments(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        self._find_issue(repo, n)
        items = sorted((c for c in repo.comments.values() if c.issue == int(n)), key=lambda c: c.id)
        status, chunk, link = self._paginate(rec, items)
        return status, [self._comment_json(repo, c) for c in chunk], link

    def _r_create_comment(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        issue = self._find_issue(repo, n)
        body = self._object(rec)
        if not isinstance(body.get("body"), str) or not body["body"]:
            raise validation_failed({"resource": "IssueComment", "code": "missing_field", "field": "body"})
        if len(body["body"]) > 65536:
            raise validation_failed(
                {
                    "resource": "IssueComment",
                    "code": "custom",
                    "field": "body",
                    "message": "Body is too long (maximum is 65536 characters)",
                }
            )
        c = Comment(self._next_id(), issue.number, body["body"], self.login)
        repo.comments[c.id] = c
        issue.updated_at = time.time()
        return 201, self._comment_json(repo, c)

    def _find_comment(self, repo: Repo, id_: str) -> Comment:
        c = repo.comments.get(int(id_))
        if c is None:
            raise ApiError(404)
        return c

    def _r_get_comment(self, rec: RecordedRequest, o: str, r: str, id: str) -> tuple:
        repo = self._find_repo(o, r)
        return 200, self._comment_json(repo, self._find_comment(repo, id))

    def _r_edit_comment(self, rec: RecordedRequest, o: str, r: str, id: str) -> tuple:
        repo = self._find_repo(o, r)
        c = self._find_comment(repo, id)
        body = self._object(rec)
        if not isinstance(body.get("body"), str) or not body["body"]:
            raise validation_failed({"resource": "IssueComment", "code": "missing_field", "field": "body"})
        if len(body["body"]) > 65536:
            raise validation_failed(
                {
                    "resource": "IssueComment",
                    "code": "custom",
                    "field": "body",
                    "message": "Body is too long (maximum is 65536 characters)",
                }
            )
        c.body = body["body"]
        c.updated_at = time.time()
        return 200, self._comment_json(repo, c)

    def _r_delete_comment(self, rec: RecordedRequest, o: str, r: str, id: str) -> tuple:
        repo = self._find_repo(o, r)
        c = self._find_comment(repo, id)
        del repo.comments[c.id]
        return 204, None

    # labels

    def _r_list_issue_labels(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        issue = self._find_issue(repo, n)
        status, chunk, link = self._paginate(rec, list(issue.labels))
        return status, [self._label_json(repo, repo.labels[x.lower()]) for x in chunk], link

    def _r_add_issue_labels(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        issue = self._find_issue(repo, n)
        names = rec.body.get("labels") if isinstance(rec.body, dict) else rec.body
        if not isinstance(names, list) or not names or not all(isinstance(x, str) and x.strip() for x in names):
            raise validation_failed({"resource": "Label", "code": "invalid", "field": "labels"})
        for x in names:
            label = self.add_label(repo.full_name, x)
            if label.name.lower() not in [y.lower() for y in issue.labels]:
                issue.labels.append(label.name)
        issue.updated_at = time.time()
        return 200, [self._label_json(repo, repo.labels[x.lower()]) for x in issue.labels]

    def _r_remove_issue_label(self, rec: RecordedRequest, o: str, r: str, n: str, name: str) -> tuple:
        repo = self._find_repo(o, r)
        issue = self._find_issue(repo, n)
        keep = [x for x in issue.labels if x.lower() != name.lower()]
        if len(keep) == len(issue.labels):
            raise ApiError(404, "Label does not exist")
        issue.labels = keep
        return 200, [self._label_json(repo, repo.labels[x.lower()]) for x in issue.labels]

    def _r_list_labels(self, rec: RecordedRequest, o: str, r: str) -> tuple:
        repo = self._find_repo(o, r)
        status, chunk, link = self._paginate(rec, sorted(repo.labels.values(), key=lambda x: x.id))
        return status, [self._label_json(repo, x) for x in chunk], link

    def _r_create_label(self, rec: RecordedRequest, o: str, r: str) -> tuple:
        repo = self._find_repo(o, r)
        body = self._object(rec)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise validation_failed({"resource": "Label", "code": "missing_field", "field": "name"})
        if name.lower() in repo.labels:
            raise validation_failed({"resource": "Label", "code": "already_exists", "field": "name"})
        color = str(body.get("color") or "ededed").lstrip("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            raise validation_failed({"resource": "Label", "code": "invalid", "field": "color"})
        label = self.add_label(repo.full_name, name, color, body.get("description"))
        return 201, self._label_json(repo, label)

    # pulls

    def _git(self, repo: Repo, *args: str) -> str | None:
        assert repo.git_dir is not None
        p = subprocess.run(["git", "--git-dir", str(repo.git_dir), *args], capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None

    def _branch_sha(self, repo: Repo, branch: str) -> str | None:
        if repo.git_dir is None:
            return uuid.uuid5(uuid.NAMESPACE_URL, f"{repo.full_name}:{branch}").hex + "00000000"
        return self._git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")

    def _head_branch(self, repo: Repo, head: str) -> str:
        if ":" in head:
            owner, branch = head.split(":", 1)
            if owner.lower() != repo.owner.lower():
                raise validation_failed({"resource": "PullRequest", "field": "head", "code": "invalid"})
            return branch
        return head

    def _r_list_pulls(self, rec: RecordedRequest, o: str, r: str) -> tuple:
        repo = self._find_repo(o, r)
        state = rec.query.get("state", "open")
        head = rec.query.get("head")
        base = rec.query.get("base")
        head_owner, head_branch = head.split(":", 1) if head and ":" in head else (None, head)
        items = [
            i
            for i in sorted(repo.pulls.values(), key=lambda i: i.number, reverse=rec.query.get("direction", "desc") == "desc")
            if (state == "all" or i.state == state)
            and (not head or ((head_owner or "").lower() in ("", repo.owner.lower()) and i.pull.head == head_branch))
            and (not base or i.pull.base == base)
        ]
        status, chunk, link = self._paginate(rec, items)
        return status, [self._pull_json(repo, i) for i in chunk], link

    def _r_create_pull(self, rec: RecordedRequest, o: str, r: str) -> tuple:
        repo = self._find_repo(o, r)
        if not repo.actions_may_open_prs:  # the tokens of this server are the workflow's GITHUB_TOKEN
            raise ApiError(403, "GitHub Actions is not permitted to create or approve pull requests.")
        body = self._object(rec)
        missing = [f for f in ("head", "base") if not isinstance(body.get(f), str) or not body[f]]
        if not body.get("title") and not body.get("issue"):
            missing.insert(0, "title")
        if missing:
            raise validation_failed(*({"resource": "PullRequest", "code": "missing_field", "field": f} for f in missing))
        head = self._head_branch(repo, body["head"])
        base = body["base"]
        base_sha = self._branch_sha(repo, base)
        head_sha = self._branch_sha(repo, head)
        errors = []
        if base_sha is None:
            errors.append({"resource": "PullRequest", "field": "base", "code": "invalid"})
        if head_sha is None:
            errors.append({"resource": "PullRequest", "field": "head", "code": "invalid"})
        if errors:
            raise validation_failed(*errors)
        for other in repo.pulls.values():
            if other.state == "open" and other.pull.head == head and other.pull.base == base:
                raise validation_failed(
                    {
                        "resource": "PullRequest",
                        "code": "custom",
                        "message": f"A pull request already exists for {repo.owner}:{head}.",
                    }
                )
        if repo.git_dir is not None:
            ahead = self._git(repo, "rev-list", "--count", f"{base_sha}..{head_sha}")
            if ahead is not None and int(ahead) == 0:
                raise validation_failed(
                    {"resource": "PullRequest", "code": "custom", "message": f"No commits between {base} and {head}"}
                )
        draft = bool(body.get("draft", False))
        if draft and not repo.drafts:
            raise validation_failed(
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": "Draft pull requests are not supported in this repository.",
                }
            )
        if body.get("issue"):
            raise ApiError(422, "Converting an issue into a pull request is not supported by this fake")
        number = len(repo.issues) + 1
        issue = Issue(number, self._next_id(), str(body["title"]), body.get("body"), self.login, [])
        issue.pull = Pull(
            self._next_id(),
            head,
            base,
            draft,
            head_sha or "",
            base_sha or "",
            maintainer_can_modify=bool(body.get("maintainer_can_modify", True)),
        )
        repo.issues[number] = issue
        return 201, self._pull_json(repo, issue), {"location": f"{self._api(repo)}/pulls/{number}"}

    def add_review_comment(
        self,
        full_name: str,
        pull: int,
        *,
        user: str,
        body: str,
        path: str,
        line: int,
        diff_hunk: str,
        start_line: int | None = None,
        review_id: int | None = None,
    ) -> dict[str, Any]:
        """A review comment on a line of a pull request, as the `pull_request_review_comment`
        event's `comment` carries it."""
        repo = self.repo(full_name)
        cid = self._next_id()
        c = {
            "id": cid,
            "url": f"{self._api(repo)}/pulls/comments/{cid}",
            "pull_request_url": f"{self._api(repo)}/pulls/{pull}",
            "body": body,
            "path": path,
            "line": line,
            "start_line": start_line,
            "diff_hunk": diff_hunk,
            "user": self._user(user),
            "author_association": self._association(repo, user),
            "pull": pull,
            "html_url": f"{self._html(repo)}/pull/{pull}#discussion_r{cid}",
            "in_reply_to_id": None,
            "pull_request_review_id": review_id,
        }
        self.review_comments.append(c)
        return c

    def _r_review_reply(self, rec: RecordedRequest, o: str, r: str, n: str, id: str) -> tuple:
        repo = self._find_repo(o, r)
        self._find_pull(repo, n)
        parent = next((c for c in self.review_comments if c["id"] == int(id) and c["pull"] == int(n)), None)
        if parent is None:
            raise ApiError(404)
        body = self._object(rec).get("body")
        if not isinstance(body, str) or not body:
            raise validation_failed({"resource": "PullRequestReviewComment", "code": "missing_field", "field": "body"})
        rid = self._next_id()
        c = {
            **parent,
            "id": rid,
            "url": f"{self._api(repo)}/pulls/comments/{rid}",
            "body": body,
            "user": self._user(self.login),
            "in_reply_to_id": parent["id"],
        }
        self.review_comments.append(c)
        return 201, {k: v for k, v in c.items() if k != "pull"}

    def _r_review_comments(self, rec: RecordedRequest, o: str, r: str, n: str, id: str) -> tuple:
        repo = self._find_repo(o, r)
        self._find_pull(repo, n)
        items = [
            {k: v for k, v in c.items() if k != "pull"}
            for c in self.review_comments
            if c["pull"] == int(n) and c.get("pull_request_review_id") == int(id)
        ]
        status, page, headers = self._paginate(rec, items)
        return status, page, headers

    def _r_graphql(self, rec: RecordedRequest) -> tuple:
        """GraphQL, as far as the agent uses it: the markPullRequestReadyForReview mutation. Like
        GitHub, errors come back with status 200 in `errors`."""
        body = self._object(rec)
        query, inp = str(body.get("query") or ""), ((body.get("variables") or {}).get("input") or {})
        if "markPullRequestReadyForReview(" not in query:
            return 200, {"errors": [{"message": "this fake knows only markPullRequestReadyForReview"}]}
        want = inp.get("pullRequestId")
        for repo in self.repos.values():
            for issue in repo.issues.values():
                if issue.pull is not None and node_id("PullRequest", issue.pull.id) == want:
                    issue.pull.draft = False
                    return 200, {
                        "data": {
                            "markPullRequestReadyForReview": {
                                "clientMutationId": inp.get("clientMutationId"),
                                "pullRequest": {"isDraft": False},
                            }
                        }
                    }
        return 200, {
            "errors": [
                {
                    "type": "NOT_FOUND",
                    "path": ["markPullRequestReadyForReview"],
                    "message": f"Could not resolve to a node with the global id of '{want}'",
                }
            ]
        }

    def _find_pull(self, repo: Repo, n: str) -> Issue:
        issue = repo.issues.get(int(n))
        if issue is None or issue.pull is None:
            raise ApiError(404)
        return issue

    def _r_get_pull(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        return 200, self._pull_json(repo, self._find_pull(repo, n))

    def _r_edit_pull(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        issue = self._find_pull(repo, n)
        body = self._object(rec)
        assert issue.pull is not None
        if body.get("state") == "open" and issue.state != "open":
            for other in repo.pulls.values():
                if (
                    other is not issue
                    and other.state == "open"
                    and other.pull.head == issue.pull.head
                    and other.pull.base == issue.pull.base
                ):
                    raise validation_failed(
                        {
                            "resource": "PullRequest",
                            "code": "custom",
                            "message": f"A pull request already exists for {repo.owner}:{issue.pull.head}.",
                        }
                    )
        if "base" in body:
            if self._branch_sha(repo, str(body["base"])) is None:
                raise validation_failed({"resource": "PullRequest", "field": "base", "code": "invalid"})
            issue.pull.base = str(body["base"])
        if "maintainer_can_modify" in body:
            issue.pull.maintainer_can_modify = bool(body["maintainer_can_modify"])
        self._apply_issue_edit(repo, issue, {k: v for k, v in body.items() if k in ("title", "body", "state")})
        return 200, self._pull_json(repo, issue)

    def _r_request_reviewers(self, rec: RecordedRequest, o: str, r: str, n: str) -> tuple:
        repo = self._find_repo(o, r)
        issue = self._find_pull(repo, n)
        assert issue.pull is not None
        body = self._object(rec)
        reviewers = body.get("reviewers") or []
        teams = body.get("team_reviewers") or []
        if not isinstance(reviewers, list) or not isinstance(teams, list):
            raise validation_failed({"resource": "PullRequest", "code": "invalid", "field": "reviewers"})
        if any(str(u).lower() == issue.user.lower() for u in reviewers):
            raise validation_failed(
                {"resource": "PullRequest", "code": "custom", "message": "Review cannot be requested from pull request author."}
            )
        for u in reviewers:
            if repo.permissions.get(str(u).lower(), "none") == "none":
                raise ApiError(
                    422,
                    "Reviews may only be requested from collaborators. One or more of the users or "
                    f"teams you specified is not a collaborator of the {repo.full_name} repository.",
                )
        for u in reviewers:
            login = self.users[str(u).lower()][0]
            if login not in issue.pull.requested_reviewers:
                issue.pull.requested_reviewers.append(login)
        for t in teams:
            if t not in issue.pull.requested_teams:
                issue.pull.requested_teams.append(str(t))
        return 201, self._pull_json(repo, issue)

    # dispatch, permission

    def _r_dispatch(self, rec: RecordedRequest, o: str, r: str) -> tuple:
        repo = self._find_repo(o, r)
        body = self._object(rec)
        event_type = body.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise ApiError(422, 'Invalid request.\n\n"event_type" wasn\'t supplied.')
        if len(event_type) > 100:
            raise ApiError(422, "Invalid request.\n\nevent_type is too long (maximum is 100 characters).")
        payload = body.get("client_payload", {})
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ApiError(422, f"Invalid request.\n\nFor 'properties/client_payload', {json.dumps(payload)} is not an object.")
        if len(payload) > 10:
            raise ApiError(
                422, f"Invalid request.\n\nclient_payload: No more than 10 properties are allowed; {len(payload)} were supplied."
            )
        extra = set(body) - {"event_type", "client_payload"}
        if extra:
            raise ApiError(422, f"Invalid request.\n\n{sorted(extra)[0]} is not a permitted key.")
        entry = {"event_type": event_type, "client_payload": payload}
        self.dispatches.append(entry)
        repo.dispatches.append(entry)
        after = None
        if self.on_dispatch is not None:
            cb, name = self.on_dispatch, repo.full_name
            after = lambda: cb(name, json.loads(json.dumps(entry)))  # noqa: E731
        return 204, None, None, after

    def _r_get_contents(self, rec: RecordedRequest, o: str, r: str, path: str) -> tuple:
        """GET /repos/{o}/{r}/contents/{path}?ref=: a file as JSON (base64 content), or its bytes
        with `Accept: application/vnd.github.raw`; 404 "Not Found" when there is none."""
        repo = self._find_repo(o, r)
        if repo.git_dir is None:
            raise ApiError(404)
        ref = rec.query.get("ref") or repo.default_branch
        p = subprocess.run(["git", "--git-dir", str(repo.git_dir), "cat-file", "blob", f"{ref}:{path}"], capture_output=True)
        if p.returncode != 0:
            raise ApiError(404)
        data = p.stdout
        sha = subprocess.run(
            ["git", "--git-dir", str(repo.git_dir), "rev-parse", f"{ref}:{path}"], capture_output=True, text=True
        ).stdout.strip()
        if "raw" in rec.headers.get("accept", ""):
            return 200, RawBody(data)
        api = self._api(repo)
        return 200, {
            "type": "file",
            "encoding": "base64",
            "size": len(data),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "content": b64encode(data).decode(),
            "sha": sha,
            "url": f"{api}/contents/{path}?ref={ref}",
            "git_url": f"{api}/git/blobs/{sha}",
            "html_url": f"{self._html(repo)}/blob/{ref}/{path}",
            "download_url": None,
            "_links": {},
        }

    def _r_get_permission(self, rec: RecordedRequest, o: str, r: str, u: str) -> tuple:
        repo = self._find_repo(o, r)
        if u.lower() not in self.users:
            raise ApiError(404, f"{u} is not a user")
        role = repo.permissions.get(u.lower())
        if role is None:
            role = "none" if repo.private else "read"
        rank = ["none", "read", "triage", "write", "maintain", "admin"].index(role)
        user = self._user(u)
        user["permissions"] = {
            "admin": rank >= 5,
            "maintain": rank >= 4,
            "push": rank >= 3,
            "triage": rank >= 2,
            "pull": rank >= 1,
        }
        user["role_name"] = role
        return 200, {"permission": LEGACY[role], "role_name": role, "user": user}
