"""`gitops-agent init` in a fresh repository: the caller workflow (GitHub-hosted by default, or
self-hosted labels) pinned to this install's commit, accepted by actionlint and zizmor; a
settings file whose every line, uncommented, is the real default; a checklist that names the
secret, the pull-request setting, the label and the costs; a re-run that never overwrites
silently."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from gitops_agent.app.setup_repo import EXAMPLE_HEADER, caller_workflow
from gitops_agent.settings.config import AgentConfig, parse_config
from tests.helpers import ROOT, git, make_repo
from tests.helpers import agent_command as cli
from tests.tools import tool

WF = ".github/workflows/gitops-agent.yml"
CFG = ".github/gitops-agent.yml"


def head_of_this_checkout() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_init_writes_a_pinned_github_hosted_workflow_and_prints_the_checklist(tmp_path):
    repo = make_repo(tmp_path)
    r = cli("init", "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    wf = (repo / WF).read_text()
    sha = head_of_this_checkout()
    assert f"/.github/workflows/agent.yml@{sha}" in wf, "pinned to the commit this gitops-agent runs from"
    job = yaml.safe_load(wf)["jobs"]["agent"]
    assert job["with"]["runs-on"] == '"ubuntu-latest"'
    on = yaml.safe_load(wf)[True]
    assert on["schedule"] == [{"cron": "17 */6 * * *"}], "a rare safety net, not every 20 minutes"
    out = r.stdout
    for needle in (
        "ANTHROPIC_API_KEY",
        "Allow GitHub Actions to create and approve pull requests",
        "gh label create agent",
        "An idle day: 4 jobs",
        "A question: about $",
        "budget.max_usd ($2.00)",
        "spending.daily_usd ($10.00 a day)",
    ):
        assert needle in out, needle
    assert git(repo, "status", "--porcelain").count("??") >= 1, "written, not committed"


def test_the_settings_file_uncommented_is_exactly_the_defaults(tmp_path):
    repo = make_repo(tmp_path)
    assert cli("init", "--repo", str(repo), "--ref", "v1").returncode == 0
    text = (repo / CFG).read_text()
    assert parse_config(text, CFG).model_dump() == AgentConfig().model_dump(), "all commented out: the defaults"
    lines = [ln[2:] if ln.startswith("# ") else ("" if ln == "#" else ln) for ln in text.splitlines()]
    uncommented = parse_config("\n".join(lines), CFG)
    want = AgentConfig().model_dump()
    got = uncommented.model_dump()
    assert got == want
    for section in AgentConfig.model_fields:
        assert f"\n# {section}:" in text, section
    assert "max_usd: 2.0" in text and "daily_usd: 10.0" in text and "lease_minutes: 20" in text
    assert "/work/" not in text and ".venv" not in text, "nothing of the machine that wrote it"


@pytest.mark.skipif(tool("actionlint") is None or tool("zizmor") is None, reason="actionlint and zizmor are test tools")
@pytest.mark.parametrize("flags", [[], ["--self-hosted", "self-hosted,linux,x64"]])
def test_the_workflow_init_writes_passes_actionlint_and_zizmor(tmp_path, flags):
    repo = make_repo(tmp_path)
    assert cli("init", "--repo", str(repo), *flags).returncode == 0
    wf = repo / WF
    if flags:
        assert yaml.safe_load(wf.read_text())["jobs"]["agent"]["with"]["runs-on"] == '["self-hosted","linux","x64"]'
    p = subprocess.run([tool("actionlint"), str(wf)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run(
        [tool("zizmor"), "--offline", "--config", str(ROOT / ".github" / "zizmor.yml"), str(wf)], capture_output=True, text=True
    )
    assert p.returncode == 0 and "No findings to report" in p.stdout + p.stderr, p.stdout + p.stderr


def test_running_init_again_shows_the_diff_and_overwrites_nothing_without_force(tmp_path):
    repo = make_repo(tmp_path)
    assert cli("init", "--repo", str(repo), "--ref", "v1").returncode == 0
    again = cli("init", "--repo", str(repo), "--ref", "v1")
    assert again.returncode == 0 and again.stdout.count("unchanged") == 2
    mine = (repo / WF).read_text().replace('"ubuntu-latest"', '"ubuntu-24.04"')
    (repo / WF).write_text(mine)
    r = cli("init", "--repo", str(repo), "--ref", "v2")
    assert r.returncode == 1
    assert (repo / WF).read_text() == mine, "a person's edit is never overwritten silently"
    assert "-    with: {runs-on: '\"ubuntu-24.04\"'" in r.stdout and "+    uses: gitops-agent/gitops-agent" in r.stdout
    assert "--force" in r.stdout
    r = cli("init", "--repo", str(repo), "--ref", "v2", "--force")
    assert r.returncode == 0 and "@v2" in (repo / WF).read_text()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--self-hosted", "linux,bad label"], "is not a runner label"),
        (["--self-hosted", ","], "at least one runner label"),
        (["--ref", "v1; rm -rf /"], "not a tag, branch or commit name"),
    ],
)
def test_bad_init_flags_get_one_clear_line(tmp_path, flags, needle):
    repo = make_repo(tmp_path)
    r = cli("init", "--repo", str(repo), *flags)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert not (repo / WF).exists()


def test_the_pin_comes_from_the_install_when_not_a_checkout(tmp_path):
    repo = make_repo(tmp_path)
    sha = "1234567890abcdef1234567890abcdef12345678"
    r = cli("init", "--repo", str(repo), env={"GITOPS_AGENT_COMMIT": sha})
    assert r.returncode == 0 and f"agent.yml@{sha}" in (repo / WF).read_text()


def test_the_example_caller_is_what_init_writes_for_a_tag():
    assert (ROOT / "examples" / "caller.yml").read_text() == caller_workflow("v1", None, header=EXAMPLE_HEADER)


def test_the_readme_config_example_and_cost_line_state_the_real_defaults():
    from gitops_agent.app.costs import QUESTION_USD
    from gitops_agent.core.state import Budget

    readme = (ROOT / "README.md").read_text()
    head = "these are the built-in defaults"
    block = readme.split(head, 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert parse_config(block, "README").model_dump() == AgentConfig().model_dump()
    b = Budget()
    stated = f"**${b.max_usd:.2f}, {b.max_steps} steps, {b.max_turns} turns per node, {b.max_wall_seconds // 60} minutes**"
    assert stated in " ".join(readme.split())
    assert f"about **${QUESTION_USD:.2f}**" in readme
