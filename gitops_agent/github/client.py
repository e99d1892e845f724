"""The only place gitops-agent talks to the GitHub REST API (through PyGithub).

Small methods, each one or two API calls, so a step's GitHub traffic is easy to read and to fake
(tests use `tests/fakes/github_server.py`, a real HTTP server speaking the same REST calls).

Retries live in the HTTP layer (an urllib3 `Retry` subclass of PyGithub's `GithubRetry`):

- secondary rate limits (403/429 with `retry-after`): wait that long; without the header and with
  GitHub's secondary-limit message: wait `secondary_rate_wait` (GitHub says at least a minute);
- primary rate limits (`x-ratelimit-remaining: 0`): wait until `x-ratelimit-reset` (+1 s);
- 5xx and connection errors: exponential backoff (`backoff_factor`), at most `retries` times;
- a wait longer than `max_rate_limit_wait` fails at once instead of blocking the job.

What is left after the retries becomes a `GitHubError` carrying the HTTP status and GitHub's own
message (plus the `errors` entries of a 422). The token never appears in an error or a log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.parse
from typing import Any, Callable, Iterator, TypeVar

import github
import requests
from github.GithubException import GithubException, RateLimitExceededException
from github.IssueComment import IssueComment

from gitops_agent.core.errors import BadName, ConfigError
from gitops_agent.github.errors import (  # noqa: F401 - the client's errors are part of its API
    GitHubAuthError,
    GitHubError,
    GitHubNotFound,
    GitHubRateLimited,
    GitHubValidationError,
    InvalidDispatch,
)
from gitops_agent.github.retry import make_retry

log = logging.getLogger(__name__)

ROLES = ("admin", "maintain", "write", "triage", "read", "none")
WRITE_ROLES = frozenset({"admin", "maintain", "write"})
MAX_EVENT_TYPE = 100
MAX_PAYLOAD_KEYS = 10
_REPO_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_LOGIN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")

T = TypeVar("T")


# -- the client ---------------------------------------------------------------------------


def _redactor(secret: str) -> Callable[[str], str]:
    def redact(text: str) -> str:
        return text.replace(secret, "***") if secret else text

    return redact


class GitHubClient:
    """One repository on GitHub (or GHES: `api_url`), authenticated with one token."""

    def __init__(
        self,
        repo_full_name: str,
        token: str,
        api_url: str | None = None,
        retries: int = 4,
        *,
        timeout: int = 30,
        per_page: int = 100,
        backoff_factor: float = 0.5,
        secondary_rate_wait: float = 60.0,
        max_rate_limit_wait: float | None = 600.0,
        seconds_between_requests: float | None = 0.25,
        seconds_between_writes: float | None = 1.0,
    ) -> None:
        if not _REPO_RE.fullmatch(repo_full_name or ""):
            raise BadName(f"not a GitHub repository name (owner/name): {repo_full_name!r}")
        if not token or not token.strip():
            raise ConfigError("no GitHub token (set GITHUB_TOKEN)")
        self.repo_full_name = repo_full_name
        self.owner = repo_full_name.split("/", 1)[0]
        self.api_url = (api_url or os.environ.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
        self._redact = _redactor(token.strip())
        self._token = token.strip()
        self._gh = github.Github(
            base_url=self.api_url,
            auth=github.Auth.Token(token.strip()),
            retry=make_retry(retries, backoff_factor, secondary_rate_wait, max_rate_limit_wait),
            timeout=int(timeout),
            per_page=per_page,
            lazy=True,  # no GET for objects we only act on (repo, issue, comment by id)
            seconds_between_requests=seconds_between_requests,
            seconds_between_writes=seconds_between_writes,
        )
        self._repo = self._gh.get_repo(repo_full_name)

    def __repr__(self) -> str:
        return f"GitHubClient({self.repo_full_name!r}, api_url={self.api_url!r})"

    def _outbound(self, text: str) -> str:
        """Text about to be posted (comments, PR title and body): secret values this process
        knows (credential-named variables, this client's token) and common token shapes are
        replaced by [REDACTED] -- the last guard before anything reaches GitHub."""
        from gitops_agent.safety.secrets import process_secrets, redact

        return redact(text or "", process_secrets() + [self._token])

    # -- error translation -----------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except GithubException as e:
            raise self._error(what, e) from None
        except requests.RequestException as e:
            raise GitHubError(what, None, self._redact(f"{type(e).__name__}: {e}")) from None

    def _error(self, what: str, e: GithubException) -> GitHubError:
        data = e.data if isinstance(e.data, dict) else {}
        message = str(data.get("message") or e.message or (data.get("data") if data else "") or "").strip()
        errors = []
        for err in data.get("errors") or []:
            if isinstance(err, dict):
                errors.append(
                    str(err.get("message") or " ".join(str(err[k]) for k in ("resource", "field", "code") if err.get(k)))
                )
            else:
                errors.append(str(err))
        message, errors = self._redact(message or "(no message)"), [self._redact(x) for x in errors]
        lc = message.lower()
        rate_limited = isinstance(e, RateLimitExceededException) or (
            e.status in (403, 429)
            and (lc.startswith("api rate limit exceeded") or "secondary rate limit" in lc or lc.startswith("rate limited"))
        )
        if rate_limited:
            cls: type[GitHubError] = GitHubRateLimited
        elif e.status in (401, 403):
            cls = GitHubAuthError
        elif e.status == 404:
            cls = GitHubNotFound
        elif e.status == 422:
            cls = GitHubValidationError
        else:
            cls = GitHubError
        return cls(what, e.status, message, errors)

    # -- permissions -----------------------------------------------------------------------

    def permission(self, user: str) -> str:
        """The user's role on the repository: admin, maintain, write, triage, read or none.
        Unknown users and non-collaborators that GitHub answers with 404 are "none"."""
        if not _LOGIN_RE.fullmatch(user or ""):
            return "none"
        url = f"{self._repo.url}/collaborators/{urllib.parse.quote(user, safe='')}/permission"
        try:
            _, data = self._call(f"permission of {user}", lambda: self._repo.requester.requestJsonAndCheck("GET", url))
        except GitHubNotFound:
            return "none"
        data = data or {}
        role = data.get("role_name")
        if role in ROLES:
            return role
        legacy = data.get("permission")  # custom roles: fall back to the base permission
        return legacy if legacy in ROLES else "none"

    def can_write(self, user: str) -> bool:
        return self.permission(user) in WRITE_ROLES

    # -- issues and comments ---------------------------------------------------------------

    def issue(self, number: int) -> dict[str, Any]:
        def get() -> dict[str, Any]:
            data = self._repo.get_issue(int(number)).raw_data
            return {
                "title": data.get("title") or "",
                "body": data.get("body") or "",
                "user": (data.get("user") or {}).get("login", ""),
                "labels": [lb["name"] if isinstance(lb, dict) else str(lb) for lb in data.get("labels") or []],
                "state": data.get("state", "open"),
                "is_pull_request": bool(data.get("pull_request")),
            }

        return self._call(f"get issue #{number}", get)

    def pull_head(self, number: int) -> tuple[str, bool]:
        """(head branch, whether it lives in this repository -- not a fork) of pull request ``number``."""

        def get() -> tuple[str, bool]:
            data = self._repo.get_pull(int(number)).raw_data
            head = data.get("head") or {}
            full = str((head.get("repo") or {}).get("full_name") or "")
            return str(head.get("ref") or ""), full.lower() == self.repo_full_name.lower()

        return self._call(f"get pull request #{number}", get)

    def mark_ready(self, number: int) -> bool:
        """Take pull request ``number`` out of draft (GraphQL: REST cannot). False when GitHub
        refused it (logged); the answer is posted either way."""
        try:

            def ready() -> bool:
                pr = self._repo.get_pull(int(number))
                if pr.draft:
                    pr.mark_ready_for_review()
                return True

            return self._call(f"mark pull request #{number} ready for review", ready)
        except GitHubError as e:
            log.warning("pull request #%s stays a draft: %s", number, e)
            return False

    def review_comments(self, pull: int, review_id: int, limit: int = 30) -> list[dict[str, Any]]:
        """The line comments of one review (path, line, start_line, diff_hunk, body), at most ``limit``."""

        def get() -> list[dict[str, Any]]:
            # one page, read as JSON: PyGithub's objects would fetch each comment again for a missing field
            pulls = f"{self.api_url}/repos/{self.repo_full_name}/pulls/{int(pull)}"
            url = f"{pulls}/reviews/{int(review_id)}/comments?per_page={int(limit)}"
            _, data = self._repo.requester.requestJsonAndCheck("GET", url)
            keys = ("path", "line", "start_line", "original_line", "diff_hunk", "body")
            return [{k: c.get(k) for k in keys} for c in (data if isinstance(data, list) else [])[:limit] if isinstance(c, dict)]

        return self._call(f"read the comments of review {review_id} on #{pull}", get)

    def reply_in_thread(self, pull: int, comment_id: int, body: str) -> None:
        """Answer a review comment in its own thread."""
        body = self._outbound(body)
        self._call(
            f"reply to review comment {comment_id} on #{pull}",
            lambda: self._repo.get_pull(int(pull)).create_review_comment_reply(int(comment_id), body),
        )

    def file_text(self, path: str, ref: str | None = None) -> str | None:
        """A file of the repository (default branch unless ``ref``), or None if there is none."""

        def get() -> str:
            c = self._repo.get_contents(path, ref=ref) if ref else self._repo.get_contents(path)
            if isinstance(c, list):
                raise GitHubError(f"read {path}", 422, "is a directory")
            return c.decoded_content.decode("utf-8", "replace")

        try:
            return self._call(f"read {path}", get)
        except GitHubNotFound:
            return None

    def comment(self, issue_number: int, body: str) -> tuple[int, str]:
        body = self._outbound(body)
        c = self._call(f"comment on #{issue_number}", lambda: self._repo.get_issue(int(issue_number)).create_comment(body))
        return c.id, c.html_url

    def edit_comment(self, comment_id: int, body: str) -> None:
        c = IssueComment(self._repo.requester, url=f"{self._repo.url}/issues/comments/{int(comment_id)}")
        body = self._outbound(body)
        self._call(f"edit comment {comment_id}", lambda: c.edit(body))

    def _comments(self, issue_number: int) -> Iterator[IssueComment]:
        return iter(self._repo.get_issue(int(issue_number)).get_comments())

    def _find(self, issue_number: int, marker: str) -> IssueComment | None:
        if not marker:
            raise ValueError("marker must not be empty")

        def scan() -> IssueComment | None:
            for c in self._comments(issue_number):
                # ours only: a marker opens every comment the agent writes, and anyone can
                # type a marker into a comment of their own (or get a model to)
                if (c.body or "").lstrip().startswith(marker) and self._ours(c):
                    return c
            return None

        return self._call(f"list comments of #{issue_number}", scan)

    def self_login(self) -> str | None:
        """The login this token posts as (GET /user); None where the token cannot tell (the job's
        GITHUB_TOKEN, an app installation token), then a bot's comments count as ours."""
        if not hasattr(self, "_self_login"):
            try:
                _, data = self._call("who am I", lambda: self._repo.requester.requestJsonAndCheck("GET", f"{self.api_url}/user"))
                self._self_login = (data or {}).get("login") or None
            except GitHubError:
                self._self_login = None
        return self._self_login

    def _ours(self, c: IssueComment) -> bool:
        try:
            login = c.user.login if c.user else ""
        except Exception:  # noqa: BLE001 - a comment without its user: not ours
            return False
        me = self.self_login()
        return login.lower() == me.lower() if me else login.endswith("[bot]")

    def find_comment(self, issue_number: int, marker: str) -> int | None:
        """Id of the first comment whose body contains `marker` (e.g. `<!-- gitops-agent:task=ID -->`)."""
        c = self._find(issue_number, marker)
        return c.id if c is not None else None

    def upsert_comment(self, issue_number: int, marker: str, body: str) -> int:
        """The one comment carrying `marker`: edited in place when it exists (not touched when the
        body is the same), else created. The marker is appended to `body` when it lacks it."""
        if not body.lstrip().startswith(marker):
            body = f"{marker}\n{body}"
        body = self._outbound(body)
        c = self._find(issue_number, marker)
        if c is None:
            return self.comment(issue_number, body)[0]
        if c.body != body:
            self._call(f"edit comment {c.id}", lambda: c.edit(body))
        return c.id

    def add_labels(self, issue_number: int, labels: list[str]) -> None:
        """Add labels to an issue or PR (GitHub creates labels that do not exist yet)."""
        labels = [x for x in dict.fromkeys(labels) if x]
        if labels:
            self._call(f"label #{issue_number}", lambda: self._repo.get_issue(int(issue_number)).add_to_labels(*labels))

    # -- pull requests ---------------------------------------------------------------------

    def _open_pull_for(self, head: str, base: str) -> Any:
        pulls = self._repo.get_pulls(state="open", head=f"{self.owner}:{head}", base=base)
        for pr in pulls:
            return pr
        return None

    def find_pull(self, head: str, base: str) -> tuple[int, str] | None:
        """(number, html_url) of the open pull request head -> base, or None."""
        pr = self._call(f"find pull request {head} -> {base}", lambda: self._open_pull_for(head, base))
        return (pr.number, pr.html_url) if pr is not None else None

    def open_pull(
        self,
        head: str,
        base: str,
        title: str,
        body: str,
        draft: bool = True,
        reviewers: list[str] | None = None,
        again: list[str] | None = None,
    ) -> tuple[int, str]:
        """Open a PR head -> base, or update the body of the open one (idempotent). Returns
        (number, html_url). Reviewer requests that GitHub refuses are logged and ignored."""
        what = f"pull request {head} -> {base}"
        title, body = self._outbound(title), self._outbound(body)
        pr = self._call(f"find {what}", lambda: self._open_pull_for(head, base))
        created = pr is None
        if pr is not None:
            if pr.body != body:
                self._call(f"update {what}", lambda: pr.edit(body=body))
        else:
            try:
                pr = self._call(
                    f"open {what}", lambda: self._repo.create_pull(base=base, head=head, title=title, body=body, draft=draft)
                )
            except GitHubValidationError as e:
                text = " ".join([e.github_message, *e.errors]).lower()
                if "already exists" in text:  # lost a race with another step: use that one
                    created = False
                    pr = self._call(f"find {what}", lambda: self._open_pull_for(head, base))
                    if pr is None:
                        raise
                    if pr.body != body:
                        self._call(f"update {what}", lambda: pr.edit(body=body))
                elif draft and "draft" in text:  # drafts not available (private repo on a free plan)
                    log.warning("draft pull requests are not supported in %s; opening a ready one", self.repo_full_name)
                    pr = self._call(
                        f"open {what}", lambda: self._repo.create_pull(base=base, head=head, title=title, body=body, draft=False)
                    )
                else:
                    raise
        if created:  # reviewers are asked once, when the pull request is opened
            self._request_reviewers(pr, [r for r in dict.fromkeys(reviewers or []) if r])
        elif again:  # a follow-up's answer: whoever asked is asked to review again
            self._request_reviewers(pr, [r for r in dict.fromkeys(again) if r])
        return pr.number, pr.html_url

    def _request_reviewers(self, pr: Any, reviewers: list[str]) -> None:
        if not reviewers:
            return
        try:
            self._call(f"request reviewers on #{pr.number}", lambda: pr.create_review_request(reviewers=reviewers))
            return
        except GitHubError as e:
            if len(reviewers) == 1:
                log.warning("reviewer %s not requested on PR #%s: %s", reviewers[0], pr.number, e)
                return
        for r in reviewers:  # one refused reviewer (e.g. the PR's author) must not block the others
            try:
                self._call(f"request reviewer {r} on #{pr.number}", lambda: pr.create_review_request(reviewers=[r]))
            except GitHubError as e:
                log.warning("reviewer %s not requested on PR #%s: %s", r, pr.number, e)

    # -- repository_dispatch ---------------------------------------------------------------

    @staticmethod
    def check_dispatch(event_type: str, client_payload: dict[str, Any]) -> None:
        """GitHub's limits for repository_dispatch, checked before sending (raises InvalidDispatch)."""
        if not isinstance(event_type, str) or not event_type.strip():
            raise InvalidDispatch("event_type must be a non-empty string")
        if len(event_type) > MAX_EVENT_TYPE:
            raise InvalidDispatch(f"event_type is {len(event_type)} characters long; GitHub allows at most {MAX_EVENT_TYPE}")
        if not isinstance(client_payload, dict):
            raise InvalidDispatch(f"client_payload must be a JSON object, not {type(client_payload).__name__}")
        if len(client_payload) > MAX_PAYLOAD_KEYS:
            raise InvalidDispatch(
                f"client_payload has {len(client_payload)} top-level keys ({', '.join(map(str, client_payload))}); "
                f"GitHub allows at most {MAX_PAYLOAD_KEYS} top-level properties"
            )
        bad = [k for k in client_payload if not isinstance(k, str)]
        if bad:
            raise InvalidDispatch(f"client_payload keys must be strings, not {bad[0]!r}")
        try:
            json.dumps(client_payload, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidDispatch(f"client_payload is not JSON-serialisable: {e}") from None

    def dispatch(self, event_type: str, client_payload: dict[str, Any]) -> None:
        """Send a repository_dispatch event (GitHub answers 204; a workflow `on: repository_dispatch`
        with `types: [event_type]` runs with `github.event.client_payload`)."""
        self.check_dispatch(event_type, client_payload)
        url = f"{self._repo.url}/dispatches"
        payload = {"event_type": event_type, "client_payload": client_payload}
        self._call(f"dispatch {event_type}", lambda: self._repo.requester.requestJsonAndCheck("POST", url, input=payload))
