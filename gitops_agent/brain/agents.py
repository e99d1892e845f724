"""Agent definitions (role, model, limits, tools, prompt templates).

Defaults ship in the package (`brain/agents/*.yaml`, `prompts/*.j2`); a directory given as an
override (e.g. the content of an `agent/brain` branch) replaces agents by name and templates by
file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.executor_tools import EXECUTOR_TOOLS as _EXECUTOR_TOOLS
from gitops_agent.core.state import format_validation_error
from gitops_agent.core.tools import PLANNER_TOOLS as _PLANNER_TOOLS
from gitops_agent.models.specs import data_spec_problem
from gitops_agent.templates.prompts import packaged_prompts_dir

PLANNER_TOOLS = set(_PLANNER_TOOLS)
EXECUTOR_TOOLS = set(_EXECUTOR_TOOLS)


def _package_dir(name: str) -> Path:
    """brain/ or prompts/: beside the package in a source checkout, inside it when installed."""
    here = Path(__file__).resolve().parents[1]  # the agent package
    for candidate in (here.parent / name, here / f"_{name}"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"cannot find the packaged {name}/ directory next to {here}")


def default_brain_dir() -> Path:
    return _package_dir("brain")


def default_prompts_dir() -> Path:
    return packaged_prompts_dir()


class AgentPrompts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str = Field(description="Template for the system prompt (stable, cached).")
    task: str = Field(description="Template for the first user message (stable per task/node, cached).")
    state: str | None = Field(None, description="Planner only: template for the changing plan state.")


class AgentDef(BaseModel):
    """One agent of the brain. Every field can be overridden on the agent/brain branch."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="Name the planner assigns nodes to.")
    role: Literal["planner", "executor"] = Field(description="planner: makes the plan; executor: runs one node.")
    description: str = Field(description="One line the planner reads to choose an agent.")
    # A brain is data (a branch anyone with push rights, or an evolve proposal, writes): its
    # model specs name a provider and a model, never an endpoint or a file (gitops_agent/models/specs.py),
    # and its limits are capped here and by the task's trusted budget where they are used.
    model: str | None = Field(
        None,
        description="provider:model; null means the task's model for this role. No endpoint: "
        "an openai model is served where the trusted settings serve openai models.",
    )
    cascade: list[str] = Field(
        default_factory=list,
        max_length=4,
        description="Executor: models tried next, in order, when "
        "a node fails or runs out of turns on the one before (cheap first, strong when needed).",
    )
    max_turns: int | None = Field(
        None, ge=1, le=200, description="Executor turn limit, at most the budget's max_turns; null means the budget's max_turns."
    )
    max_tokens: int = Field(4096, ge=256, le=128_000, description="Output tokens per model call.")
    max_corrections: int = Field(
        3,
        ge=0,
        le=10,
        description="Planner: malformed outputs answered before failing (each one a paid call, within the task's budget).",
    )
    tools: list[str] = Field(description="Model-facing tools this agent may use.")
    prompts: AgentPrompts
    instructions: str = Field("", description="Extra lines for this agent's system prompt.")

    @field_validator("model")
    @classmethod
    def _model_is_data(cls, v: str | None) -> str | None:
        problem = data_spec_problem(v) if v is not None else None
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("cascade")
    @classmethod
    def _cascade_is_data(cls, v: list[str]) -> list[str]:
        for spec in v:
            problem = data_spec_problem(spec)
            if problem:
                raise ValueError(problem)
        return v

    def model_post_init(self, _ctx: object) -> None:
        allowed = PLANNER_TOOLS if self.role == "planner" else EXECUTOR_TOOLS
        bad = [t for t in self.tools if t not in allowed]
        if bad:
            raise ValueError(f"tools {bad} are not {self.role} tools (allowed: {sorted(allowed)})")


class Brain(BaseModel):
    agents: dict[str, AgentDef]
    prompt_dirs: list[Path]
    # Directories of helper modules (tools/*.py) the model's code may import, override first.
    tool_dirs: list[Path] = []
    # The agent/brain commit on top of the packaged brain (None: the packaged brain alone).
    commit: str | None = None

    @property
    def planner(self) -> AgentDef:
        return self.agents["planner"]

    def executors(self) -> dict[str, AgentDef]:
        return {k: v for k, v in self.agents.items() if v.role == "executor"}

    def executor(self, name: str) -> AgentDef:
        agent = self.agents.get(name)
        if agent is None or agent.role != "executor":
            raise ConfigError(f"unknown executor agent {name!r}; known: {sorted(self.executors())}")
        return agent


def load_agent_file(path: Path) -> AgentDef:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    try:
        return AgentDef.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e)}") from None


def load_brain(override_dir: Path | None = None) -> Brain:
    """The packaged agents, with those in ``override_dir/agents`` replacing them by name."""
    agents: dict[str, AgentDef] = {}
    dirs = [default_brain_dir()]
    if override_dir is not None:
        dirs.append(override_dir)
    for d in dirs:
        for f in sorted((d / "agents").glob("*.yaml")):
            a = load_agent_file(f)
            agents[a.name] = a
    if "planner" not in agents or agents["planner"].role != "planner":
        raise ConfigError("the brain defines no planner agent (agents/planner.yaml)")
    if not any(a.role == "executor" for a in agents.values()):
        raise ConfigError("the brain defines no executor agent")
    prompt_dirs = []
    if override_dir is not None and (override_dir / "prompts").is_dir():
        prompt_dirs.append(override_dir / "prompts")
    prompt_dirs.append(default_prompts_dir())
    tool_dirs = [d / "tools" for d in reversed(dirs) if (d / "tools").is_dir()]
    return Brain(agents=agents, prompt_dirs=prompt_dirs, tool_dirs=tool_dirs)
