"""Flags and settings are checked before anything is written (issue 12.3): a bad value is refused
up front, naming the flag, with exit code 2; nothing is created; a broken task can be listed and
removed."""

from __future__ import annotations

import pytest

from gitops_agent.sandbox.choose import docker_engine_answers
from tests.helpers import git, make_repo
from tests.memory.helpers import cli


@pytest.fixture
def repo(tmp_path):
    return make_repo(tmp_path)


def _no_branch(repo) -> bool:
    return git(repo, "branch", "--list", "agent/*") == ""


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--max-usd", "-1"], "--max-usd"),
        (["--max-usd", "nan"], "--max-usd"),
        (["--max-usd", "inf"], "--max-usd"),
        (["--max-usd", "0"], "--max-usd"),
        (["--max-steps", "0"], "--max-steps"),
        (["--max-turns", "-3"], "--max-turns"),
        (["--max-minutes", "-1"], "--max-minutes"),
        (["--workers", "0"], "--workers"),
        (["--max-steps", "two"], "--max-steps"),
        (["--task-id", "a b"], "--task-id"),
        (["--task-id", "x\n"], "--task-id"),
        (["--config", "/nonexistent.yml"], "--config"),
    ],
)
def test_a_bad_flag_is_refused_naming_it_and_nothing_is_written(repo, flags, named):
    r = cli("run", "--repo", str(repo), "--model", "scripted:demo", *flags, "What is the sum?")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert named in r.stderr and "task.json" not in r.stderr
    assert _no_branch(repo)


@pytest.mark.parametrize(
    "args,says", [([""], "the question is empty"), (["   "], "the question is empty"), ([], "give a QUESTION")]
)
def test_a_missing_or_empty_question_is_a_usage_error(repo, args, says):
    r = cli("run", "--repo", str(repo), "--model", "scripted:demo", *args)
    assert r.returncode == 2 and says in r.stderr and _no_branch(repo)


def test_an_existing_task_id_is_refused_not_renamed(repo):
    assert cli("run", "--repo", str(repo), "--model", "scripted:demo", "--task-id", "t1", "q?").returncode in (0, 1, 3)
    r = cli("run", "--repo", str(repo), "--model", "scripted:demo", "--task-id", "t1", "q?")
    assert r.returncode == 2 and "--task-id" in r.stderr and "exists already" in r.stderr
    assert git(repo, "branch", "--list", "agent/task/*").split() == ["agent/task/t1"]  # no t1-2


@pytest.mark.skipif(docker_engine_answers(), reason="a docker engine answers here")
def test_an_unavailable_sandbox_backend_is_found_before_intake(repo):
    (repo / ".github").mkdir()
    (repo / ".github" / "gitops-agent.yml").write_text("sandbox: {backend: docker}\n")
    r = cli("run", "--repo", str(repo), "--model", "scripted:demo", "q?")
    assert r.returncode == 1 and "sandbox backend 'docker' is not available" in r.stderr
    assert _no_branch(repo)


def test_a_broken_task_is_listed_as_broken_and_can_be_removed(repo):
    assert cli("run", "--repo", str(repo), "--model", "scripted:demo", "--task-id", "good", "q?").returncode in (0, 1, 3)
    git(repo, "branch", "agent/task/bad", "main")  # a task branch without a task.json
    r = cli("tasks", "--repo", str(repo))
    assert r.returncode == 0
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "BROKEN" in lines["bad"] and "task.json" in lines["bad"] and "--remove bad" in lines["bad"]
    assert "BROKEN" not in lines["good"]
    r = cli("tasks", "--repo", str(repo), "--remove", "bad")
    assert r.returncode == 0 and "removed task bad" in r.stdout
    assert git(repo, "branch", "--list", "agent/task/*").split() == ["agent/task/good"]
    assert cli("tasks", "--repo", str(repo), "--remove", "nosuch").returncode == 2


def test_every_command_and_flag_explains_itself():
    """`--help` that helps: every command has a description and every argument a help text."""
    import argparse

    from gitops_agent.cli.main import _parser

    missing = []

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                helps = {c.dest: c.help for c in a._choices_actions}
                for sub, sp in a.choices.items():
                    if not helps.get(sub):
                        missing.append(f"{name} {sub}: no one-line help")
                    walk(sp, f"{name} {sub}")
            elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)) and not a.help:
                missing.append(f"{name} {'/'.join(a.option_strings) or a.dest}")

    walk(_parser(), "gitops-agent")
    assert missing == []
