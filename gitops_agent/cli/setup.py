"""`gitops-agent init` (set a repository up for GitHub) and `gitops-agent doctor` (check a
machine or runner): gitops_agent/app/setup_repo.py and gitops_agent/app/doctor.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gitops_agent.cli.output import EXIT_FAILED, EXIT_OK

INIT_EPILOG = """\
examples:
  gitops-agent init                         GitHub-hosted runners, pinned to this install's commit
  gitops-agent init --self-hosted linux,x64 your own runners with these labels
  gitops-agent init --ref v1                pin to a release tag instead

A file that is there already is never overwritten silently: init shows the diff and changes
nothing unless you pass --force. It commits nothing: review, commit and push yourself.
"""

DOCTOR_EPILOG = """\
One line per check: ✓ fine, ! works with less (said how), ✗ must be fixed (said how). Exit 1 if
any check failed. --runner checks only the machine (the action runs it when a job starts and
puts the table in the job summary).
"""


def add_parsers(sub) -> None:
    i = sub.add_parser(
        "init",
        help="set a repository up for GitHub: the caller workflow, a commented settings file, a checklist",
        description="Write .github/workflows/gitops-agent.yml (the caller of gitops-agent's reusable workflow, pinned "
        "to a commit) and .github/gitops-agent.yml (every setting with its default, commented out), then print "
        "what to do on GitHub and what it costs.",
        epilog=INIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")
    i.add_argument(
        "--self-hosted",
        metavar="LABELS",
        help="run on self-hosted runners with these labels, comma-separated (default: GitHub-hosted ubuntu-latest)",
    )
    i.add_argument(
        "--ref", help="the tag or commit of gitops-agent to pin (default: the commit this gitops-agent was installed from)"
    )
    i.add_argument("--force", action="store_true", help="overwrite files that differ (their diff is printed first)")
    d = sub.add_parser(
        "doctor",
        help="check this machine or runner: sandbox, cgroups, Python, git, uv and its index, models, settings, data sources",
        description="Check what gitops-agent needs here and say what is wrong, one line each.",
        epilog=DOCTOR_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument(
        "--repo",
        type=Path,
        default=Path("."),
        help="the repository whose settings, models and data sources (data.sources) to check",
    )
    d.add_argument("--runner", action="store_true", help="only the machine: no settings file, no model endpoints")
    d.add_argument("--summary", type=Path, metavar="FILE", help="also append the results as a Markdown table to FILE")


def cmd_init(args: argparse.Namespace) -> int:
    from gitops_agent.app.local import find_repo
    from gitops_agent.app.setup_repo import WORKFLOW_PATH, caller_workflow, checklist, installed_ref, plan_files, write_files
    from gitops_agent.core.errors import UsageError
    from gitops_agent.settings.commented import commented_settings
    from gitops_agent.settings.config import CONFIG_PATH

    repo = find_repo(args.repo)
    labels = [x.strip() for x in args.self_hosted.split(",") if x.strip()] if args.self_hosted is not None else None
    if labels is not None and not labels:
        raise UsageError("--self-hosted needs at least one runner label, e.g. --self-hosted self-hosted,linux")
    ref = args.ref or installed_ref()
    planned = plan_files(repo, {WORKFLOW_PATH: caller_workflow(ref, labels), CONFIG_PATH: commented_settings()})
    written = write_files(repo, planned, args.force)
    differs = [p for p in planned if p.state == "differs"]
    for p in differs:
        sys.stdout.write(p.diff)
    for p in planned:
        what = {
            "new": "written",
            "same": "unchanged (already as init writes it)",
            "differs": "overwritten (--force)" if p.path in written else "left as it is: it differs (the diff is above)",
        }[p.state]
        print(f"{p.path}: {what}")
    if differs and not args.force:
        print("\nNothing was overwritten. Run again with --force to write init's version (your edits are in the diff).")
        return EXIT_FAILED
    print(f"Pinned to {ref}.\n")
    print(checklist(labels))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from gitops_agent.app.doctor import FAIL, run_checks, summary_markdown
    from gitops_agent.safety.chars import log_line

    specs: list[str] = []
    repo = None
    if not args.runner:
        from gitops_agent.core.errors import AgentError
        from gitops_agent.settings.config import CONFIG_PATH, AgentConfig, load_config

        repo = args.repo.resolve()
        try:
            cfg = load_config(repo / CONFIG_PATH)
        except AgentError:
            cfg = AgentConfig()  # the settings check says what is wrong; the models are the defaults'
        specs = [cfg.models.planner, cfg.models.executor]
    checks = run_checks(args.runner, repo, specs)
    for c in checks:
        print(log_line(c.text(), limit=4000))  # a database's table names and errors are not ours: no control text
    if args.summary is not None:
        with open(args.summary, "a") as f:
            f.write(summary_markdown(checks))
    failed = [c for c in checks if c.state == FAIL]
    print(f"\n{len(failed)} problem(s)" if failed else "\nall good")
    return EXIT_FAILED if failed else EXIT_OK


COMMANDS = {"init": cmd_init, "doctor": cmd_doctor}
