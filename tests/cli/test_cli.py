"""The command line as a newcomer meets it: the demo, --help, and one clear line for bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.helpers import ROOT
from tests.helpers import agent_command as cli


def test_demo_answers_with_numbers_computed_from_the_data(tmp_path):
    r = cli("demo", "--dir", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    # recompute what the answer must say, from the shipped data
    amounts = defaultdict(list)
    for row in csv.DictReader(open(ROOT / "gitops_agent" / "demo" / "orders.csv")):
        try:
            amounts[row["region"]].append(float(row["amount"]))
        except ValueError:
            pass
    best = max(amounts, key=lambda k: sum(amounts[k]) / len(amounts[k]))
    avg = sum(amounts[best]) / len(amounts[best])
    assert f"**{best}** has the highest average order value ({avg:.2f})" in r.stdout
    assert "outcome done" in r.stderr and "agent/task/" in r.stderr
    # the answer has a chart, drawn by matplotlib in the workbench and committed with its step
    chart = next(line for line in r.stderr.splitlines() if line.startswith("chart:"))
    spec = chart.split(" show ", 1)[1].split(" > ")[0]
    png = subprocess.run(["git", "-C", str(tmp_path / "demo"), "show", spec], capture_output=True, check=True).stdout
    assert png.startswith(b"\x89PNG") and spec.endswith("-n2/avg_by_region.png") and len(png) > 5000
    branches = subprocess.run(
        ["git", "-C", str(tmp_path / "demo"), "branch", "--list", "agent/task/*"], capture_output=True, text=True
    ).stdout
    assert branches.strip()


def test_help_explains_the_commands():
    r = cli("--help")
    assert r.returncode == 0
    for word in ("run", "demo", "tasks", "show", "examples"):
        assert word in r.stdout
    r = cli("run", "--help")
    assert "--resume" in r.stdout and "--max-usd" in r.stdout and "--planner-model" in r.stdout


def test_run_help_states_the_built_in_budget_and_what_a_question_costs():
    from gitops_agent.app.costs import QUESTION_USD
    from gitops_agent.core.state import Budget

    out = " ".join(cli("run", "--help", env={"COLUMNS": "100"}).stdout.split())
    b = Budget()
    assert f"(default {b.max_usd:.2f})" in out and f"(default {b.max_steps})" in out
    assert f"(default {b.max_turns})" in out and f"(default {b.max_wall_seconds // 60})" in out
    assert f"about ${QUESTION_USD:.2f} with the default models" in out and "anthropic:claude-sonnet-4-6 plans" in out


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "r"
    r.mkdir()
    (r / "f.txt").write_text("x\n")
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "i"],
    ):
        subprocess.run(["git", "-C", str(r), *cmd], check=True)
    return r


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr  # one clear line, no traceback
    return lines[0]


def test_bad_inputs_get_one_clear_line(repo, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "not inside a Git repository" in _one_error_line(cli("run", "--repo", str(empty), "q?"))
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    assert "has no commits yet" in _one_error_line(cli("run", "--repo", str(empty), "--model", "scripted:demo", "q?"))
    assert "ANTHROPIC_API_KEY" in _one_error_line(cli("run", "--repo", str(repo), "q?"))
    assert "unknown model provider 'gemini'" in _one_error_line(cli("run", "--repo", str(repo), "--model", "gemini:x", "q?"))
    assert "not both" in _one_error_line(cli("run", "--repo", str(repo), "--resume", "x", "q?"))
    assert "no task 'nope' in this repository" in _one_error_line(cli("run", "--repo", str(repo), "--resume", "nope"))
    assert "is neither a task id" in _one_error_line(cli("run", "--repo", str(repo), "--resume", "../../etc"))
    (repo / ".github").mkdir()
    (repo / ".github" / "gitops-agent.yml").write_text("budget:\n  max_usd: lots\n")
    line = _one_error_line(cli("run", "--repo", str(repo), "--model", "scripted:demo", "q?"))
    assert "gitops-agent.yml" in line and "budget.max_usd" in line
    # nothing was created by the failed attempts
    assert subprocess.run(["git", "-C", str(repo), "branch", "--list", "agent/*"], capture_output=True, text=True).stdout == ""


def test_tasks_and_show(tmp_path):
    demo = tmp_path / "demo"
    assert cli("demo", "--dir", str(demo), "-q").returncode == 0
    r = cli("tasks", "--repo", str(demo))
    assert r.returncode == 0 and "what-is-the-average" in r.stdout
    task_id = r.stdout.split()[0]
    r = cli("show", task_id, "--repo", str(demo))
    assert r.returncode == 0 and "## Answer" in r.stdout and "| **total** |" in r.stdout
    # each table once: under Answer; Results by node points there instead of repeating it
    rows = [
        line
        for line in r.stdout.split("## Results by node")[0].splitlines()
        if line.startswith("| East |") or line.startswith("| 2026-01 |")
    ]
    assert len(rows) == 2 and all(r.stdout.count(row) == 1 for row in rows)
    assert "this table is in the Answer above" in r.stdout.split("## Results by node")[1]
    assert cli("show", task_id[:16], "--repo", str(demo)).stdout == r.stdout, "a unique prefix is enough"


def test_a_reader_that_goes_away_ends_a_listing_quietly(tmp_path):
    """`gitops-agent tasks | head -1`: the pipe closes before the listing is written (issue 23)."""
    demo = tmp_path / "demo"
    assert cli("demo", "--dir", str(demo), "-q").returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "OPENAI"))}
    env["PYTHONPATH"] = str(ROOT)
    for command in (["tasks"], ["memory", "list"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone: every write to the pipe fails
        try:
            r = subprocess.run(
                [sys.executable, "-m", "gitops_agent", *command, "--repo", str(demo)],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                timeout=60,
            )
        finally:
            os.close(write)
        assert r.stderr == "", (command, r.stderr)  # no BrokenPipeError traceback
        assert r.returncode == 1, command
