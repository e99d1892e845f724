"""`gitops-agent workbench`: what the model's code can import, built now if it is not ready; the
default lock to compile a repository's own requirements against; a requirements file checked
the way a task will check it (gitops_agent/sandbox/workbench.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gitops_agent.cli.output import EXIT_OK

EPILOG = """\
examples:
  gitops-agent workbench                        build it if needed; list its packages and where it is
  gitops-agent workbench --lock > workbench.txt the default lock (pinned, with hashes)
  gitops-agent workbench --requirements requirements/analysis.txt
                                                check a repository's file as a task would

A repository adds packages with `sandbox.requirements: PATH` in .github/gitops-agent.yml. Make
that file pinned with hashes, and compatible with the default set:
  gitops-agent workbench --lock > /tmp/workbench.txt
  uv pip compile --generate-hashes -c /tmp/workbench.txt requirements/analysis.in -o requirements/analysis.txt
"""


def add_parsers(sub) -> None:
    w = sub.add_parser(
        "workbench",
        help="the environment the model's code runs with: its packages, the lock, a repository's requirements",
        description="The workbench: the interpreter and packages the model's code runs with (never the agent's own). "
        "Built once per lock and Python into the cache, checked before each use, rebuilt when broken.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument("--lock", action="store_true", help="print the default lock (requirements/workbench.txt) and exit")
    w.add_argument(
        "--requirements", type=Path, metavar="FILE", help="a hashed requirements file to add, as sandbox.requirements would"
    )


def cmd_workbench(args: argparse.Namespace) -> int:
    from gitops_agent.core.errors import UsageError
    from gitops_agent.sandbox.requirements import parse_lock
    from gitops_agent.sandbox.workbench import ensure_workbench, requirements_dir

    if args.lock:
        sys.stdout.write((requirements_dir() / "workbench.txt").read_text())
        return EXIT_OK
    extra = None
    if args.requirements is not None:
        if not args.requirements.is_file():
            raise UsageError(f"--requirements: {args.requirements} is not a file")
        extra = parse_lock(args.requirements.read_bytes(), str(args.requirements))
    wb = ensure_workbench(extra)
    how = f"built now in {wb.built_s:.1f} s" if wb.built_s is not None else "ready"
    print(f"workbench {wb.key} ({how}): {wb.python}")
    print(f"the model's code can import: {', '.join(wb.listing())}")
    print(f"{len(wb.packages)} distributions in all (with dependencies); the agent's own packages are not among them")
    return EXIT_OK


COMMANDS = {"workbench": cmd_workbench}
