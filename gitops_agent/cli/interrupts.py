"""Ctrl-C and SIGTERM: the first stops what is in flight and winds down, the second quits at
once; what the person is told afterwards."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _on_signal(signum, frame) -> None:  # noqa: ANN001 - signal's signature
    """First Ctrl-C / SIGTERM: stop what is in flight (model call, sandbox) and wind down. Second:
    quit at once (what a kill -9 would leave is cleaned up by the next run)."""
    from gitops_agent.core.cancel import CANCEL

    if CANCEL.is_set():
        print("\ngitops-agent: quitting now", file=sys.stderr)
        quit_now(130)
    print("\ngitops-agent: stopping (the model call and the code in the sandbox); Ctrl-C again to quit at once", file=sys.stderr)
    CANCEL.cancel("interrupted")


def quit_now(code: int) -> None:
    """Exit now, even with a step's thread still blocked (a model call that does not notice its
    closed connection), after removing this process's checkouts and sandbox directories."""
    from gitops_agent.git import scratch
    from gitops_agent.git.export import remove_active
    from gitops_agent.sandbox.base import remove_active_run_dirs

    remove_active()
    remove_active_run_dirs()
    scratch.remove_active()  # eval's and replay's throwaway repositories, git's scratch
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def install_signals() -> None:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


#: commands whose tasks live in throwaway repositories: nothing to resume after a Ctrl-C
THROWAWAY = {
    "eval": "its questions ran in throwaway repositories, now removed",
    "replay": "it ran in a throwaway clone, now removed",
}


def interrupted_message(args: argparse.Namespace, e: KeyboardInterrupt) -> str:
    """What a person is told after a Ctrl-C: how to continue a task of theirs, or, when the
    command's tasks were throwaway ones, that it was cancelled and there is nothing to resume."""
    if args.command in THROWAWAY:
        return f"\ngitops-agent: {args.command} cancelled; {THROWAWAY[args.command]}: there is nothing to resume"
    task = getattr(e, "task_id", None)
    repo = getattr(args, "repo", None)
    where = f" --repo {repo}" if repo is not None and Path(repo).resolve() != Path.cwd().resolve() else ""
    resume = f"gitops-agent run{where} --resume {task}" if task else "gitops-agent tasks, then gitops-agent run --resume TASK_ID"
    return (
        "\ngitops-agent: interrupted; every finished step is committed, the one in flight is redone on resume. "
        f"Continue with: {resume}"
    )
