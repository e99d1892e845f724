"""OpenTelemetry spans for steps and model calls, with the GenAI semantic-convention attributes
(``gen_ai.operation.name``, ``gen_ai.system`` / ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, cache tokens, ...).

Optional in every way:

* without ``opentelemetry-sdk`` (or without an OTLP exporter package) everything here is a
  no-op: the spans are the API's non-recording spans, or this module's own stand-ins when not
  even ``opentelemetry-api`` is installed;
* :func:`setup` installs an OTLP exporter only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; the standard ``OTEL_*`` variables (headers,
  protocol, service name) are read by the exporter itself;
* a host application that configured its own global ``TracerProvider`` gets the spans there.

Live spans (wired by the engine)::

    with telemetry.step_span(task_id, seq, "executor", node="n2", agent="analyst", model=spec) as step:
        with telemetry.model_call_span(model.name, spec=spec, max_tokens=...) as call:
            resp = model.query(request)
            call.record(resp.usage, cost_usd=cost, response_model=resp.model, finish_reason=resp.stop_reason)
        step.record(record)              # the StepRecord: usage, cost, status, error

After the fact, from the branch alone (``gitops-agent trace TASK --otlp``)::

    telemetry.export_trace(build_trace(git, task_id))
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterator

from gitops_agent import __version__
from gitops_agent.core.state import StepRecord, Usage

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.observe.trace import Trace, TraceStep

__all__ = [
    "ModelCallSpan",
    "StepSpan",
    "export_trace",
    "get_tracer",
    "model_call_span",
    "provider_of",
    "reset",
    "sdk_available",
    "setup",
    "step_span",
]

INSTRUMENTATION = "gitops-agent"

# GenAI semantic conventions (opentelemetry-semantic-conventions, gen_ai_attributes)
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_SYSTEM = "gen_ai.system"  # older name, still read by many back ends
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"

_lock = threading.Lock()
_provider: Any = None  # our own TracerProvider, when setup() made one


def sdk_available() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def _otlp_exporter() -> Any | None:
    """The OTLP span exporter for OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf by default)."""
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return None
    return OTLPSpanExporter()


def setup(service_name: str | None = None, exporter: Any | None = None, *, batch: bool | None = None) -> bool:
    """Send this process's spans somewhere. With ``exporter`` (e.g. the SDK's
    ``InMemorySpanExporter``) spans go there; otherwise to OTLP when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Returns whether spans are now recorded by us.
    Idempotent: a second call with no exporter keeps the first setup."""
    global _provider
    if not sdk_available():
        return False
    with _lock:
        if _provider is not None and exporter is None:
            return True
        if exporter is None:
            if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
                return False
            exporter = _otlp_exporter()
            if exporter is None:
                return False
            batch = True if batch is None else batch
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "gitops-agent"
        provider = TracerProvider(resource=Resource.create({"service.name": name, "service.version": __version__}))
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
        old, _provider = _provider, provider
    if old is not None:
        old.shutdown()
    return True


def flush(timeout_ms: int = 10_000) -> None:
    """Export what is buffered (call before a short-lived job exits)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def reset() -> None:
    """Drop our provider (tests)."""
    global _provider
    with _lock:
        old, _provider = _provider, None
    if old is not None:
        old.shutdown()


class _NoopSpan:
    def set_attribute(self, *a: Any, **k: Any) -> None: ...
    def set_attributes(self, *a: Any, **k: Any) -> None: ...
    def set_status(self, *a: Any, **k: Any) -> None: ...
    def record_exception(self, *a: Any, **k: Any) -> None: ...
    def add_event(self, *a: Any, **k: Any) -> None: ...
    def end(self, *a: Any, **k: Any) -> None: ...
    def is_recording(self) -> bool:
        return False


class _NoopTracer:
    @contextmanager
    def start_as_current_span(self, *a: Any, **k: Any) -> Iterator[_NoopSpan]:
        yield _NoopSpan()

    def start_span(self, *a: Any, **k: Any) -> _NoopSpan:
        return _NoopSpan()


def get_tracer() -> Any:
    """Our provider's tracer after :func:`setup`; else the global one (a host app's, or the
    API's no-op); else a stand-in when opentelemetry-api is not installed."""
    if _provider is not None:
        return _provider.get_tracer(INSTRUMENTATION, __version__)
    try:
        from opentelemetry import trace as ot
    except ImportError:
        return _NoopTracer()
    return ot.get_tracer(INSTRUMENTATION, __version__)


def _kind(name: str) -> Any:
    try:
        from opentelemetry.trace import SpanKind
    except ImportError:
        return None
    return getattr(SpanKind, name)


