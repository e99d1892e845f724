"""The second line of retries, after the SDK's own.

The Anthropic and OpenAI SDKs retry a failed call a few times within seconds (`max_retries`,
honouring `retry-after` up to a minute). An overload or a rate limit often lasts longer than
that. What is left afterwards is a ``ModelError``; when it is ``retryable`` (overloaded, rate
limited, 5xx, a timeout, a dropped connection), :func:`query_with_retry` waits and asks again,
a bounded number of times:

- the wait is what the provider asked for (``retry-after`` / ``retry-after-ms``, kept on the
  error), else an exponential back-off with jitter (``backoff_s`` · 2^n, capped at ``max_wait_s``);
- a provider asking to wait longer than ``max_wait_s`` is not waited for: the error is raised
  at once (the step records it; the task ends reported, and can be resumed later);
- a ``FatalModelError`` (bad key, spend limit, bad request, unknown model) is never retried.
"""

from __future__ import annotations

import email.utils
import random
import time
from typing import Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from gitops_agent.core.errors import ModelError


class RetryPolicy(BaseModel):
    """`model_retry:` in the config: retries of a model call after the SDK's own."""

    model_config = ConfigDict(extra="forbid")
    attempts: int = Field(2, ge=0, le=10, description="Extra calls after a retryable error (0: none).")
    backoff_s: float = Field(5.0, ge=0, description="First back-off when the provider gives no retry-after; doubles each time.")
    max_wait_s: float = Field(120.0, ge=0, description="Longest wait; a provider asking for more fails the call at once.")


class TimeoutPolicy(BaseModel):
    """`model_timeout:` in the config: how long a model call may wait, and for what."""

    model_config = ConfigDict(extra="forbid")
    connect_s: float = Field(10.0, gt=0, description="Seconds to open a connection to the endpoint.")
    idle_s: float = Field(60.0, gt=0, description="Streaming: seconds without a byte of the answer before the call is given up.")
    response_s: float = Field(300.0, gt=0, description="Not streaming: seconds until the whole answer has arrived.")
    sdk_retries: int = Field(4, ge=0, le=10, description="Retries inside the provider's SDK (then model_retry's).")
    heartbeat_s: float = Field(15.0, gt=0, description="A progress line this often while a call waits.")

    def retries_within(self, limit: float | None, streaming: bool, retries: int | None = None) -> int:
        """The SDK's retries (``retries``, default ``sdk_retries``) that still fit in ``limit``
        seconds, so retries never outlast the task's wall budget."""
        retries = self.sdk_retries if retries is None else retries
        if limit is None:
            return retries
        read = self.idle_s if streaming else self.response_s
        return max(0, min(retries, int(limit // max(read, 0.1)) - 1))

    def for_call(self, limit: float | None, streaming: bool):
        """The SDK's Timeout for one call, never past ``limit`` seconds (the task's wall budget)."""
        from anthropic import Timeout  # the HTTP layer's Timeout, as both SDKs re-export it

        read = self.idle_s if streaming else self.response_s
        cap = (lambda t: t) if limit is None else (lambda t: max(0.1, min(t, limit)))
        return Timeout(connect=cap(self.connect_s), read=cap(read), write=cap(30.0), pool=cap(self.connect_s))


def retry_after_of(headers: Mapping[str, str] | Any) -> float | None:
    """Seconds a response asks to wait: ``retry-after-ms``, else ``retry-after`` (seconds or an
    HTTP date). None when absent or unreadable."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms:
            return max(0.0, float(ms) / 1000.0)
    except (TypeError, ValueError):
        pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(raw))
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def query_with_retry(
    call: Callable[[], Any],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[ModelError, int, float], None] | None = None,
) -> Any:
    """``call()``, again after a retryable ModelError, at most ``policy.attempts`` more times."""
    for attempt in range(policy.attempts + 1):
        try:
            return call()
        except ModelError as e:
            if not getattr(e, "retryable", False) or attempt >= policy.attempts:
                raise
            asked = getattr(e, "retry_after", None)
            if asked is not None and asked > policy.max_wait_s:
                raise ModelError(
                    f"{e} (the provider asks to wait {asked:.0f} s, more than model_retry.max_wait_s "
                    f"= {policy.max_wait_s:g} s; not retried)",
                    status=getattr(e, "status", None),
                    retry_after=asked,
                ) from e
            backoff = policy.backoff_s * (2**attempt) * random.uniform(0.8, 1.2)
            wait = min(policy.max_wait_s, asked if asked is not None else backoff)
            if on_retry is not None:
                on_retry(e, attempt + 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
