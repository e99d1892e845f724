"""The repository's configuration: `.github/gitops-agent.yml` (all fields optional).

    models:
      planner: anthropic:claude-sonnet-4-6
      executor: anthropic:claude-haiku-4-5
    budget: {max_usd: 1.0, max_turns: 10}
    sandbox: {timeout_s: 60, memory_mb: 1024}
    workers: 4

A bad value is one line naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.state import Budget, format_validation_error
from gitops_agent.models.pricing import Price
from gitops_agent.models.retry import RetryPolicy, TimeoutPolicy
from gitops_agent.safety.policy import PolicyConfig
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.settings.data_sources import DataConfig

CONFIG_PATH = ".github/gitops-agent.yml"


class ModelsConfig(BaseModel):
    """Which model each role uses (spec strings, see gitops_agent.models)."""

    model_config = ConfigDict(extra="forbid")
    planner: str = Field("anthropic:claude-sonnet-4-6", description="Strong model: plans and writes the answer.")
    executor: str = Field("anthropic:claude-haiku-4-5", description="Cheap model: writes and runs the code.")


class TriggerConfig(BaseModel):
    """Who and what starts a task on GitHub."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field("agent", description="An issue opened with, or given, this label starts a task.")
    phrase: str = Field("/agent", description="A comment (or issue body) starting with this starts or steers a task.")
    allow: list[str] = Field(default_factory=list, description="Logins allowed besides collaborators with write access.")
    allow_bots: list[str] = Field(default_factory=list, description="Bot logins allowed to trigger (bots are refused otherwise).")


class GitHubConfig(BaseModel):
    """Hand-over on GitHub."""

    model_config = ConfigDict(extra="forbid")
    max_parallel: int = Field(4, ge=1, le=64, description="Execute jobs dispatched at once per task.")
    lease_minutes: float = Field(
        20, gt=0, description="A step silent for longer is dispatched again (gitops_agent/github/reconcile.py)."
    )
    inline_steps: bool = Field(
        True,
        description="A job whose step leaves exactly one next step to run (one ready node, the plan after the last "
        "running node, or finish) runs it itself instead of dispatching a new job; each step is still its own pushed "
        "commit. Fan-out (two or more ready nodes) always dispatches. Off: one job per step.",
    )
    inline_minutes: float = Field(
        10,
        ge=0,
        le=30,
        description="A job starts no further inlined step after this many minutes; it dispatches it instead "
        "(keep it well under the workflow's timeout-minutes minus the longest step).",
    )
    max_redispatch: int = Field(2, ge=0, description="Times reconcile re-sends a stalled step before the task is stopped.")
    sweep: bool = Field(
        True,
        description="Every job, when its own work is done, looks for steps of other tasks silent for longer than "
        "lease_minutes and re-sends them (one fetch): stalls are noticed between the caller's rare scheduled "
        "reconcile runs.",
    )
    draft_pr: bool = Field(True, description="Open the answer's pull request as a draft.")
    max_usd_ceiling: float = Field(20.0, ge=0, description="`/agent budget +USD` never raises a task's max_usd above this.")
    image_hosts: list[str] = Field(
        default_factory=lambda: [
            "github.com/user-attachments/",
            "user-images.githubusercontent.com",
            "private-user-images.githubusercontent.com",
        ],
        description="Where images in what the agent posts may come from (host, *.domain or host/path-prefix; https "
        "only); others become a text note: GitHub's image proxy would fetch their URL, and with it whatever the model "
        "put there. Never camo.githubusercontent.com: anyone can get a proxy URL for any address.",
    )


class SpendingConfig(BaseModel):
    """A cap on what all of a repository's tasks spend together, beside each task's own budget
    (gitops_agent/runtime/spending.py). Its running total is kept on the agent/spend branch, so
    jobs on different runners agree. On GitHub only: a local run spends the user's own key."""

    model_config = ConfigDict(extra="forbid")
    daily_usd: float | None = Field(
        10.0, ge=0, description="Dollars all tasks together may spend per UTC day (null: no daily cap)."
    )
    monthly_usd: float | None = Field(
        100.0, ge=0, description="Dollars all tasks together may spend per UTC calendar month (null: no monthly cap)."
    )
    wait_minutes: float = Field(
        10,
        ge=0,
        le=60,
        description="A call that would fit only once other jobs' calls in flight are settled waits this long for them, "
        "then stops its task.",
    )


class EvolveConfig(BaseModel):
    """How `evolve` proves a proposal (gitops_agent/evolve/gate.py)."""

    model_config = ConfigDict(extra="forbid")
    suite: str | None = Field(
        "dabench",
        description="The eval suite run on the current and the proposed brain: a shipped "
        "suite's name or a path in the repository; null: no comparison.",
    )
    model: str | None = Field(
        None,
        description="Who answers the suite, planner and executors (default: models.executor, "
        "the cheap one); `scripted`: each question's own solution (a check of the mechanics).",
    )
    questions: list[str] = Field(default_factory=list, description="Only these question ids (default: all).")
    cost_margin: float = Field(
        0.2,
        ge=0,
        description="A proposal that costs more than (1 + this) times the current "
        "brain for no gain in pass rate is marked costlier.",
    )
    open_worse: bool = Field(False, description="On GitHub, open a pull request even for a proposal marked worse or costlier.")
    max_usd: float = Field(
        1.0,
        gt=0,
        description="Dollars the proposal conversation may spend (every correction is a paid call; none is made past this).",
    )


class AgentConfig(BaseModel):
    """Everything configurable; defaults fit a small repository and a cheap run."""

    model_config = ConfigDict(extra="forbid")
    models: ModelsConfig = ModelsConfig()
    budget: Budget = Budget()
    sandbox: SandboxLimits = SandboxLimits()
    policy: PolicyConfig = PolicyConfig()
    workers: int = Field(4, ge=1, le=64, description="Executor steps run at once (local mode).")
    trigger: TriggerConfig = TriggerConfig()
    github: GitHubConfig = GitHubConfig()
    evolve: EvolveConfig = EvolveConfig()
    spending: SpendingConfig = SpendingConfig()
    prices: dict[str, Price] = Field(default_factory=dict, description="Per-model price overrides (USD per Mtok).")
    model_retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retries of a model call after the SDK's own.")
    model_timeout: TimeoutPolicy = Field(default_factory=TimeoutPolicy, description="How long a model call may wait.")
    data: DataConfig = Field(default_factory=DataConfig, description="Databases the model's code may query (the broker).")


def load_config(path: Path | None) -> AgentConfig:
    """Load a config file; a missing file means the defaults."""
    if path is None or not path.exists():
        return AgentConfig()
    return parse_config(path.read_text(), str(path))


def parse_config(text: str, where: str) -> AgentConfig:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {format_validation_error(e)}") from None
