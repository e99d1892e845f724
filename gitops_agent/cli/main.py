"""The `gitops-agent` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gitops_agent import __version__
from gitops_agent.cli.interrupts import interrupted_message, quit_now
from gitops_agent.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE  # noqa: F401
from gitops_agent.cli.output import print_result as _print_result
from gitops_agent.cli.output import reporter as _reporter
from gitops_agent.cli.run import add_run_parser
from gitops_agent.core.errors import AgentError, UsageError

DESCRIPTION = """\
A low-cost LLM agent that lives in a Git repository. A question becomes a task branch
(agent/task/<id>); a planner writes plan.json, executors answer each node by writing and running
code in a sandbox, every step is a commit, and the answer is report.md on that branch.
"""

EPILOG = """\
examples:
  gitops-agent demo                                   offline, on sample data, scripted model
  gitops-agent run "Which customers ordered most?"    in the current repository (ANTHROPIC_API_KEY)
  gitops-agent run --model openai:qwen2.5@http://localhost:11434/v1 "…"   a local model
  gitops-agent run --resume 20261126-101500-which-customers   continue a stopped task
  gitops-agent tasks                                  list the task branches here
  gitops-agent show <task-id>                         print a task's report
  gitops-agent memory search "average order value"    past experiences like this one
  gitops-agent fork <task-id> --at 4 "Use the median" a divergent path from step 4
  gitops-agent eval dabench --model anthropic:claude-haiku-4-5   score a model on the shipped suite
  gitops-agent serve-local --detach                   a small open model on 127.0.0.1 (extra: local)
