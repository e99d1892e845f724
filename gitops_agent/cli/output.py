"""What the commands print and the exit codes they return (shared by every command group)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET = 0, 1, 2, 3


def reporter(args: argparse.Namespace):
    from gitops_agent.observe.progress import ConsoleReporter, QuietReporter

    return QuietReporter() if getattr(args, "quiet", False) else ConsoleReporter(verbose=getattr(args, "verbose", False))


def print_result(res, repo: Path) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    out = Console(highlight=False, soft_wrap=True)
    if res.answer:
        out.print(Markdown(res.answer) if sys.stdout.isatty() else res.answer)
    elif res.reason:
        out.print(f"No answer: {res.reason}")
    err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
    err.print(f"\n[bold]outcome[/] {res.outcome}   [bold]cost[/] ${res.cost_usd:.4f}   [bold]branch[/] {res.branch}")
    err.print(f"report: git -C {repo} show {res.branch}:.agent/tasks/{res.task_id}/report.md")
    err.print(f"trace:  git -C {repo} log --format='%s%n%(trailers)' {res.branch}")
    for path in res.charts:  # the answer's charts are files of the task branch
        err.print(f"chart:  git -C {repo} show {res.branch}:{path} > {path.rsplit('/', 1)[-1]}")
    if res.outcome != "done":
        err.print(f"continue: gitops-agent run --repo {repo} --resume {res.task_id}")
    return EXIT_OK if res.outcome == "done" else (EXIT_BUDGET if res.outcome == "budget" else EXIT_FAILED)
