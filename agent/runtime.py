"""What every step needs, built once per process: the git store, config, brain, models,
sandbox, reporter. Steps take a Runtime and a Job and return the next jobs."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from .brain import Brain
from .config import AgentConfig
from .models import make_model, model_id
from .models.pricing import price_of
from .progress import Reporter
from .sandbox import make_sandbox
from .seams import GitStore, Model, Sandbox
from .state import Usage


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
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.run_url is None and os.environ.get("GITHUB_RUN_ID") and os.environ.get("GITHUB_REPOSITORY"):
            server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
            self.run_url = f"{server}/{os.environ['GITHUB_REPOSITORY']}/actions/runs/{os.environ['GITHUB_RUN_ID']}"

    def model(self, spec: str) -> Model:
        with self._lock:
            m = self.models.get(spec)
            if m is None:
                m = make_model(spec)
                self.models[spec] = m
            return m

    def get_sandbox(self) -> Sandbox:
        with self._lock:
            if self.sandbox is None:
                self.sandbox = make_sandbox(self.config.sandbox)
            return self.sandbox

    def cost(self, model_name: str, usage: Usage) -> float:
        return price_of(model_id(model_name) if ":" in model_name else model_name, usage, self.config.prices or None)

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
        """The Agent-* trailers of DESIGN.md, in its order."""
        t = {"Agent-Task": task_id, "Agent-Step": str(seq), "Agent-Role": role}
        if node:
            t["Agent-Node"] = node
        if model:
            t["Agent-Model"] = model
        if usage is not None:
            t["Agent-Usage"] = usage.trailer()
        if cost is not None:
            t["Agent-Cost-USD"] = f"{cost:.6f}".rstrip("0").rstrip(".") if cost else "0"
        if duration_ms is not None:
            t["Agent-Duration-Ms"] = str(duration_ms)
        if self.run_url:
            t["Agent-Run"] = self.run_url
        if extra:
            t.update(extra)
        return t