"""


def _add_trace_parser(sub) -> None:
    """`gitops-agent trace`: a task's trace in the terminal, as JSON, HTML or OpenTelemetry spans."""
    tr = sub.add_parser(
        "trace",
        help="show a task's trace: plan, timeline of steps, tokens, cost",
        description="The trace of a task, from its branch alone (step files and commit trailers): the plan "
        "with status marks, one row per step (model, turns, time, tokens, cost, commit), totals, and a check "
        "that the commits' Agent-Cost-USD trailers add up to the step records.",
    )
    tr.add_argument("task", metavar="TASK", help="a task id, its branch (agent/task/<id>), or a unique prefix of a task id")
    tr.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")
    tr.add_argument("--json", action="store_true", help="print the trace as JSON on stdout instead")
    tr.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write the trace as one self-contained HTML page to FILE (each step's code, output, database queries, charts)",
    )
    tr.add_argument(
        "--otlp", action="store_true", help="also send it as OpenTelemetry spans to $OTEL_EXPORTER_OTLP_ENDPOINT (extra: otel)"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gitops-agent", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"gitops-agent {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    add_run_parser(sub)

    d = sub.add_parser(
        "demo",
        help="run the offline demo: sample data, scripted model, temporary repository",
        description="Make a Git repository with a sample data set (data/orders.csv) and answer a question about it "
        "with the shipped scripted model and the local sandbox: a real plan, real code really run, every step a "
        "commit. Needs no network and no key.",
    )
    d.add_argument("--dir", type=Path, help="where to create the demo repository (default: a new temporary directory)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the answer")

    t = sub.add_parser(
        "tasks",
        help="list the task branches of a repository",
        description="List the tasks of a repository (its agent/task/* branches) with their state; a task whose "
        "files do not load is shown as broken, with why. --remove deletes a task's local branch.",
    )
    t.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")
    t.add_argument(
        "--remove", metavar="TASK_ID", help="delete this task's local branch (the commits stay reachable in the reflog)"
    )
    t.add_argument("--fetch", metavar="REMOTE", help="first fetch REMOTE's task branches (tasks a remote has are listed too)")

    st = sub.add_parser(
        "step",
        help="run one step on a GitHub Actions runner (used by action.yml)",
        description="Run one step of a task inside GitHub Actions: read the event, fetch the task branch, "
        "do the step, push, dispatch the next steps. Reads GITHUB_* and GITOPS_AGENT_* variables.",
    )
    st.add_argument(
        "which",
        choices=["auto", "intake", "plan", "execute", "finish", "reconcile", "evolve", "eval"],
        help="the step (auto: from the event)",
    )
    st.add_argument("--event", default=None, help="event JSON (default: $GITHUB_EVENT_PATH)")

    s = sub.add_parser(
        "show",
        help="print a task's report (or its plan, if unfinished)",
        description="Print a task's report.md (or its question and plan, if it has not finished). The task is "
        "found here or on a remote.",
    )
    s.add_argument("task_id", metavar="TASK", help="a task id, its branch (agent/task/<id>), or a unique prefix of a task id")
    s.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")

    _add_trace_parser(sub)

    # memory, brain, evolve, fork (gitops_agent/cli/memory.py)
    from gitops_agent.cli.memory import add_parsers

    add_parsers(sub)
    from gitops_agent.cli.evals import add_parsers as add_eval
    from gitops_agent.cli.evals import add_replay_parser

    add_eval(sub)
    add_replay_parser(sub)
    from gitops_agent.cli.serve_local import add_parser as add_serve_local

    add_serve_local(sub)
    from gitops_agent.cli.setup import add_parsers as add_setup

    add_setup(sub)  # init, doctor
    from gitops_agent.cli.workbench import add_parsers as add_workbench

    add_workbench(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The command; a reader that goes away (`gitops-agent tasks | head -1`) ends it quietly."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could only be reported
        return code
    except BrokenPipeError:
        # as the Python documentation advises: what is still buffered goes nowhere, no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an unknown one is reported with the usage of the command it was given to
    (`run --bogus`: run's usage, not the top level's)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _innermost(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` ran: `memory list` is memory's list parser."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = next((a.choices[getattr(args, a.dest)] for a in subs if getattr(args, a.dest, None) in a.choices), None)
        if chosen is None:
            return parser
        parser = chosen


def _main(argv: list[str] | None) -> int:
    args = _parse(argv)
    if args.command is None:
        _parser().print_help()
        return EXIT_USAGE
    from gitops_agent.observe import telemetry

    telemetry.setup()  # spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; else nothing
    try:
        from gitops_agent.cli.evals import COMMANDS as EVAL_COMMANDS
        from gitops_agent.cli.memory import COMMANDS as MEMORY_COMMANDS  # memory, brain, evolve, fork
        from gitops_agent.cli.run import cmd_run
        from gitops_agent.cli.serve_local import COMMANDS as SERVE_COMMANDS
        from gitops_agent.cli.setup import COMMANDS as SETUP_COMMANDS
        from gitops_agent.cli.tasks import cmd_show, cmd_tasks
        from gitops_agent.cli.workbench import COMMANDS as WORKBENCH_COMMANDS

        return {
            "run": cmd_run,
            "demo": cmd_demo,
            "tasks": cmd_tasks,
            "show": cmd_show,
            "step": cmd_step,
            "trace": cmd_trace,
            **MEMORY_COMMANDS,
            **EVAL_COMMANDS,
            **SERVE_COMMANDS,
            **SETUP_COMMANDS,
            **WORKBENCH_COMMANDS,
        }[args.command](args)
    except UsageError as e:
        print(f"gitops-agent {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AgentError as e:
        msg = str(e)
        if os.environ.get("GITHUB_ACTIONS") == "true":  # a message may quote model text: never a workflow command
            from gitops_agent.safety.chars import log_line

            msg = log_line(msg, 4000)
        print(f"gitops-agent: error: {msg}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as e:
        print(interrupted_message(args, e), file=sys.stderr)
        import threading

        if any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
            telemetry.flush()
            quit_now(130)  # a step still blocked: do not wait for it at exit
        return 130
    finally:
        telemetry.flush()


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gitops_agent.app.local import DEMO_QUESTION, make_demo_repo, make_runtime, run_question
    from gitops_agent.settings.config import AgentConfig

    repo = make_demo_repo(args.dir)
    err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
    err.print(f"[bold]demo repository[/] {repo}  (data/orders.csv, 240 orders)")
    err.print(f"[bold]question[/] {DEMO_QUESTION}\n")
    rt = make_runtime(repo, config=AgentConfig(), reporter=_reporter(args))
    res = run_question(rt, DEMO_QUESTION, planner_model="scripted:demo", executor_model="scripted:demo")
    code = _print_result(res, repo)
    err.print(f"\nLook around: cd {repo} && git log --oneline --all")
    return code


def cmd_step(args: argparse.Namespace) -> int:
    from gitops_agent.data.environ import adopt as adopt_data_sources_env
    from gitops_agent.github.steps import run_step_command
    from gitops_agent.sandbox.base import not_dumpable

    not_dumpable()  # a job holds the token and the keys
    for problem in adopt_data_sources_env():  # out of the environment (and masked) before anything starts
        print(f"::warning title=gitops-agent data sources::{problem}", flush=True)
    return run_step_command(args.which, args.event)


def cmd_trace(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console

    from gitops_agent.app.local import find_repo
    from gitops_agent.cli.tasks import open_task
    from gitops_agent.observe.terminal import render_terminal
    from gitops_agent.observe.trace_build import build_trace

    git, tid = open_task(find_repo(args.repo), args.task)
    trace = build_trace(git, tid, fetch=False)
    if args.otlp:
        from gitops_agent.core.errors import ConfigError
        from gitops_agent.observe.telemetry import export_trace, flush, setup

        if not setup():
            raise ConfigError(
                "--otlp needs OTEL_EXPORTER_OTLP_ENDPOINT and the OpenTelemetry SDK and OTLP exporter "
                "(pip install 'gitops-agent[otel]')"
            )
        n = export_trace(trace)
        flush()
        print(
            f"sent {n} spans to "
            f"{os.environ.get('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT') or os.environ.get('OTEL_EXPORTER_OTLP_ENDPOINT')}",
            file=sys.stderr,
        )
    if args.html:
        from gitops_agent.observe.charts import find_charts
        from gitops_agent.observe.html import write_html

        path = write_html(trace, args.html, find_charts(git, trace.tip, trace.task_id, trace.steps))
        print(f"trace page: {path.resolve()}", file=sys.stderr)
    if args.json:
        sys.stdout.write(trace.to_json() + "\n")
    elif not args.html:
        # piped: wide enough for every column (COLUMNS still wins)
        cols = os.environ.get("COLUMNS", "")
        width = None if sys.stdout.isatty() else (int(cols) if cols.isdigit() else 200)
        render_terminal(trace, Console(highlight=False, width=width))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
