"""`/agent` commands are declared once (gitops_agent/steps/commands.py): a new one is a
CommandSpec there; parsing, the help, the check before it is recorded and its effect at the next
plan round all come from it."""

from __future__ import annotations

import pytest

from gitops_agent.app.local import make_runtime, result_of
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.core.state import FollowUp
from gitops_agent.steps import commands
from gitops_agent.steps.commands import COMMANDS, CommandSpec, _bare, help_text, parse_command
from gitops_agent.steps.engine import Engine
from gitops_agent.steps.intake import add_instruction
from tests.helpers import agent_command, git


def test_the_help_lists_every_command():
    text = help_text("/bot")
    for spec in COMMANDS.values():
        assert f"- `/bot {spec.usage}`: {spec.help}" in text
    assert "- `/bot <instruction>`" in text


@pytest.mark.parametrize(
    "text,kind,problem",
    [
        ("retry n2 n3", "retry", None),
        ("retry", "retry", "ids of the nodes"),
        ("budget +1.50", "budget", None),
        ("budget 2", "budget", "in dollars"),
        ("stop", "stop", None),
        ("Stop", "stop", None),
        ("help", "help", None),
    ],
)
def test_commands_parse_from_their_declaration(text, kind, problem):
    cmd = parse_command(text)
    assert cmd is not None and cmd.kind == kind and (cmd.problem is None if problem is None else problem in cmd.problem)


def test_words_after_a_bare_command_make_an_instruction():
    assert parse_command("stop the second node early") is None and parse_command("please retry") is None


def test_a_new_command_is_one_declaration(tmp_path, monkeypatch):
    """`halt`, declared here as a spec that ends the task: the next plan round ends it without a
    planner call, naming who asked and how."""
    monkeypatch.setitem(commands.COMMANDS, "halt", CommandSpec("halt", "halt", "end it", _bare, ends=True))
    assert "`/agent halt`: end it" in help_text("/agent")
    demo = tmp_path / "demo"
    assert agent_command("demo", "--dir", str(demo), "-q").returncode == 0
    tid = git(demo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").strip().removeprefix("agent/task/")
    rt = make_runtime(demo)
    job = add_instruction(rt, tid, "halt", "alice", where=FollowUp(where="issue", number=1, by="alice", command="halt"))
    Engine(rt).run_local([job])
    res = result_of(rt, tid)
    snap = load_snapshot(rt.git, tid)
    assert res.outcome == "failed" and "stopped by @alice (`/agent halt`)" in (res.reason or "")
    assert snap.steps[-2].role == "planner" and snap.steps[-2].turns == 0  # decided without the model
