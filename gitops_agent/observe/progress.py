"""Progress events: what runs now (which node, which turn, tokens, cost).

Steps call ``reporter.event(kind, **fields)``; the terminal reporter prints one line per event
(under ``-q`` only a ``warning``: a note that changes what the answer means).
Other reporters (the GitHub progress comment, the step summary) take the same events.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from rich.console import Console
from rich.markup import escape

from gitops_agent.safety.chars import log_line
from gitops_agent.safety.secrets import redact


class Reporter:
    """Silent by default; subclasses show or store events."""

    def event(self, kind: str, **fields: Any) -> None:  # noqa: D401
        pass


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def event(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self.events.append((kind, fields))


class ConsoleReporter(Reporter):
    """One line per event on stderr, so stdout keeps only the answer."""

    def __init__(self, console: Console | None = None, verbose: bool = False) -> None:
        self.console = console or Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.verbose = verbose
        self._lock = threading.Lock()

    def event(self, kind: str, **f: Any) -> None:
        line = self._line(kind, f)
        if line:
            with self._lock:
                self.console.print(line)

    def _line(self, kind: str, f: dict[str, Any]) -> str | None:
        # every value may carry model text (a tool name, an error): one line, no workflow command,
        # no secret, no console markup (agent/safety)
        e = {k: escape(redact(log_line(v))) if isinstance(v, str) else v for k, v in f.items()}
        if kind == "task":
            return f"[bold]task[/] {e['task']}  branch [cyan]{e['branch']}[/]"
        if kind == "plan":
            what = f"dispatch {', '.join(f['dispatch'])}" if f.get("dispatch") else (f.get("action") or "")
            spent = f"[dim]{f['tokens']} tok ${f['cost']:.4f}[/]"
            return f"[magenta]plan[/] v{f['version']}  {e['counts']}  {escape(redact(log_line(what)))}  {spent}"
        if kind == "plan_error":
            return f"[yellow]plan[/] model output rejected: {e['error']}"
        if kind == "turn":
            obs = f" → exit {f['exit_code']}" if f.get("exit_code") is not None or f.get("timed_out") else ""
            if f.get("timed_out"):
                obs = " → timed out"
            return (
                f"  [blue]{e['node']}[/] turn {f['turn']}/{f['max_turns']}  {e.get('tool') or 'text'}{obs}"
                f"  [dim]{f['tokens']} tok ${f['cost']:.4f}[/]"
            )
        if kind == "step":
            color = "green" if f["status"] == "done" else "red"
            return f"  [{color}]{e['node']} {f['status']}[/] in {f['turns']} turns, {f['seconds']:.1f}s  [dim]${f['cost']:.4f}[/]"
        if kind == "skip":
            return f"[dim]{e['step']} {e.get('node') or ''}: {e['why']}[/]" if self.verbose else None
        if kind == "budget":
            return f"[red]budget[/] {e['why']}"
        if kind == "error":
            where = " ".join(x for x in (e.get("step"), e.get("node")) if x)
            return f"[red]error[/]{' in ' + where if where else ''}: {e['error']}"
        if kind in ("note", "warning"):  # something the user should know before the run goes on
            return f"[yellow]note[/] {e['text']}"
        if kind == "retry":
            return f"[yellow]{e['step']}[/] again: {e['why']}"
        if kind == "waiting":
            return f"  [dim]waiting for {e['what']}: {f['seconds']} s[/]"
        if kind == "finish":
            return f"[bold green]finished[/] outcome [bold]{e['outcome']}[/]  total ${f['cost']:.4f}, {f['tokens']} tokens"
        return None


class QuietReporter(ConsoleReporter):
    """`-q`: only a ``warning``, a note that changes what the answer means (the working tree
    was not part of the task), on stderr."""

    def event(self, kind: str, **f: Any) -> None:
        if kind == "warning":
            super().event(kind, **f)
