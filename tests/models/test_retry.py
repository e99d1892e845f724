"""The runtime's second line of retries (gitops_agent/models/retry.py): how long it waits before it
asks a provider again."""

from __future__ import annotations

import time

from gitops_agent.core.errors import ModelError
from gitops_agent.core.messages import Message, ModelRequest
from gitops_agent.models.retry import RetryPolicy, query_with_retry
from gitops_agent.models.scripted import ScriptedModel
from gitops_agent.observe.progress import RecordingReporter
from gitops_agent.runtime.context import Runtime
from gitops_agent.settings.config import AgentConfig


def test_the_wait_is_what_the_provider_asked_for_not_the_back_off():
    """A 429 with `retry-after: 7` is asked again after 7 s, not after the 100 s back-off; without
    a retry-after the back-off applies."""
    waits: list[float] = []
    told: list[float] = []
    errors = iter([ModelError("429 rate limited", status=429, retry_after=7.0, retryable=True)])

    def call():
        for e in errors:
            raise e
        return "ok"

    policy = RetryPolicy(attempts=1, backoff_s=100, max_wait_s=600)
    assert query_with_retry(call, policy, sleep=waits.append, on_retry=lambda e, n, wait: told.append(wait)) == "ok"
    assert waits == [7.0] and told == [7.0]
    waits.clear()
    errors = iter([ModelError("529 overloaded", status=529, retryable=True)])
    assert query_with_retry(call, policy, sleep=waits.append) == "ok"
    assert len(waits) == 1 and 80 <= waits[0] <= 120


def test_a_model_call_through_the_runtime_waits_the_asked_retry_after():
    """Through the runtime (what every step uses): the provider asks for 0.2 s; the call is made
    again after about that, and the progress line says so (the configured back-off is 3 s)."""

    class RateLimitedOnce(ScriptedModel):
        def query(self, request):
            if not self.calls:
                self.calls.append(request)
                raise ModelError("429 rate limited", status=429, retry_after=0.2, retryable=True)
            return super().query(request)

    model = RateLimitedOnce({"planner": [{"text": "hello"}]})
    cfg = AgentConfig()
    cfg.model_retry = RetryPolicy(attempts=2, backoff_s=3, max_wait_s=60)
    rep = RecordingReporter()
    rt = Runtime(git=None, config=cfg, brain=None, reporter=rep, models={"scripted:t": model})  # type: ignore[arg-type]
    t0 = time.monotonic()
    resp = rt.model("scripted:t").query(ModelRequest(system="s", messages=[Message.user("hi")], meta={"script_key": "planner"}))
    elapsed = time.monotonic() - t0
    assert resp.text == "hello" and len(model.calls) == 2
    assert 0.19 <= elapsed < 2.5  # the server's 0.2 s, not the policy's 3 s back-off
    assert [f["error"] for k, f in rep.events if k == "error"] == ["429 rate limited -- retry 1 in 0.2 s"]
