"""`gitops-agent init`: the two files a repository needs, and what to do on GitHub besides.

It writes ``.github/workflows/gitops-agent.yml`` (the caller of the reusable workflow, pinned to
the commit this gitops-agent was installed from; GitHub-hosted runners unless told otherwise)
and ``.github/gitops-agent.yml`` (every setting with its default, commented out). A file that is
there already and differs is never overwritten without ``--force``: the diff is shown instead.
Nothing is committed: the person reviews, commits and pushes.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from gitops_agent import __version__
from gitops_agent.core.errors import ConfigError, UsageError
from gitops_agent.settings.config import CONFIG_PATH, AgentConfig

WORKFLOW_PATH = ".github/workflows/gitops-agent.yml"
SOURCE = "gitops-agent/gitops-agent"
# the safety net for a step whose runner died when no other job runs (every job looks at its end:
# gitops_agent/github/reconcile.py); 4 jobs a day, not 72
SCHEDULE = "17 */6 * * *"
SHA = re.compile(r"[0-9a-f]{40}")
REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,99}")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

CALLER = """\
name: gitops-agent
on:
  issues: {types: [opened, labeled]}
  issue_comment: {types: [created]}  # zizmor: ignore[dangerous-triggers] only /agent from writers; no PR code runs
  pull_request_review_comment: {types: [created]}  # /agent on a line of the agent's pull request
  pull_request_review: {types: [submitted]}        # a review of it: /agent …, or "request changes"
  repository_dispatch: {types: [agent-plan, agent-execute, agent-finish, agent-evolve, agent-eval]}
  workflow_dispatch: {inputs: {question: {description: Question, required: true, type: string}}}
  schedule: [{cron: "@@SCHEDULE@@"}]   # safety net: re-send a step whose runner died (every job also looks)
permissions: {contents: write, issues: write, pull-requests: write}
jobs:
  agent:
    cache-mode: none
    uses: @@SOURCE@@/.github/workflows/agent.yml@@@REF@@
    with: {runs-on: '@@RUNS_ON@@', question: "${{ inputs.question }}"}
    # data-sources-env: lines NAME=URL for the databases .github/gitops-agent.yml names (data.sources)
    secrets: {anthropic-api-key: "${{ secrets.ANTHROPIC_API_KEY }}", data-sources-env: "${{ secrets.GITOPS_AGENT_DATA_SOURCES }}"}
