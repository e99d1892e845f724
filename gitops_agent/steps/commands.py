"""`/agent <command>` on an issue or pull request, each command declared once: its words and
help, how its arguments are read, what is checked before it is recorded (a reply says why
nothing runs), and what it does at the next plan round. Anything else after the phrase is a
free-text instruction. A new command is one ``CommandSpec`` here and its test."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitops_agent.core.plan import Plan
from gitops_agent.core.plan_edits import redo
from gitops_agent.core.state import NODE_ID_RE


@dataclass
class Command:
    kind: str
    nodes: tuple[str, ...] = ()
    usd: float = 0.0
    problem: str | None = None  # a command given wrongly: the reply says what, and nothing runs

    @property
    def text(self) -> str:
        """How it is recorded in task.json (FollowUp.command)."""
        if self.kind == "retry":
            return "retry " + " ".join(self.nodes)
        if self.kind == "budget":
            return f"budget +{self.usd:g}"
        return self.kind

    @property
    def spec(self) -> "CommandSpec":
        return COMMANDS[self.kind]


@dataclass(frozen=True)
class Check:
    """Before a command is recorded: a reply when nothing is to run, or the task's new dollar budget."""

    reply: str | None = None
    max_usd: float | None = None


@dataclass(frozen=True)
class CommandSpec:
    name: str
    usage: str
    help: str
    #: its arguments (the words after its name) -> the command; a Command with ``problem`` when wrong
    parse: Callable[[str, list[str]], Command | None]
    #: (command, the task as it stands, the trusted settings) -> what to do before recording it
    check: Callable[[Command, Any, Any], Check] = lambda cmd, snap, cfg: Check()
    #: what it does to the plan at the next round: one line per change
    steer: Callable[[Command, Plan, str | None], list[str]] = lambda cmd, plan, by: []
    #: the next round ends the task (no planner call)
    ends: bool = False
    #: the next round runs the plan as the person left it, without asking the planner
    no_planner: bool = False
    #: recorded on the task (help is only answered)
    recorded: bool = True


def _bare(name: str, args: list[str]) -> Command | None:
    return None if args else Command(name)  # "stop the second node early" is an instruction, not `stop`


def _parse_retry(name: str, args: list[str]) -> Command:
    bad = [a for a in args if not NODE_ID_RE.fullmatch(a)]
    if not args or bad:
        return Command(name, problem="`retry` takes the ids of the nodes to run again, e.g. `retry n2`")
    return Command(name, nodes=tuple(dict.fromkeys(args)))


def _check_retry(cmd: Command, snap: Any, cfg: Any) -> Check:
    unknown = [n for n in cmd.nodes if snap.plan is None or snap.plan.get(n) is None]
    return Check(reply=f"No node {', '.join(f'`{n}`' for n in unknown)} in the plan: nothing ran.") if unknown else Check()


def _steer_retry(cmd: Command, plan: Plan, by: str | None) -> list[str]:
    notes = [
        f"node {node} runs again (`retry` by @{by})" if by else f"node {node} runs again (`retry`)"
        for node in redo(plan, cmd.nodes)
    ]
    plan.finish = None
    return notes


def _parse_budget(name: str, args: list[str]) -> Command:
    m = re.fullmatch(r"\+\$?(\d+(?:\.\d+)?)", args[0]) if len(args) == 1 else None
    usd = float(m.group(1)) if m else math.nan
    if not m or not math.isfinite(usd) or usd <= 0:
        return Command(name, problem="`budget` takes what to add in dollars, e.g. `budget +1.50`")
    return Command(name, usd=usd)


def _check_budget(cmd: Command, snap: Any, cfg: Any) -> Check:
    ceiling, now = cfg.github.max_usd_ceiling, snap.task.budget.max_usd
    if now >= ceiling:
        return Check(reply=f"The budget is ${now:g} already, the most `github.max_usd_ceiling` allows: nothing changed.")
    return Check(max_usd=min(now + cmd.usd, ceiling))


COMMANDS: dict[str, CommandSpec] = {
    s.name: s
    for s in (
        CommandSpec(
            "retry",
            "retry <node> [<node>…]",
            "run these nodes again (and what depends on them)",
            _parse_retry,
            check=_check_retry,
            steer=_steer_retry,
            no_planner=True,
        ),
        CommandSpec("continue", "continue", "go on, e.g. after you edited `plan.json` on the branch", _bare, no_planner=True),
        CommandSpec("stop", "stop", "end the task now, with what it has", _bare, ends=True),
        CommandSpec(
            "budget",
            "budget +<usd>",
            "raise the task's dollar budget (up to `github.max_usd_ceiling`)",
            _parse_budget,
            check=_check_budget,
        ),
        CommandSpec("help", "help", "this list", _bare, recorded=False),
    )
}


def help_text(phrase: str) -> str:
    lines = [
        f"Commands (after `{phrase}`, from people with write access):",
        "",
        f"- `{phrase} <instruction>`: a follow-up; the planner continues the task with it",
    ]
    lines += [f"- `{phrase} {s.usage}`: {s.help}" for s in COMMANDS.values()]
    return "\n".join(lines) + "\n"


def parse_command(text: str) -> Command | None:
    """The command ``text`` (what follows the phrase) gives, or None for a free-text instruction."""
    words = (text or "").split()
    spec = COMMANDS.get(words[0].lower()) if words else None
    return spec.parse(spec.name, words[1:]) if spec is not None else None
