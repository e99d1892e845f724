"""Retries of GitHub API calls in the HTTP layer: rate limits honoured, 5xx backed off, long waits refused."""

from __future__ import annotations

import logging
import time
import urllib.parse
from typing import Any

from github import GithubRetry
from github.GithubException import RateLimitExceededExceedsMaxWait
from urllib3 import Retry

log = logging.getLogger(__name__)


# -- retries ------------------------------------------------------------------------------


class _Retry(GithubRetry):
    """PyGithub's GithubRetry (403 secondary limits by message, 5xx) plus: `retry-after` and
    `x-ratelimit-remaining: 0` / `x-ratelimit-reset` honoured on 429 as on 403, and waits capped."""

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if response is None or response.status not in (403, 429):
            return super().increment(method, url, response, error, _pool, _stacktrace)
        headers = response.headers
        path = urllib.parse.urlsplit(url or "").path
        retry_after = headers.get("Retry-After")
        reset = headers.get("X-RateLimit-Reset")
        if retry_after:
            wait = self.parse_retry_after(retry_after)
            self._check_wait(wait, response)
            retry = Retry.increment(self, method, url, response, error, _pool, _stacktrace)
            log.warning("GitHub %s on %s %s: retry-after %ss", response.status, method, path, retry_after)
            return retry  # urllib3 sleeps `Retry-After` itself (respect_retry_after_header)
        if headers.get("X-RateLimit-Remaining") == "0" and reset and reset.isdigit():
            wait = max(0.0, int(reset) - time.time()) + 1.0  # the reset happens some time in that second
        elif response.status == 429:
            wait = float(self.secondary_rate_wait)
        else:
            return super().increment(method, url, response, error, _pool, _stacktrace)  # 403: inspects the message
        self._check_wait(wait, response)
        retry = Retry.increment(self, method, url, response, error, _pool, _stacktrace)
        wait = max(wait, retry.get_backoff_time())
        retry.get_backoff_time = lambda: wait  # type: ignore[method-assign]
        log.warning("GitHub %s (rate limit) on %s %s: waiting %.1fs", response.status, method, path, wait)
        return retry

    def _check_wait(self, wait: float, response: Any) -> None:
        if self.max_rate_limit_wait is not None and wait > self.max_rate_limit_wait:
            raise RateLimitExceededExceedsMaxWait(
                response.status,
                {
                    "message": f"rate limited: GitHub asks to wait {wait:.0f}s, more than the "
                    f"allowed {self.max_rate_limit_wait:.0f}s"
                },
                dict(response.headers),
                wait=wait,
            )


def make_retry(
    retries: int, backoff_factor: float = 0.5, secondary_rate_wait: float = 60.0, max_rate_limit_wait: float | None = 600.0
) -> Retry:
    return _Retry(
        total=retries,
        backoff_factor=backoff_factor,
        status_forcelist=[429, *range(500, 600)],  # GithubRetry adds 403 and decides by headers/message
        allowed_methods=Retry.DEFAULT_ALLOWED_METHODS | {"GET", "POST", "PATCH"},
        raise_on_status=False,  # the last error response reaches PyGithub -> GithubException with GitHub's message
        secondary_rate_wait=secondary_rate_wait,
        max_rate_limit_wait=max_rate_limit_wait,
    )