def _set_error(span: Any, message: str) -> None:
    try:
        from opentelemetry.trace import Status, StatusCode
    except ImportError:
        return
    span.set_status(Status(StatusCode.ERROR, message[:500]))


def provider_of(model: str, spec: str | None = None) -> str:
    """The GenAI provider name for a model spec ("anthropic:…", "openai:…@url", "scripted:…")
    or, without one, a guess from the model id."""
    if spec and ":" in spec:
        p = spec.split(":", 1)[0]
        return {"anthropic": "anthropic", "openai": "openai", "scripted": "scripted"}.get(p, p)
    m = (spec or model or "").lower()
    if m.startswith("claude") or "anthropic" in m:
        return "anthropic"
    if m.startswith("scripted"):
        return "scripted"
    return "openai"


def _usage_attrs(usage: Usage) -> dict[str, int]:
    return {
        # all prompt tokens, cached or not (the conventions' reading of input_tokens)
        GEN_AI_USAGE_INPUT_TOKENS: usage.total_input,
        GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
        GEN_AI_USAGE_CACHE_READ: usage.cache_read_tokens,
        GEN_AI_USAGE_CACHE_CREATION: usage.cache_write_tokens,
        "gitops_agent.usage.uncached_input_tokens": usage.input_tokens,
    }


class ModelCallSpan:
    def __init__(self, span: Any):
        self.span = span

    def record(
        self, usage: Usage, *, cost_usd: float | None = None, response_model: str | None = None, finish_reason: str | None = None
    ) -> None:
        self.span.set_attributes(_usage_attrs(usage))
        if cost_usd is not None:
            self.span.set_attribute("gitops_agent.cost_usd", float(cost_usd))
        if response_model:
            self.span.set_attribute(GEN_AI_RESPONSE_MODEL, response_model)
        if finish_reason:
            self.span.set_attribute(GEN_AI_RESPONSE_FINISH_REASONS, [finish_reason])

    def error(self, message: str) -> None:
        _set_error(self.span, message)


class StepSpan:
    def __init__(self, span: Any):
        self.span = span

    def record(self, rec: StepRecord) -> None:
        self.span.set_attributes(
            {
                **_usage_attrs(rec.usage),
                "gitops_agent.cost_usd": float(rec.cost_usd),
                "gitops_agent.step.status": rec.status,
                "gitops_agent.step.turns": rec.turns,
                "gitops_agent.step.duration_ms": rec.duration_ms,
            }
        )
        if rec.model:
            self.span.set_attribute(GEN_AI_REQUEST_MODEL, rec.model)
        if rec.status == "failed" or rec.error:
            _set_error(self.span, rec.error or "step failed")

    def commit(self, sha: str) -> None:
        self.span.set_attribute("gitops_agent.commit", sha)


def _step_attrs(task_id: str, seq: int, role: str, node: str | None, agent: str | None, run_url: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        GEN_AI_OPERATION_NAME: "invoke_agent",
        GEN_AI_AGENT_NAME: agent or role,
        GEN_AI_CONVERSATION_ID: task_id,
        "gitops_agent.task.id": task_id,
        "gitops_agent.step.seq": seq,
        "gitops_agent.step.role": role,
    }
    if node:
        attrs["gitops_agent.node.id"] = node
    if run_url:
        attrs["gitops_agent.run_url"] = run_url
    return attrs


def _call_attrs(model: str, spec: str | None, max_tokens: int | None, operation: str) -> dict[str, Any]:
    provider = provider_of(model, spec)
    attrs: dict[str, Any] = {
        GEN_AI_OPERATION_NAME: operation,
        GEN_AI_SYSTEM: provider,
        GEN_AI_PROVIDER_NAME: provider,
        GEN_AI_REQUEST_MODEL: model,
    }
    if max_tokens:
        attrs[GEN_AI_REQUEST_MAX_TOKENS] = int(max_tokens)
    return attrs


@contextmanager
def step_span(
    task_id: str,
    seq: int,
    role: str,
    *,
    node: str | None = None,
    agent: str | None = None,
    model: str | None = None,
    run_url: str | None = None,
) -> Iterator[StepSpan]:
    """A span around one step (plan, execute, finish). An exception marks it as an error."""
    attrs = _step_attrs(task_id, seq, role, node, agent, run_url)
    if model:
        attrs[GEN_AI_REQUEST_MODEL] = model
    name = f"invoke_agent {agent or role}" + (f" {node}" if node else "")
    with get_tracer().start_as_current_span(name, kind=_kind("INTERNAL"), attributes=attrs) as span:
        yield StepSpan(span)


