"""`/agent <command>` on an issue or pull request: `retry <node>…`, `stop`, `continue`,
`budget +<usd>`, `help`. Anything else after the phrase is a free-text instruction."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from gitops_agent.core.state import NODE_ID_RE

HELP = """\
Commands (after `{phrase}`, from people with write access):

- `{phrase} <instruction>`: a follow-up; the planner continues the task with it
- `{phrase} retry <node> [<node>…]`: run these nodes again (and what depends on them)
- `{phrase} continue`: go on, e.g. after you edited `plan.json` on the branch
- `{phrase} stop`: end the task now, with what it has
- `{phrase} budget +<usd>`: raise the task's dollar budget (up to `github.max_usd_ceiling`)
- `{phrase} help`: this list
"""

_WORDS = {"retry", "stop", "continue", "budget", "help"}


@dataclass
class Command:
    kind: str  # retry | stop | continue | budget | help
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


def parse_command(text: str) -> Command | None:
    """The command ``text`` (what follows the phrase) gives, or None for a free-text instruction."""
    words = (text or "").split()
    if not words or words[0].lower() not in _WORDS:
        return None
    kind, args = words[0].lower(), words[1:]
    if kind == "retry":
        bad = [a for a in args if not NODE_ID_RE.fullmatch(a)]
        if not args or bad:
            return Command(kind, problem="`retry` takes the ids of the nodes to run again, e.g. `retry n2`")
        return Command(kind, nodes=tuple(dict.fromkeys(args)))
    if kind == "budget":
        m = re.fullmatch(r"\+\$?(\d+(?:\.\d+)?)", args[0]) if len(args) == 1 else None
        usd = float(m.group(1)) if m else math.nan
        if not m or not math.isfinite(usd) or usd <= 0:
            return Command(kind, problem="`budget` takes what to add in dollars, e.g. `budget +1.50`")
        return Command(kind, usd=usd)
    if args:  # "stop the second node early" is an instruction, not `stop`
        return None
    return Command(kind)
