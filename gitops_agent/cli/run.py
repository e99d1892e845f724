"""`gitops-agent run`: its options, and a question (or a resume) checked before any branch is made."""

from __future__ import annotations

import argparse
from pathlib import Path

from gitops_agent.cli.flags import positive_float, positive_int
from gitops_agent.cli.interrupts import install_signals
from gitops_agent.cli.output import print_result, reporter
from gitops_agent.core.errors import AgentError, UsageError


def _budget_args(p: argparse.ArgumentParser) -> None:
    from gitops_agent.app.costs import QUESTION_USD
    from gitops_agent.core.state import Budget
    from gitops_agent.settings.config import ModelsConfig

    b, m = Budget(), ModelsConfig()
    import textwrap

    g = p.add_argument_group(
        "budget (defaults from .github/gitops-agent.yml, else built in)",
        textwrap.fill(  # a spec is one word: never cut at its hyphens
            f"A question costs about ${QUESTION_USD:.2f} with the default models ({m.planner} plans, {m.executor} "
            "runs the code) when answered at the first try; more with retries (an estimate: bench/question_cost.py). "
            "A task stops when it reaches any of these.",
            78,
            break_on_hyphens=False,
        ),
    )
    g.add_argument(
        "--max-usd", type=positive_float, metavar="USD", help=f"dollars for all model calls of the task (default {b.max_usd:.2f})"
    )
    g.add_argument("--max-steps", type=positive_int, metavar="N", help=f"planner + executor steps (default {b.max_steps})")
    g.add_argument("--max-turns", type=positive_int, metavar="N", help=f"model turns per executor node (default {b.max_turns})")
    g.add_argument(
        "--max-minutes",
        type=positive_float,
        metavar="MIN",
        help=f"wall time from the task's start (default {b.max_wall_seconds // 60})",
    )


RUN_EPILOG = """\
settings: .github/gitops-agent.yml at the last commit (`gitops-agent init` writes every default).
data: the model's code reads the repository's files; a database is declared under data.sources
  (shop: {url_env: SHOP_DB_URL}) with its URL in that environment variable, and queried from the
  sandbox with warehouse.query("shop", sql, params); `gitops-agent doctor` checks it connects.
"""


def add_run_parser(sub) -> None:
    """`gitops-agent run`: a question in a repository, or --resume."""
    r = sub.add_parser(
        "run",
        help="answer a question in a Git repository",
        description="Answer QUESTION in the repository: task branch, plan, steps, report.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("question", nargs="?", help="the question (or use --resume)")
    r.add_argument("--resume", metavar="TASK_ID", help="continue a task from its last commit (finished nodes are not redone)")
    r.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")
    r.add_argument(
        "--model", help="model spec for planner and executor, e.g. anthropic:claude-haiku-4-5, openai:MODEL@URL, scripted:FILE"
    )
    r.add_argument("--planner-model", help="model spec for the planner (default from config, else anthropic:claude-sonnet-4-6)")
    r.add_argument("--executor-model", help="model spec for the executors (default from config, else anthropic:claude-haiku-4-5)")
    r.add_argument("--workers", type=positive_int, metavar="N", help="executor steps at once (default 4)")
    r.add_argument("--config", type=Path, help="config file (default: REPO/.github/gitops-agent.yml)")
    r.add_argument(
        "--push",
        nargs="?",
        const="origin",
        metavar="REMOTE",
        help="push every step commit to REMOTE (default origin), rebasing on a lost race",
    )
    r.add_argument("--task-id", help="use this task id instead of a generated one")
    r.add_argument(
        "--include-changes",
        action="store_true",
        help="answer over the working tree as it is, uncommitted changes included (default: the last commit, HEAD)",
    )
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the answer")
    r.add_argument("-v", "--verbose", action="store_true", help="also show skipped (duplicate) steps")
    _budget_args(r)


def cmd_run(args: argparse.Namespace) -> int:
    from gitops_agent.core.cancel import CANCEL

    CANCEL.reset()
    install_signals()
    from gitops_agent.app.local import check_model_env, check_resumable, find_repo, make_runtime, resume, run_question
    from gitops_agent.core.state import Budget, branch_for, check_task_id
    from gitops_agent.settings.config import CONFIG_PATH, load_config

    if args.question is not None and args.resume:
        raise UsageError("give a QUESTION or --resume TASK_ID, not both")
    if args.question is None and not args.resume:
        raise UsageError("give a QUESTION (in quotes), or --resume TASK_ID")
    if args.question is not None and not args.question.strip():
        raise UsageError("the question is empty")
    if args.task_id is not None:
        try:
            check_task_id(args.task_id)
        except AgentError as e:
            raise UsageError(f"--task-id: {e}") from None
    if args.config and not args.config.exists():
        raise UsageError(f"--config: {args.config} does not exist")
    repo = find_repo(args.repo)
    if args.push is not None:
        check_remote(repo, args.push)
    cfg = load_config(args.config or (repo / CONFIG_PATH))
    # validated as a whole, so a flag can never make a task.json that does not load
    budget = Budget.model_validate(
        {
            **cfg.budget.model_dump(),
            **{
                k: v
                for k, v in {
                    "max_usd": args.max_usd,
                    "max_steps": args.max_steps,
                    "max_turns": args.max_turns,
                    "max_wall_seconds": max(1, int(args.max_minutes * 60)) if args.max_minutes else None,
                }.items()
                if v is not None
            },
        }
    )
    cfg = cfg.model_copy(update={"budget": budget, "workers": args.workers or cfg.workers})
    if args.resume:
        from gitops_agent.cli.tasks import local_branch_for, open_task

        # a prefix or branch name is fine; without --push, a task only a remote has is continued here
        task = open_task(repo, args.resume)[1] if args.push else local_branch_for(repo, args.resume)
        check_resumable(repo, task)  # before anything is shared or runs
    rt = make_runtime(repo, config=cfg, remote=args.push, reporter=reporter(args))
    if args.resume:
        if args.push:
            rt.git.share_branch(branch_for(task))  # a task begun here goes on on the remote
        return print_result(resume(rt, task), repo)
    planner = args.planner_model or args.model or cfg.models.planner
    executor = args.executor_model or args.model or cfg.models.executor
    for spec in dict.fromkeys((planner, executor)):
        check_model_env(spec)
        # a bad spec, an endpoint that is not there, a refused key, an unknown model: fail here,
        # in seconds, before any branch is made (and before anything reaches memory)
        rt.model(spec).preflight()
    check_sandbox(cfg)  # and a sandbox backend that cannot run here
    if args.task_id and rt.git.tip(f"agent/task/{args.task_id}", fetch=False) is not None:
        raise UsageError(f"--task-id: a task {args.task_id!r} exists already (continue it with --resume {args.task_id})")
    res = run_question(
        rt,
        args.question,
        planner_model=planner,
        executor_model=executor,
        budget=budget,
        task_id=args.task_id,
        include_changes=args.include_changes,
    )
    return print_result(res, repo)


def check_remote(repo: Path, remote: str) -> None:
    """`--push REMOTE`: a remote this repository names, or one clear line before anything is made."""
    from gitops_agent.cli.tasks import remotes
    from gitops_agent.git.repo import GitRepo

    names = remotes(GitRepo(repo))
    if remote not in names:
        have = ", ".join(names) or "none"
        raise UsageError(f"--push: no remote {remote!r} here (see `git remote -v`; this repository has: {have})")


def check_sandbox(cfg) -> None:
    """Fail now, before any branch is made, when the configured sandbox cannot run here."""
    from gitops_agent.sandbox.choose import check_backend

    check_backend(cfg.sandbox)