"""


def caller_workflow(ref: str, labels: list[str] | None, header: str | None = None, source: str = SOURCE) -> str:
    """The caller workflow, pinned to ``ref``; on runners with ``labels`` (self-hosted), else on
    GitHub-hosted ``ubuntu-latest``."""
    if not REF.fullmatch(ref) or ".." in ref:
        raise UsageError(f"--ref {ref!r}: not a tag, branch or commit name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", source):
        raise UsageError(f"--source {source!r}: expected OWNER/REPO")
    for lab in labels or []:
        if not LABEL.fullmatch(lab):
            raise UsageError(f"--self-hosted: {lab!r} is not a runner label (letters, digits, '.', '_', '-')")
    runs_on = json.dumps(labels, separators=(",", ":")) if labels else '"ubuntu-latest"'
    if header is None:
        pin = f"commit {ref}" if SHA.fullmatch(ref) else ref
        header = (
            "# gitops-agent: questions in issues, answers as pull requests.\n"
            f"# Written by `gitops-agent init` (gitops-agent {__version__}, {pin});\n"
            "# run it again to see what a newer version would change.\n"
        )
    body = CALLER.replace("@@SCHEDULE@@", SCHEDULE).replace("@@SOURCE@@", source).replace("@@REF@@", ref)
    return header + body.replace("@@RUNS_ON@@", runs_on)


EXAMPLE_HEADER = "# Copy to .github/workflows/gitops-agent.yml in your repository (or run `gitops-agent init`).\n"


def installed_ref() -> str:
    """The commit this gitops-agent was installed from: GITOPS_AGENT_COMMIT, the checkout it runs
    from, or what pip recorded for a `pip install git+…@COMMIT`. ConfigError when none says."""
    env = os.environ.get("GITOPS_AGENT_COMMIT", "")
    if SHA.fullmatch(env):
        return env
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists() and (root / "gitops_agent").is_dir():
        p = subprocess.run(
            ["git", "-c", "core.fsmonitor=false", f"--git-dir={root / '.git'}", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"},
        )
        if p.returncode == 0 and SHA.fullmatch(p.stdout.strip()):
            return p.stdout.strip()
    try:
        direct = json.loads(metadata.distribution("gitops-agent").read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        direct = {}
    commit = (direct.get("vcs_info") or {}).get("commit_id", "")
    if SHA.fullmatch(commit):
        return commit
    raise ConfigError(
        "cannot tell which commit this gitops-agent was installed from; pass --ref with a release tag or "
        f"commit of {SOURCE} (e.g. --ref v1)"
    )


@dataclass
class Planned:
    """One file init would write: ``state`` is new, same or differs (then ``diff`` says how)."""

    path: str
    text: str
    state: str
    diff: str = ""


def plan_files(repo: Path, files: dict[str, str]) -> list[Planned]:
    out = []
    for rel, text in files.items():
        dest = repo / rel
        if dest.is_symlink() or (dest.exists() and not dest.is_file()):
            raise ConfigError(f"{rel}: exists and is not a plain file; move it away first")
        if not dest.exists():
            out.append(Planned(rel, text, "new"))
            continue
        old = dest.read_text(errors="replace")
        if old == text:
            out.append(Planned(rel, text, "same"))
            continue
        diff = "".join(
            difflib.unified_diff(
                old.splitlines(keepends=True), text.splitlines(keepends=True), f"a/{rel} (yours)", f"b/{rel} (init)"
            )
        )
        out.append(Planned(rel, text, "differs", diff))
    return out


def write_files(repo: Path, planned: list[Planned], force: bool) -> list[str]:
    """Write what is new (and what differs, with ``force``); the paths written."""
    written = []
    for p in planned:
        if p.state == "new" or (p.state == "differs" and force):
            dest = repo / p.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".init-tmp")
            tmp.write_text(p.text)
            tmp.replace(dest)  # never a half-written workflow
            written.append(p.path)
    return written


def checklist(labels: list[str] | None, cfg: AgentConfig | None = None) -> str:
    """What to do on GitHub before the first question, and what it costs."""
    from gitops_agent.app.costs import QUESTION_USD, idle_day_minutes

    cfg = cfg or AgentConfig()
    b, s = cfg.budget, cfg.spending
    runners = (
        f"your self-hosted runners labelled {', '.join(labels)}: run `gitops-agent doctor` on one (bubblewrap, uv, the index)"
        if labels
        else "GitHub-hosted ubuntu-latest runners: nothing to set up (the action installs bubblewrap)"
    )
    daily = f"${s.daily_usd:.2f} a day" if s.daily_usd is not None else "no daily cap"
    monthly = f"${s.monthly_usd:.2f} a month" if s.monthly_usd is not None else "no monthly cap"
    idle_min = idle_day_minutes(SCHEDULE)
    idle = (
        f"{idle_min} jobs (the schedule, every 6 hours): on GitHub-hosted\n    runners about {idle_min} runner-minutes "
        "(free for public repositories)"
        if not labels
        else f"{idle_min} short jobs on your runners (the schedule, every 6 hours)"
    )
    return f"""\
Before the first question:
  1. The model key: add the repository secret ANTHROPIC_API_KEY
     (Settings > Secrets and variables > Actions, or `gh secret set ANTHROPIC_API_KEY`).
  2. Pull requests: Settings > Actions > General > Workflow permissions > tick
     "Allow GitHub Actions to create and approve pull requests". Without it the answer still
     arrives, as an issue comment with a link to open the pull request yourself.
  3. The label: `gh label create {cfg.trigger.label}`. An issue opened with it (or given it) is a question;
     so is a comment starting with `{cfg.trigger.phrase}`. Only people with write access can ask.
  4. Runners: {runners}.
  5. Commit and push: git add .github && git commit -m "Add gitops-agent" && git push
  6. Databases (optional): declare each under data.sources in {CONFIG_PATH} and add its URL as a
     line NAME=postgresql://... to the repository secret GITOPS_AGENT_DATA_SOURCES.

What it costs:
  - An idle day: {idle}.
    Every other job also looks for stalled tasks, at no extra job.
  - A question: about ${QUESTION_USD:.2f} with the default models ({cfg.models.planner} plans,
    {cfg.models.executor} runs the code) when answered at the first try; more with retries.
    An estimate (bench/question_cost.py: the engine's own requests on the 29 dabench questions, at
    list prices). Each task stops at budget.max_usd (${b.max_usd:.2f}), {b.max_steps} steps or
    {b.max_wall_seconds // 60} minutes; all tasks together stop at spending.daily_usd ({daily})
    and spending.monthly_usd ({monthly}).
  - Settings: {CONFIG_PATH} (every default, commented out).
"""
