"""The small things a newcomer met on a first day (issue 23): the `tasks` columns, the HTML trace's
planner note after the finish, commit subjects cut mid-word, the usage an unknown option shows, a
`--repo` that does not exist, and markdown escapes in `show`."""

from __future__ import annotations

import re

import pytest
import yaml

from gitops_agent.app.local import DEMO_QUESTION
from tests.helpers import agent_command, commits, git


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo repository: one finished task, and a fork of it that has not run (not finished)."""
    repo = tmp_path_factory.mktemp("first-day") / "demo"
    assert agent_command("demo", "--dir", str(repo), "-q").returncode == 0
    tid = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").strip().removeprefix("agent/task/")
    r = agent_command("fork", tid, "--at", "1", "--no-run", "--repo", str(repo), "Use the median")
    assert r.returncode == 0, r.stderr
    return repo, tid


def test_the_tasks_listing_keeps_its_columns_when_a_task_is_not_finished(demo):
    repo, _ = demo
    lines = agent_command("tasks", "--repo", str(repo)).stdout.splitlines()
    assert len(lines) == 2 and any("not finished" in line for line in lines), lines
    assert len({line.index("agent(") for line in lines}) == 1, lines  # every subject starts in the same column


def test_the_html_trace_labels_the_planners_last_note_once_the_task_ended(demo, tmp_path):
    repo, tid = demo
    page = tmp_path / "trace.html"
    assert agent_command("trace", tid, "--repo", str(repo), "--html", str(page)).returncode == 0
    html = page.read_text()
    assert "Planner's note: n1 is done" not in html, "not the state of the plan any more"
    # which note was last depends on whether n2 or n3 finished first: the label is what matters
    assert re.search(r"Planner's last note, with plan v\d+, before the task ended: (n1 is done|waiting for)", html)


def test_commit_subjects_are_cut_at_a_word_with_an_ellipsis(demo):
    repo, tid = demo
    subject = next(c["subject"] for c in commits(repo, f"agent/task/{tid}") if c["trailers"].get("Agent-Role") == "intake")
    assert subject.startswith("agent(intake): ") and subject.endswith("…"), subject
    words = subject.removeprefix("agent(intake): ").removesuffix("…").split()
    assert words == DEMO_QUESTION.split()[: len(words)], "whole words of the question"
    assert len(subject) <= len("agent(intake): ") + 72


def test_show_prints_the_report_without_markdown_escapes(demo, tmp_path):
    repo, tid = demo
    report = git(repo, "show", f"agent/task/{tid}:.agent/tasks/{tid}/report.md")
    assert "| \\_plan |" in report, "the file keeps what GitHub needs"
    shown = agent_command("show", tid, "--repo", str(repo)).stdout
    assert "| _plan |" in shown and "\\_" not in shown

    # a task that ended on a reason quoting tool names in backticks
    script = tmp_path / "mute.yaml"
    script.write_text(yaml.safe_dump({"planner": [{"text": "thinking"}] * 12}))
    r = agent_command("run", "-q", "--repo", str(repo), "--task-id", "mute", "--model", f"scripted:{script}", "Anything?")
    assert r.returncode != 0
    shown = agent_command("show", "mute", "--repo", str(repo)).stdout
    assert "`update_plan` or `finish`" in shown and "\\`" not in shown, shown


def test_an_unknown_option_shows_the_usage_of_its_command():
    r = agent_command("run", "--bogus", "x")
    assert r.returncode == 2 and r.stderr.startswith("usage: gitops-agent run "), r.stderr
    assert "gitops-agent run: error: unrecognized arguments: --bogus" in r.stderr
    r = agent_command("memory", "list", "--bogus")
    assert r.returncode == 2 and r.stderr.startswith("usage: gitops-agent memory list "), r.stderr


def test_a_repo_that_does_not_exist_is_named_so(tmp_path):
    for args in (["run", "--repo", str(tmp_path / "nope"), "q?"], ["tasks", "--repo", str(tmp_path / "nope")]):
        r = agent_command(*args)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert f"{tmp_path / 'nope'} does not exist" in lines[0] and "git init" not in lines[0]
