"""The one place that reads the settings that govern the agent on GitHub.

``.github/gitops-agent.yml`` decides the sandbox, the policy on what the model may change, the
triggers, models, budget and hand-over. A task branch holds whatever the model's code wrote, so
these settings are never read from it: every step reads them at the task's **base commit**
(``task.json``'s ``base_sha``, fixed at intake from the default branch, which only people with
write access change) -- or, after a follow-up, at the default branch's head as that follow-up's
intake saw it (``settings_at``), so a round runs under the settings as they are now -- and the
steps that start from the default branch (intake, reconcile, evolve) read them at its head. The
brain is pinned the same way (``task.json``'s ``brain``).
"""

from __future__ import annotations

from gitops_agent.core.errors import ConfigError
from gitops_agent.settings.config import CONFIG_PATH, AgentConfig, parse_config


def config_at(git, commit: str, where: str | None = None) -> AgentConfig:
    """The settings in ``CONFIG_PATH`` at ``commit`` (fetched by id into a shallow clone when it
    is missing); the defaults when the file is not there. A commit that cannot be had is an
    error, never a fallback to another ref."""
    fetch = getattr(git, "fetch_commit", None)
    if fetch is not None and len(commit) in (40, 64) and not fetch(commit):
        raise ConfigError(
            f"cannot fetch the task's base commit {commit[:12]} to read {CONFIG_PATH}; the settings are only ever read from there"
        )
    raw = git.read_file(commit, CONFIG_PATH)
    label = f"{CONFIG_PATH} at {where or commit[:12]}"
    return parse_config(raw.decode("utf-8", "replace"), label) if raw else AgentConfig()
