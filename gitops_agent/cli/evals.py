"""`gitops-agent eval SUITE`: score models and brains on a suite of questions (gitops_agent/eval/).

gitops-agent eval dabench --model scripted                        the shipped suite, scripted answers (CI)
gitops-agent eval dabench --model anthropic:claude-haiku-4-5      your model choice, scored
gitops-agent eval dabench --model A --model B                     two models side by side
gitops-agent eval my-suite.yaml --brain agent/brain --brain agent/brain-proposal/x   two brains
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from gitops_agent.cli.flags import positive_float, positive_int
from gitops_agent.cli.output import EXIT_FAILED, EXIT_OK

EPILOG = """\
Each question runs in its own throwaway task (a temporary repository with the suite's data,
the real engine and sandbox), on a pool of --workers. The table (pass rate, cost, tokens and
the cached share, turns, wall time) is printed, written to --out, and committed to the branch
agent/eval of --repo (runs/<time>-<suite>/). `--model scripted` answers each question with its
own `solution` code, run for real: a check of the mechanics, at no cost.
"""


def add_parsers(sub) -> None:
    e = sub.add_parser(
        "eval",
        help="score models and brains on a suite of questions (pass rate, cost, tokens, time)",
        description="Answer every question of SUITE in its own throwaway task and check the answers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("suite", help="a suite file (YAML), or a shipped suite: dabench")
    e.add_argument(
        "--model",
        action="append",
        metavar="SPEC",
        help="who answers (planner and executors): anthropic:MODEL, openai:MODEL@URL, scripted; repeat it to compare",
    )
    e.add_argument(
        "--brain",
        action="append",
        metavar="REF",
        help="a ref of the agent/brain branch's history in --repo (e.g. agent/brain, a proposal branch); repeat to compare",
    )
    e.add_argument("--repeat", type=positive_int, default=1, metavar="N", help="answer each question N times (default 1)")
    e.add_argument("--workers", type=positive_int, default=4, metavar="N", help="questions at once (default 4)")
    e.add_argument("--only", metavar="IDS", help="comma-separated question ids (default: all)")
    e.add_argument(
        "--max-usd", type=positive_float, default=1.0, metavar="USD", help="budget of each question's task (default 1)"
    )
    e.add_argument(
        "--max-minutes", type=positive_float, metavar="MIN", help="wall time of each question's task (default: the config's)"
    )
    e.add_argument("--max-turns", type=positive_int, metavar="N", help="model turns per executor node (default: the config's)")
    e.add_argument("--judge-model", metavar="SPEC", help="model for `judge` checks without their own `model`")
    e.add_argument(
        "--baseline", type=Path, metavar="RESULTS", help="a results.json (or its folder) of an earlier run, shown beside this one"
    )
    e.add_argument(
        "--repo", type=Path, default=Path("."), help="where --brain refs are read and the results committed (default: here)"
    )
    e.add_argument("--out", type=Path, metavar="DIR", help="also write results.json and table.md into DIR")
    e.add_argument("--no-commit", action="store_true", help="do not commit the results to agent/eval")
    e.add_argument(
        "--min-pass-rate", type=float, metavar="X", help="exit 1 when the pass rate of any configuration is below X (0..1)"
    )


def add_replay_parser(sub) -> None:
    r = sub.add_parser(
        "replay",
        help="run a recorded task again, answering the model from its recording; name where it diverges",
        description="Replays TASK_ID through the current engine in a throwaway clone: each model request is answered "
        "from the task's recorded turns, the code runs again in the sandbox. Exit 0 when it reproduces the "
        "recorded outcome and answer with the same observations, 1 with the first divergence named.",
    )
    r.add_argument("task_id", help="the recorded task (agent/task/<id> in --repo)")
    r.add_argument(
        "--repo", type=Path, default=Path("."), help="the repository (default: the current directory); it is not changed"
    )
    r.add_argument("--keep", type=Path, metavar="DIR", help="keep the throwaway clone (with the replayed task branch) in DIR")
    r.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="your settings for the replay (sandbox limits, prices); the "
        "recording's own settings are never used, and its code always runs isolated (bubblewrap or docker), "
        "without network",
    )
    r.add_argument("--json", action="store_true", help="print the result as JSON")


def _cancellable() -> None:
    """The first Ctrl-C stops the questions in flight (model calls, sandbox) and their throwaway
    repositories are removed; the second quits at once (gitops_agent/cli/interrupts.py)."""
    from gitops_agent.cli.interrupts import install_signals
    from gitops_agent.core.cancel import CANCEL

    CANCEL.reset()
    install_signals()


def cmd_replay(args: argparse.Namespace) -> int:
    _cancellable()
    from gitops_agent.app.local import find_repo
    from gitops_agent.eval.replay import replay
    from gitops_agent.git.repo import GitRepo
    from gitops_agent.observe.trace_build import resolve_task_id

    repo = find_repo(args.repo)
    from gitops_agent.core.errors import ConfigError
    from gitops_agent.settings.config import load_config

    if args.config is not None and not args.config.is_file():
        raise ConfigError(f"--config {args.config}: no such file")
    user = load_config(args.config) if args.config is not None else None
    res = replay(repo, resolve_task_id(GitRepo(repo), args.task_id, fetch=False), keep=args.keep, config=user)
    if args.json:
        print(res.model_dump_json(indent=2))
    else:
        head = "reproduced" if res.reproduced else f"DIVERGED: {res.first().where}: {res.first().what}"
        print(f"replay of {res.task_id}: {head}")
        print(
            f"  outcome {res.outcome} (recorded {res.recorded_outcome}), "
            f"answer {'the same' if res.answer_same else 'different'}, "
            f"{res.requests} model requests answered from the recording"
        )
        print(f"  cost it would have had: ${res.cost_usd:.4f} (recorded ${res.recorded_cost_usd:.4f})")
        for d in res.divergences[1:10]:
            print(f"  then: {d.where}: {d.what}")
    return EXIT_OK if res.reproduced else EXIT_FAILED


def configs_from(args: argparse.Namespace, default_planner: str, default_executor: str, brain_of) -> tuple[list, dict]:
    """The configurations to compare (every --model with every --brain) and the brains by commit."""
    from gitops_agent.eval.run import EvalConfig

    models = args.model or [None]
    brains = args.brain or [None]
    out, loaded = [], {}
    for spec, ref in itertools.product(models, brains):
        commit, brain = brain_of(ref) if ref else (None, None)
        if commit is not None:
            loaded[commit] = brain
        name = spec or f"{default_planner} / {default_executor}"
        label = name if len(brains) == 1 else f"{name} · brain {ref}"
        out.append(EvalConfig(label=label, planner=spec or default_planner, executor=spec or default_executor, brain=commit))
    labels = [c.label for c in out]
    if len(set(labels)) != len(labels):
        from gitops_agent.core.errors import UsageError

        raise UsageError("the same --model/--brain given twice")
    return out, loaded


def cmd_eval(args: argparse.Namespace) -> int:
    _cancellable()
    from gitops_agent.eval.report import table
    from gitops_agent.eval.run import Runner
    from gitops_agent.eval.store import load_run
    from gitops_agent.eval.suite import load_suite

    suite = load_suite(args.suite)
    repo, cfg = _repo_and_config(args)
    configs, brains = configs_from(args, cfg.models.planner, cfg.models.executor, lambda ref: _brain_at(repo, ref))
    only = _only_questions(args, suite)
    _check_models(args, configs)
    baseline = load_run(args.baseline) if args.baseline else None
    total = len(configs) * args.repeat * (len(only) if only else len(suite.questions))
    print(f"gitops-agent eval: {suite.name}, {total} runs, {args.workers} at once", file=sys.stderr)
    runner = Runner(
        suite,
        config=cfg,
        budget=_question_budget(args),
        brains=brains,
        judge_model=args.judge_model,
        on_result=_progress_printer(total),
    )
    run = runner.run(configs, repeat=args.repeat, workers=args.workers, only=only)
    md = table(run, baseline)
    print(md)
    _save_results(args, repo, run, md)
    return _pass_rate_exit(args, run)


def _repo_and_config(args: argparse.Namespace):
    """The repository (None outside one, unless --brain or committing to --repo needs it) and its config."""
    from gitops_agent.app.local import find_repo
    from gitops_agent.core.errors import ConfigError, UsageError
    from gitops_agent.settings.config import load_config

    repo = None
    try:
        repo = find_repo(args.repo)
    except ConfigError:
        if args.brain or not args.no_commit and args.repo != Path("."):
            raise
    cfg = load_config(repo / ".github" / "gitops-agent.yml" if repo else None)
    if args.min_pass_rate is not None and not 0 <= args.min_pass_rate <= 1:
        raise UsageError("--min-pass-rate is a fraction between 0 and 1")
    return repo, cfg


def _brain_at(repo: Path | None, ref: str):
    """The commit of --brain REF in the repository, and the brain there."""
    from gitops_agent.brain.branch import load_repo_brain
    from gitops_agent.core.errors import ConfigError
    from gitops_agent.git.repo import GitRepo

    if repo is None:
        raise ConfigError("--brain needs a Git repository (--repo) to read the ref from")
    git = GitRepo(repo)
    try:
        sha = git.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except Exception:  # noqa: BLE001
        sha = ""
    if not sha:
        raise ConfigError(f"--brain {ref}: no such commit or branch in {repo}")
    return sha, load_repo_brain(git, fetch=False, at=sha)


def _only_questions(args: argparse.Namespace, suite) -> list[str] | None:
    """The question ids of --only (None: all), each one checked against the suite."""
    from gitops_agent.core.errors import UsageError

    only = [x.strip() for x in args.only.split(",")] if args.only else None
    if only:
        unknown = sorted(set(only) - {q.id for q in suite.questions})
        if unknown:
            raise UsageError(f"--only: no question {', '.join(unknown)} in {suite.name}")
    return only


def _check_models(args: argparse.Namespace, configs: list) -> None:
    """A model that cannot be reached is named now, not as one failed row per question."""
    from gitops_agent.app.local import check_model_env

    for spec in sorted(
        {s for c in configs for s in (c.planner, c.executor)} | ({args.judge_model} if args.judge_model else set())
    ):
        if spec != "scripted":
            check_model_env(spec)


def _progress_printer(total: int):
    """A line on stderr per answered question, counted against ``total``."""
    done = [0]

    def progress(r) -> None:
        done[0] += 1
        print(
            f"  [{done[0]}/{total}] {r.id} {r.config}: {'pass' if r.passed else 'FAIL'} ({r.why[:100]}) "
            f"${r.cost_usd:.4f} {r.wall_s:.1f} s",
            file=sys.stderr,
        )

    return progress


def _question_budget(args: argparse.Namespace):
    """The budget of each question's task: --max-usd, and the config's limits unless given."""
    from gitops_agent.core.state import Budget

    limits = {"max_usd": args.max_usd, "max_steps": 20}
    if args.max_minutes:
        limits["max_wall_seconds"] = int(args.max_minutes * 60)
    if args.max_turns:
        limits["max_turns"] = args.max_turns
    return Budget(**limits)


def _save_results(args: argparse.Namespace, repo: Path | None, run, md: str) -> None:
    """results.json and table.md into --out, and the run committed to agent/eval (unless --no-commit)."""
    from gitops_agent.eval.store import commit_run

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(run.model_dump_json(indent=2) + "\n")
        (args.out / "table.md").write_text(md)
    if repo is not None and not args.no_commit:
        from gitops_agent.git.repo import GitRepo

        sha = commit_run(GitRepo(repo), run, md)
        print(f"gitops-agent eval: results committed to agent/eval ({sha[:12]})", file=sys.stderr)


def _pass_rate_exit(args: argparse.Namespace, run) -> int:
    """EXIT_FAILED when a configuration's pass rate is below --min-pass-rate."""
    from gitops_agent.eval.report import summary

    if args.min_pass_rate is not None:
        low = {k: v["pass"] for k, v in summary(run).items() if v["pass"] < args.min_pass_rate}
        if low:
            print(
                f"gitops-agent eval: pass rate below {args.min_pass_rate:.0%}: "
                + ", ".join(f"{k} {v:.0%}" for k, v in low.items()),
                file=sys.stderr,
            )
            return EXIT_FAILED
    return EXIT_OK


COMMANDS = {"eval": cmd_eval, "replay": cmd_replay}
