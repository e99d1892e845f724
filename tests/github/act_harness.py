"""Runs the real workflow files and the real composite action with act, in host mode, the
way GitHub Actions would: an event starts a run; every repository_dispatch that the fake
GitHub server records becomes the next run (act ignores `types:` filters, so the harness routes
each event itself, and the reusable workflow's job conditions pick the step)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP_PYTHON = "actions/setup-python@a26af69be951a213d495a4c3e4e4022e16d87065"


def act_binary() -> str | None:
    from tests.tools import tool

    return tool("act")


@dataclass
class ActRun:
    event: str
    action: str
    returncode: int
    log: str


@dataclass
class ActHarness:
    work: Path  # the user's repository (workflow files are read from here)
    bare: Path  # its remote
    api_url: str  # the fake GitHub REST API
    llm_url: str  # the fake Messages API
    token: str
    api_key: str
    runs: list[ActRun] = field(default_factory=list)
    caller_with: dict[str, str] = field(default_factory=dict)
    # act's cache of actions and, in host mode, the runner's tool cache (<path>/tool_cache): one
    # per machine by default (~/.cache/act), so the action's environment is built once per lock;
    # a new directory is a fresh runner
    action_cache: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    # more secrets of the caller's repository (act -s), e.g. GITOPS_AGENT_DATA_SOURCES
    secrets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stub = self.work.parent / "setup-python-stub"
        self.stub.mkdir(exist_ok=True)
        (self.stub / "action.yml").write_text(
            textwrap.dedent("""\
            name: setup-python (offline stand-in)
            description: the runner's Python is used
            inputs:
              python-version: {description: version, required: false}
            runs:
              using: composite
              steps:
                - shell: bash
                  run: python3 --version
            """)
        )
        self.events = self.work.parent / "events"
        self.events.mkdir(exist_ok=True)
        # The action as it is published: the tracked files of this checkout (act copies the
        # directory it is given for every job, and a checkout's .venv is hundreds of MB).
        self.action_dir = self.work.parent / "action"
        if not self.action_dir.exists():
            files = subprocess.run(
                ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                capture_output=True,
                check=True,
            ).stdout.split(b"\0")
            for f in files:
                if f and (ROOT / f.decode()).is_file():
                    dst = self.action_dir / f.decode()
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / f.decode(), dst)

    def caller(self) -> str:
        """The ~15-line caller a repository adds (examples/caller.yml), pointed at local fakes."""
        w = {
            "runs-on": "'\"ubuntu-latest\"'",
            "setup-python": '"false"',
            "git-url": f'"file://{self.bare}"',
            "anthropic-base-url": f'"{self.llm_url}"',
            **self.caller_with,
        }
        lines = [
            "name: gitops-agent",
            "on:",
            "  issues: {types: [opened, labeled]}",
            "  issue_comment: {types: [created]}",
            "  pull_request_review_comment: {types: [created]}",
            "  pull_request_review: {types: [submitted]}",
            "  repository_dispatch: {types: [agent-plan, agent-execute, agent-finish]}",
            "permissions: {contents: write, issues: write, pull-requests: write}",
            "jobs:",
            "  agent:",
            "    uses: gitops-agent/gitops-agent/.github/workflows/agent.yml@v1",
            "    with:",
            *[f"      {k}: {v}" for k, v in w.items()],
            "    secrets:",
            "      anthropic-api-key: ${{ secrets.ANTHROPIC_API_KEY }}",
            "      data-sources-env: ${{ secrets.GITOPS_AGENT_DATA_SOURCES }}",
        ]
        return "\n".join(lines) + "\n"

    def run(self, event_name: str, event: dict, timeout: float = 300) -> ActRun:
        path = self.events / f"{len(self.runs):03d}-{event_name}.json"
        path.write_text(json.dumps(event))
        cmd = [
            act_binary() or "act",
            event_name,
            "-e",
            str(path),
            "-W",
            ".github/workflows/gitops-agent.yml",
            "-P",
            "ubuntu-latest=-self-hosted",
            "-P",
            "self-hosted=-self-hosted",
            "--local-repository",
            f"gitops-agent/gitops-agent@v1={self.action_dir}",
            "--local-repository",
            f"{SETUP_PYTHON}={self.stub}",
            "-s",
            f"GITHUB_TOKEN={self.token}",
            "-s",
            f"ANTHROPIC_API_KEY={self.api_key}",
            "--env",
            f"GITHUB_API_URL={self.api_url}",
            "--env",
            "GITOPS_AGENT_GITHUB_THROTTLE=0",
            *[a for k, v in self.secrets.items() for a in ("-s", f"{k}={v}")],
            "--no-cache-server",
            *(["--action-cache-path", str(self.action_cache)] if self.action_cache else []),
            *[a for k, v in self.extra_env.items() for a in ("--env", f"{k}={v}")],
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "GITHUB_", "OPENAI"))}
        p = subprocess.run(cmd, cwd=self.work, env=env, capture_output=True, text=True, timeout=timeout)
        run = ActRun(event_name, str(event.get("action", "")), p.returncode, p.stdout + p.stderr)
        self.runs.append(run)
        return run
