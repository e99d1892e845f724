"""What every step needs, built once per process: the git store, config, brain, models,
sandbox, reporter. Steps take a Runtime and a Job and return the next jobs."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from gitops_agent.brain.agents import Brain
from gitops_agent.core.errors import ConfigError
from gitops_agent.core.seams import Abortable, GitStore, Model, Preflight, Sandbox, Served
from gitops_agent.core.state import QueryRecord, StepRecord, Usage
from gitops_agent.core.trailers import agent_trailers
from gitops_agent.data.broker import Broker
from gitops_agent.data.environ import source_environ
from gitops_agent.data.files import files_source
from gitops_agent.models import make_model, model_id
from gitops_agent.models.pricing import Price, is_known, is_local_endpoint, price_of
from gitops_agent.models.specs import with_trusted_endpoint
from gitops_agent.observe.progress import Reporter
from gitops_agent.runtime.spending import SpendGate
from gitops_agent.sandbox.choose import make_sandbox
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.requirements import RequirementsError, parse_lock
from gitops_agent.sandbox.workbench import Workbench, ensure_workbench
from gitops_agent.settings.config import AgentConfig

# A model missing from the price table is counted at this price (a mid-range one), so a dollar
# budget still holds; the config's `prices:` sets the real one.
FALLBACK_PRICE = Price.anthropic(3, 15)


@dataclass
class Runtime:
    git: GitStore
    config: AgentConfig
    brain: Brain
    reporter: Reporter = field(default_factory=Reporter)
    # Injected models by spec (tests, benchmarks); others are built from their spec on first use.
    models: dict[str, Model] = field(default_factory=dict)
    sandbox: Sandbox | None = None
    run_url: str | None = None
    # Where the model's code may read shared data sets (memory branch), if any.
    data_dir: str | None = None
    on_commit: Callable[[str], None] | None = None
    # memory: the MemoryStore, made on first use; False switches memory off
    memory_store: Any = None
    # Builds a model from a spec instead of the providers (replay: every spec answers from the
    # recording, so no spec a recording names ever reaches a provider with a key).
    model_factory: Callable[[str], Model] | None = None
    # the repository's spending cap, on GitHub (gitops_agent/github/steps.py sets it)
    spend: SpendGate | None = None
    # reads a file of the repository where the settings were read (the task's base commit on
    # GitHub, the working tree locally): `sandbox.requirements` comes from the same place
    read_setting_file: Callable[[str], bytes | None] | None = None
    # the warehouse broker (gitops_agent/data/broker.py), made with the sandbox when data.sources is set
    broker: Broker | None = None
    _workbench: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _wb_lock: threading.Lock = field(default_factory=threading.Lock)  # taken inside _lock (get_sandbox)
    _broker_lock: threading.Lock = field(default_factory=threading.Lock)  # likewise
    _warned: set = field(default_factory=set)
    _local: set = field(default_factory=set)  # names of models served from this machine or a private network

    def __post_init__(self) -> None:
        if hasattr(self.git, "redact") and self.git.redact is None:  # reliability: nothing secret is committed
            from gitops_agent.safety.secrets import redact_for_commit

            self.git.redact = redact_for_commit
        if self.run_url is None and os.environ.get("GITHUB_RUN_ID") and os.environ.get("GITHUB_REPOSITORY"):
            server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
            self.run_url = f"{server}/{os.environ['GITHUB_REPOSITORY']}/actions/runs/{os.environ['GITHUB_RUN_ID']}"

    def model(self, spec: str) -> Model:
        with self._lock:
            m = self.models.get(spec)
            if m is None:
                m = (
                    self.model_factory(spec)
                    if self.model_factory
                    else make_model(spec, timeouts=getattr(self.config, "model_timeout", None))
                )
                self.models[spec] = m
                if isinstance(m, Served) and is_local_endpoint(m.base_url):
                    self._local.add(m.name)  # a model on this machine or network costs nothing unless `prices:` says
            return _Traced(m, spec, self)

    def agent_model(self, spec: str | None, default: str, trusted: list[str]) -> Model:
        """The model an agent of the brain asks for, else ``default`` (the task's spec for the
        role, from the trusted settings or the user's flags). A brain's spec is data: it was
        validated as provider:model (gitops_agent/models/specs.py); an openai model is served where
        ``trusted`` serves openai models, and ``scripted:NAME`` is only a model this run was
        given, never a file."""
        if not spec:
            return self.model(default)
        if spec.startswith("scripted:") and spec not in self.models and self.model_factory is None:
            raise ConfigError(
                f"the brain names {spec!r}, which this run was not given (scripted models in a brain "
                "are for tests; use provider:model)"
            )
        return self.model(with_trusted_endpoint(spec, trusted))

    def get_sandbox(self) -> Sandbox:
        with self._lock:
            if self.sandbox is None:
                # memory's shared data sets are mounted read-only when a step attached them
                # (gitops_agent/steps/memory_hooks.py attach_data sets data_dir before the first sandbox)
                self.data_broker()
                self.sandbox = make_sandbox(
                    self._sandbox_limits(),
                    env={"AGENT_DATA_DIR": self.data_dir} if self.data_dir else None,
                    services=[self.broker] if self.broker is not None else None,
                )
            return self.sandbox

    def data_broker(self) -> Broker | None:
        """The broker of the declared data sources (None: none declared), made on first use; it
        reads each URL from this process's environment (or the data-sources-env secret's lines)
        only when a query or a schema needs it."""
        with self._broker_lock:
            if self.config.data.sources and self.broker is None:
                self.broker = Broker(self.config.data.sources, environ=source_environ())
            return self.broker

    def data_schema(self, files: list[str] | None = None) -> list[dict[str, Any]]:
        """Each declared source with its tables and columns (read once, on the host), for the
        planner's and the executors' prompts; a source that cannot be read says why. With the
        workbench (which has DuckDB), first the embedded source ``files`` over ``files`` (the
        tree's paths) when they hold a CSV or Parquet file or a shared data set is attached."""
        broker = self.data_broker()
        out = [broker.describe(name) for name in broker.sources] if broker is not None else []
        for source in out:  # the person running the task hears it too, once, not only the model's code
            if source.get("error") and f"source:{source['name']}" not in self._warned:
                self._warned.add(f"source:{source['name']}")
                self.reporter.event(
                    "warning",
                    text=f"data source {source['name']!r} cannot be read: {source['error']} (the model's code gets this too)",
                )
        if files is not None and self.workbench_on():
            embedded = files_source(files, self.data_dir)
            if embedded["tables"] or self.data_dir:
                out.insert(0, embedded)
        return out

    def workbench_on(self) -> bool:
        """Whether the model's code runs with the workbench (not turned off, no interpreter named)."""
        return bool(self.config.sandbox.workbench) and "python" not in self.config.sandbox.model_fields_set

    def take_queries(self) -> list[QueryRecord]:
        """The database queries the calling thread's actions ran since it last asked (a step's)."""
        return self.broker.take_queries() if self.broker is not None else []

    def workbench(self) -> Workbench | None:
        """The environment the model's code runs with (gitops_agent/sandbox/workbench.py), built
        now if it is not ready; None when the settings turn it off or name an interpreter.
        RequirementsError: the repository's `sandbox.requirements` is not a hashed lock, or it
        cannot be installed."""
        limits = self.config.sandbox
        if not self.workbench_on():
            return None
        with self._wb_lock:
            if self._workbench is None:
                extra = None
                if limits.requirements:
                    raw = self.read_setting_file(limits.requirements) if self.read_setting_file else None
                    if raw is None:
                        raise RequirementsError(
                            f"{limits.requirements} (sandbox.requirements in .github/gitops-agent.yml) is not in the repository"
                        )
                    extra = parse_lock(raw, limits.requirements)
                wb = ensure_workbench(extra)
                if wb.built_s is not None:
                    self.reporter.event("note", text=f"built the workbench ({', '.join(wb.listing())}) in {wb.built_s:.1f} s")
                self._workbench = wb
            return self._workbench

    def _sandbox_limits(self) -> SandboxLimits:
        """The configured limits plus what the brain and memory add: brain tool directories on
        PYTHONPATH, and the shared data sets (data_dir), both mounted read-only."""
        limits = self.config.sandbox
        wb = self.workbench()
        if wb is not None:  # the model's code never runs with the agent's own packages
            limits = limits.model_copy(update={"python": wb.python})
        tool_dirs = [str(d) for d in getattr(self.brain, "tool_dirs", [])]
        ro = list(limits.extra_ro_paths)
        for d in tool_dirs + ([self.data_dir] if self.data_dir else []):
            if d not in [h for h, _ in ro]:
                ro.append((d, d))
        if not tool_dirs and ro == list(limits.extra_ro_paths):
            return limits
        return limits.model_copy(update={"python_path": tool_dirs + list(limits.python_path), "extra_ro_paths": ro})

    def cost(self, model_name: str, usage: Usage) -> float:
        name = model_id(model_name) if ":" in model_name else model_name
        if name == "scripted" or is_known(name, self.config.prices or None):
            return price_of(name, usage, self.config.prices or None)
        if model_name in self._local or name in self._local:
            return 0.0
        with self._lock:
            if name not in self._warned:
                self._warned.add(name)
                self.reporter.event(
                    "error",
                    step="pricing",
                    error=f"no price for model {name!r}; counting it at $3/$15 per Mtok (set `prices:` in the config)",
                )
        return FALLBACK_PRICE.cost(usage)

    def step_trailers(self, record: StepRecord, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The trailers of a step's commit, from its record (who, what it used and cost, how long)."""
        node = record.node if record.role == "executor" else None
        return self.trailers(
            record.task_id,
            record.seq,
            record.role,
            node=node,
            model=record.model or None,
            usage=record.usage,
            cost=record.cost_usd,
            duration_ms=record.duration_ms,
            extra=extra,
        )

    def trailers(
        self,
        task_id: str,
        seq: int,
        role: str,
        node: str | None = None,
        model: str | None = None,
        usage: Usage | None = None,
        cost: float | None = None,
        duration_ms: int | None = None,
        extra: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """The Agent-* trailers of a step's commit (gitops_agent/core/trailers.py)."""
        return agent_trailers(
            role,
            task_id=task_id,
            seq=seq,
            node=node,
            model=model,
            usage=usage,
            cost=cost,
            duration_ms=duration_ms,
            run_url=self.run_url,
            extra=extra,
        )


class _Traced:
    """A model whose calls are OpenTelemetry spans (a no-op unless telemetry is set up), retried
    after a retryable ModelError per the config's `model_retry` (gitops_agent/models/retry.py)."""

    def __init__(self, inner: Model, spec: str, rt: Runtime) -> None:
        self.inner, self.spec, self.rt = inner, spec, rt
        self.name = inner.name

    def query(self, request):  # noqa: ANN001 - the Model protocol
        gate = self.rt.spend
        if gate is None:
            return self._query(request)
        # the repository's cap (gitops_agent/runtime/spending.py): hold the most this call can cost,
        # then book what it did cost (nothing for a call that failed: providers bill answers)
        hid = gate.reserve(self._most(request))
        usd = 0.0
        try:
            resp = self._query(request)
            usd = self.rt.cost(self.name, resp.usage)
            return resp
        finally:
            gate.settle(hid, usd)

    def _most(self, request) -> float:  # noqa: ANN001
        """The most ``request`` can cost: its text as tokens at 3 bytes each (English and code
        run 3.5 to 4.5), all written to the cache, and every output token it allows."""
        size = len(request.model_dump_json(include={"system", "messages", "tools"}).encode())
        return self.rt.cost(self.name, Usage(cache_write_tokens=size // 3 + 1, output_tokens=request.max_tokens))

    def _query(self, request):  # noqa: ANN001
        from gitops_agent.core.cancel import CANCEL, Cancelled
        from gitops_agent.core.errors import ModelError
        from gitops_agent.models.pricing import max_output_tokens
        from gitops_agent.models.retry import RetryPolicy, query_with_retry
        from gitops_agent.observe import telemetry

        CANCEL.check()
        deadline = time.monotonic() + request.timeout_s if request.timeout_s is not None else None
        limit = max_output_tokens(self.name)
        if limit is not None and request.max_tokens > limit:  # a role's default above what this model takes
            request = request.model_copy(update={"max_tokens": limit})

        def attempt():
            req = request
            if deadline is not None:  # each try gets what is left of the task's wall budget
                req = request.model_copy(update={"timeout_s": max(0.1, deadline - time.monotonic())})
            return self.inner.query(req)

        def retrying(e: ModelError, attempt_no: int, wait: float) -> None:  # reliability: the second line of retries
            CANCEL.check()
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise ModelError(f"{e} -- not retried: the task's wall budget is spent (max_wall_seconds)") from e
            self.rt.reporter.event("error", step="model", error=f"{e} -- retry {attempt_no} in {wait:.1f} s")

        abort = self.inner.abort if isinstance(self.inner, Abortable) else (lambda: None)
        with (
            telemetry.model_call_span(self.name, spec=self.spec, max_tokens=request.max_tokens) as call,
            CANCEL.on_cancel(abort),
            _Heartbeat(self.rt.reporter, self.name, self._where(), self._heartbeat_s()),
        ):
            try:
                resp = query_with_retry(attempt, getattr(self.rt.config, "model_retry", None) or RetryPolicy(), on_retry=retrying)
            except ModelError as e:
                if CANCEL.is_set():
                    raise Cancelled(CANCEL.reason) from None
                call.error(str(e))
                raise
            except Exception:
                if CANCEL.is_set():  # the closed connection, seen by the SDK in its own way
                    raise Cancelled(CANCEL.reason) from None
                raise
            call.record(
                resp.usage,
                cost_usd=self.rt.cost(self.name, resp.usage),
                response_model=resp.model or self.name,
                finish_reason=resp.stop_reason,
            )
            return resp

    def preflight(self) -> None:
        """A cheap check that the endpoint, key and model work, when the provider has one."""
        if isinstance(self.inner, Preflight):
            self.inner.preflight()

    def _heartbeat_s(self) -> float:
        policy = getattr(self.rt.config, "model_timeout", None)
        return policy.heartbeat_s if policy is not None else 15.0

    def _where(self) -> str:
        return f" at {self.inner.base_url}" if isinstance(self.inner, Served) else ""


class _Heartbeat:
    """While a model call waits, a progress line every ``every`` seconds: what it waits for and
    for how long (so a silent endpoint is never a silent hang)."""

    def __init__(self, reporter, model: str, where: str, every: float = 15.0) -> None:
        self.reporter, self.model, self.where, self.every = reporter, model, where, every
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="model-heartbeat")

    def __enter__(self) -> "_Heartbeat":
        self._start = time.monotonic()
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.reporter.event("waiting", what=f"{self.model}{self.where}", seconds=int(time.monotonic() - self._start))
