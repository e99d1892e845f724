"""Errors of GitHub API calls, carrying the HTTP status and GitHub's own message."""

from __future__ import annotations

from gitops_agent.core.errors import AgentError

# -- errors -------------------------------------------------------------------------------


class GitHubError(AgentError):
    """A GitHub API call failed after retries. `status` is the HTTP status (None: no response,
    e.g. a connection error); `github_message` is GitHub's `message`, `errors` its 422 details."""

    def __init__(self, what: str, status: int | None, github_message: str, errors: list[str] | None = None):
        self.what = what
        self.status = status
        self.github_message = github_message
        self.errors = list(errors or [])
        detail = github_message + (f" ({'; '.join(self.errors)})" if self.errors else "")
        super().__init__(f"GitHub {what}: {status if status is not None else 'no response'} {detail}".rstrip())


class GitHubAuthError(GitHubError):
    """401 (bad or expired token) or 403 that is not a rate limit (missing permission)."""


class GitHubNotFound(GitHubError):
    """404: no such repository / issue / user, or the token cannot see it."""


class GitHubValidationError(GitHubError):
    """422: GitHub refused the request's content (see `errors`)."""


class GitHubRateLimited(GitHubError):
    """A rate limit that did not clear within the retries / `max_rate_limit_wait`."""


class InvalidDispatch(GitHubError, ValueError):
    """A repository_dispatch refused locally, before any request (GitHub would answer 422)."""

    def __init__(self, message: str):
        self.what, self.status, self.github_message, self.errors = "dispatch", None, message, []
        AgentError.__init__(self, f"invalid repository_dispatch: {message}")
