"""Who may start or steer a task on GitHub, decided before anything is cloned, and the one
refusal per person per issue."""

from __future__ import annotations

from typing import Any

from gitops_agent.core.errors import AgentError
from gitops_agent.github.events import Trigger
from gitops_agent.github.gate import refusal_marker, refusal_text
from gitops_agent.safety.chars import log_line
from gitops_agent.settings.config import CONFIG_PATH, AgentConfig, parse_config


class Access:
    """The access rules of a job: who may start or steer a task, and the one refusal per person."""

    def __init__(self, settings: Any, client: Any, outputs: dict[str, str]) -> None:
        self.s, self.client, self.outputs = settings, client, outputs

    def allowed(self, trigger: Trigger, cfg: AgentConfig) -> tuple[bool, str]:
        a = trigger.author
        if a is None:
            return True, "no author (workflow input)"  # workflow_dispatch/call: whoever can run workflows
        if a.login in cfg.trigger.allow:
            return True, "allow-listed"
        if a.is_bot:
            return (a.login in cfg.trigger.allow_bots), "bots need to be listed in trigger.allow_bots"
        try:
            ok = self.client.can_write(a.login)
        except AgentError as e:
            return False, f"could not check permissions: {e}"
        return ok, "needs write access to the repository"

    def config_defaults(self) -> AgentConfig:
        cfg = AgentConfig()
        if self.s.trigger_label:
            cfg.trigger.label = self.s.trigger_label
        if self.s.trigger_phrase:
            cfg.trigger.phrase = self.s.trigger_phrase
        return cfg

    def default_branch_config(self) -> AgentConfig | None:
        """The settings on the default branch, read through the API (no clone); None when the
        API cannot say (then the clone's are used)."""
        try:
            raw = self.client.file_text(CONFIG_PATH)
        except AgentError as e:
            print(f"gitops-agent: could not read {CONFIG_PATH} through the API ({log_line(str(e), 200)}); cloning first")
            return None
        cfg = parse_config(raw, f"{CONFIG_PATH} on the default branch") if raw is not None else AgentConfig()
        if self.s.trigger_label:
            cfg.trigger.label = self.s.trigger_label
        if self.s.trigger_phrase:
            cfg.trigger.phrase = self.s.trigger_phrase
        return cfg

    def refuse(self, trigger: Trigger, why: str, cfg: AgentConfig) -> None:
        """Tell a person once per issue why nothing ran (the marker also stops the action's gate
        from repeating it); bots are not answered."""
        login = trigger.author.login if trigger.author else "?"
        print(f"gitops-agent: refused: @{log_line(login)} {log_line(why)}")
        self.outputs["refused"] = "true"
        where = trigger.issue if trigger.issue is not None else trigger.pull  # a pull request is an issue too
        if where is None or (trigger.author and trigger.author.is_bot):
            return
        marker = refusal_marker(login)
        if self.client.find_comment(where, marker) is not None:
            return
        self.client.comment(where, refusal_text(login, cfg.trigger.label, cfg.trigger.phrase))

    def trusted_author(self, writer: str | None, starter: str | None, cfg: AgentConfig) -> bool:
        """Whether the question's author can write to the repository (they may not be the writer
        who labelled their issue). The model is told when they cannot; memory records it."""
        if writer is None or writer == starter:
            return True
        if writer in cfg.trigger.allow:
            return True
        try:
            return self.client.can_write(writer)
        except AgentError:
            return False
