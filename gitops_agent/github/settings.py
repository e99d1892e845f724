"""What a job learns from its environment (set by the composite action), and the hand-over of
the next steps as repository_dispatch events."""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.seams import Job
from gitops_agent.github.events import EVENT_TYPES, DispatchPayload


class Settings(BaseModel):
    """What a job learns from its environment (set by the composite action)."""

    repo: str = Field(description="owner/name (GITHUB_REPOSITORY)")
    api_url: str = "https://api.github.com"
    server_url: str = "https://github.com"
    token: SecretStr = SecretStr("")
    git_url: str | None = None
    workdir: Path
    run_id: str | None = None
    event_name: str = ""
    event_path: str | None = None
    question: str | None = None
    trigger_label: str | None = None
    trigger_phrase: str | None = None
    planner_model: str | None = None
    executor_model: str | None = None
    max_usd: float | None = None
    summary_path: str | None = None
    output_path: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        e = os.environ if env is None else env
        repo = e.get("GITHUB_REPOSITORY", "")
        if "/" not in repo:
            raise ConfigError("GITHUB_REPOSITORY is not set (owner/name); `gitops-agent step` runs inside GitHub Actions")
        token = e.get("GITOPS_AGENT_GITHUB_TOKEN") or e.get("GITHUB_TOKEN") or ""
        if not token:
            raise ConfigError("no GitHub token: pass `github-token` to the action (GITOPS_AGENT_GITHUB_TOKEN)")
        max_usd = e.get("GITOPS_AGENT_MAX_USD") or None
        return cls(
            repo=repo,
            api_url=e.get("GITHUB_API_URL", "https://api.github.com"),
            server_url=e.get("GITHUB_SERVER_URL", "https://github.com"),
            token=SecretStr(token),
            git_url=e.get("GITOPS_AGENT_GIT_URL") or None,
            workdir=Path(e.get("RUNNER_TEMP") or tempfile.gettempdir()),
            run_id=e.get("GITHUB_RUN_ID"),
            event_name=e.get("GITHUB_EVENT_NAME", ""),
            event_path=e.get("GITHUB_EVENT_PATH"),
            question=e.get("GITOPS_AGENT_QUESTION") or None,
            trigger_label=e.get("GITOPS_AGENT_TRIGGER_LABEL") or None,
            trigger_phrase=e.get("GITOPS_AGENT_TRIGGER_PHRASE") or None,
            planner_model=e.get("GITOPS_AGENT_PLANNER_MODEL") or None,
            executor_model=e.get("GITOPS_AGENT_EXECUTOR_MODEL") or None,
            max_usd=_usd(max_usd) if max_usd else None,
            summary_path=e.get("GITHUB_STEP_SUMMARY"),
            output_path=e.get("GITHUB_OUTPUT"),
        )

    @property
    def clone_url(self) -> str:
        return self.git_url or f"{self.server_url.rstrip('/')}/{self.repo}.git"

    @property
    def run_url(self) -> str | None:
        return f"{self.server_url.rstrip('/')}/{self.repo}/actions/runs/{self.run_id}" if self.run_id else None

    def git_auth_env(self) -> dict[str, str]:
        """http.extraHeader through GIT_CONFIG_* variables: used by git's network commands,
        never stored in .git/config."""
        if self.clone_url.startswith(("file://", "/")) or not self.token.get_secret_value():
            return {}
        basic = base64.b64encode(f"x-access-token:{self.token.get_secret_value()}".encode()).decode()
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}",
        }


def _usd(text: str) -> float:
    """The action's `max-usd` input: a finite number of dollars, 0 or more (else the job fails
    naming the input, before a task.json that could not be read is written)."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"the max-usd input (GITOPS_AGENT_MAX_USD) {text[:40]!r} is not a number") from None
    if not math.isfinite(v) or v < 0:
        raise ConfigError(
            f"the max-usd input (GITOPS_AGENT_MAX_USD) must be a finite number of dollars, 0 or more, not {text[:40]!r}"
        )
    return v


class GitHubDispatcher:
    """Hands each next step to GitHub as a repository_dispatch."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sent: list[Job] = []

    def dispatch(self, job: Job) -> None:
        payload = DispatchPayload.of(job)
        self.client.dispatch(EVENT_TYPES[job.step], payload.wire())
        self.sent.append(job)