@contextmanager
def model_call_span(
    model: str, *, spec: str | None = None, max_tokens: int | None = None, operation: str = "chat"
) -> Iterator[ModelCallSpan]:
    """A span around one model call (``chat <model>``, kind CLIENT)."""
    with get_tracer().start_as_current_span(
        f"{operation} {model}", kind=_kind("CLIENT"), attributes=_call_attrs(model, spec, max_tokens, operation)
    ) as span:
        yield ModelCallSpan(span)


# ----------------------------------------------------------------------------- replay


def _ns(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000_000)


def export_trace(trace: "Trace", tracer: Any | None = None) -> int:
    """Replay a task from its trace (git history and step files) as spans: one for the task,
    one per step, one per model turn, with the recorded times (step start + duration; turns
    laid end to end from their latency and observation time). Returns the number of spans
    made (0 when nothing records them)."""
    tr = tracer or get_tracer()
    try:
        from opentelemetry import trace as ot
    except ImportError:
        return 0
    ends = [s.started_at + timedelta(milliseconds=s.duration_ms) for s in trace.steps if s.started_at]
    t0 = trace.created_at
    t_end = max(ends + [t0])
    count = 0
    root = tr.start_span(
        f"invoke_agent gitops-agent {trace.task_id}",
        kind=_kind("INTERNAL"),
        start_time=_ns(t0),
        attributes={
            GEN_AI_OPERATION_NAME: "invoke_agent",
            GEN_AI_AGENT_NAME: "gitops-agent",
            GEN_AI_CONVERSATION_ID: trace.task_id,
            "gitops_agent.task.id": trace.task_id,
            "gitops_agent.outcome": trace.outcome,
            "gitops_agent.cost_usd": float(trace.totals.cost_usd),
            **_usage_attrs(trace.totals.usage),
        },
    )
    if not root.is_recording():
        root.end(end_time=_ns(t_end))
        return 0
    count += 1
    ctx = ot.set_span_in_context(root)
    for s in trace.steps:
        if s.started_at is not None:
            count += _export_step(tr, ot, ctx, trace, s)
    root.end(end_time=_ns(t_end))
    return count


def _export_step(tr: Any, ot: Any, ctx: Any, trace: "Trace", s: "TraceStep") -> int:
    """The span of one recorded step (under ``ctx``, the task's) and one per model turn; returns how many
    (``ot``: the opentelemetry.trace module)."""
    count = 1
    start = s.started_at
    spec = trace.models.planner if s.role == "planner" else trace.models.executor if s.role == "executor" else None
    attrs = _step_attrs(trace.task_id, s.seq, s.role, s.node, s.agent or None, s.commit.run_url if s.commit else None)
    attrs.update(
        {
            **_usage_attrs(s.usage),
            "gitops_agent.cost_usd": float(s.cost_usd),
            "gitops_agent.step.status": s.status,
            "gitops_agent.step.turns": s.turns,
        }
    )
    if s.model:
        attrs[GEN_AI_REQUEST_MODEL] = s.model
    if s.commit:
        attrs["gitops_agent.commit"] = s.commit.sha
    name = f"invoke_agent {s.agent or s.role}" + (f" {s.node}" if s.node else "")
    step = tr.start_span(name, context=ctx, kind=_kind("INTERNAL"), start_time=_ns(start), attributes=attrs)
    if s.status == "failed" or s.error:
        _set_error(step, s.error or "step failed")
    sctx = ot.set_span_in_context(step)
    at = start
    for turn in s.transcript:
        model = turn.model or s.model
        call = tr.start_span(
            f"chat {model}",
            context=sctx,
            kind=_kind("CLIENT"),
            start_time=_ns(at),
            attributes={
                **_call_attrs(model, spec, None, "chat"),
                **_usage_attrs(turn.usage),
                GEN_AI_RESPONSE_MODEL: model,
                "gitops_agent.cost_usd": float(turn.cost_usd),
                "gitops_agent.turn": turn.turn,
                **({"gitops_agent.tool": turn.tool} if turn.tool else {}),
            },
        )
        count += 1
        at = at + timedelta(milliseconds=turn.latency_ms)
        if turn.error:
            _set_error(call, turn.error)
        call.end(end_time=_ns(at))
        if turn.observation is not None:
            at = at + timedelta(milliseconds=turn.observation.duration_ms)
    step.end(end_time=_ns(max(at, start + timedelta(milliseconds=s.duration_ms))))
    return count
