"""Commands of memory and brain: `memory`, `brain`, `evolve`, `fork` (wired into gitops_agent/cli/main.py).

    gitops-agent memory search "text" [-k N] [--json] [--method bm25|embed|hybrid]
    gitops-agent memory show <task-id> [--json]
    gitops-agent memory list [--json]
    gitops-agent memory add-data PATH [--name NAME]
    gitops-agent memory reindex [--method M]
    gitops-agent brain init | diff | show
    gitops-agent evolve [--model SPEC] [--last N]
    gitops-agent fork <task-id> --at <step> ["new instruction"]

All take ``--repo PATH`` (default: the current directory).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_agent.cli.flags import positive_int, step_number
from gitops_agent.cli.output import EXIT_FAILED, EXIT_OK  # noqa: F401

if TYPE_CHECKING:
    from gitops_agent.memory.store import MemoryStore


def add_parsers(sub) -> None:
    """Add the subcommands to the `gitops-agent` parser's subparsers."""
    _add_memory_parser(sub)
    _add_brain_parser(sub)
    _add_evolve_parser(sub)
    _add_fork_parser(sub)


def _add_memory_parser(sub) -> None:
    """`gitops-agent memory search|show|list|add-data|reindex`."""
    m = sub.add_parser(
        "memory",
        help="search, show and add to the memory branch (agent/memory)",
        description="The memory branch agent/memory: one experience per finished task, and shared data sets under data/.",
    )
    msub = m.add_subparsers(dest="memory_command", metavar="ACTION")
    ms = msub.add_parser("search", help="the past experiences most similar to TEXT")
    ms.add_argument("text", help="the question or words to look for")
    ms.add_argument("-k", type=positive_int, default=5, help="how many (default 5)")
    ms.add_argument(
        "--method", choices=["bm25", "embed", "hybrid"], help="retrieval method (default bm25, or $GITOPS_AGENT_RETRIEVAL)"
    )
    ms.add_argument("--json", action="store_true", help="print JSON lines: task id, score and the experience")
    mshow = msub.add_parser("show", help="print one task's experience")
    mshow.add_argument("task_id", help="the task whose experience to print")
    mshow.add_argument("--json", action="store_true", help="print the experience as JSON")
    ml = msub.add_parser("list", help="list the experiences and data sets")
    ml.add_argument("--json", action="store_true", help="print JSON")
    ma = msub.add_parser(
        "add-data", help="commit a file or directory under data/ on the memory branch (read-only for the model's code)"
    )
    ma.add_argument("path", type=Path, help="the file or directory to add")
    ma.add_argument("--name", help="name under data/ (default: the file or directory name)")
    mr = msub.add_parser("reindex", help="rebuild the cached retrieval index of the memory tip")
    mr.add_argument("--method", choices=["bm25", "embed", "hybrid"], help="retrieval method (default bm25)")
    for p in (m, ms, mshow, ml, ma, mr):
        p.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")


def _add_brain_parser(sub) -> None:
    """`gitops-agent brain init|diff|show`."""
    b = sub.add_parser(
        "brain",
        help="the agent/brain branch: this repository's agents, prompts and tools",
        description="agent/brain overrides the packaged agents (agents/*.yaml), prompts (prompts/*.j2) and adds helper tools "
        "(tools/*.py).",
    )
    bsub = b.add_subparsers(dest="brain_command", metavar="ACTION")
    bi = bsub.add_parser("init", help="create agent/brain from the packaged defaults")
    bd = bsub.add_parser("diff", help="what agent/brain changes from the packaged defaults (unified diff per file)")
    bs = bsub.add_parser("show", help="the brain in use: agents, prompts, tools and where each comes from")
    for p in (b, bi, bd, bs):
        p.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")


def _add_evolve_parser(sub) -> None:
    """`gitops-agent evolve`: a brain proposal from the memory (measured on a suite unless --no-eval)."""
    e = sub.add_parser(
        "evolve",
        help="propose brain changes from the memory, on a new agent/brain-proposal/<date> branch",
        description="Reads recent experiences (failures and lessons first), asks the model for concrete changes to the "
        "brain, validates them and commits them on agent/brain-proposal/<date> (based on agent/brain; never merged).",
    )
    e.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")
    e.add_argument("--model", help="model spec (default: the planner model of the config)")
    e.add_argument("--last", type=positive_int, default=20, help="how many recent experiences to read (default 20)")
    e.add_argument(
        "--suite", help="the eval suite run on the current and the proposed brain (default: evolve.suite of the config, dabench)"
    )
    e.add_argument(
        "--eval-model",
        metavar="SPEC",
        help="who answers the suite (default: evolve.model, else the task models); `scripted`: the suite's solutions",
    )
    e.add_argument("--workers", type=positive_int, default=4, metavar="N", help="suite questions at once (default 4)")
    e.add_argument("--no-eval", action="store_true", help="propose without measuring")


def _add_fork_parser(sub) -> None:
    """`gitops-agent fork TASK_ID --at STEP [instruction]`."""
    f = sub.add_parser(
        "fork",
        help="a new task from a step of an old one, with a new instruction; runs it",
        description="Starts a new task branch at the commit of step STEP of TASK_ID (done nodes keep their results), "
        "adds the instruction, and runs the planner from there. The old branch is not touched.",
    )
    f.add_argument("task_id", metavar="TASK_ID", help="the task to fork")
    f.add_argument(
        "--at", type=step_number, required=True, metavar="STEP", help="the step number (Agent-Step trailer) to fork at"
    )
    f.add_argument("instruction", nargs="?", help="a new instruction for the fork")
    f.add_argument("--repo", type=Path, default=Path("."), help="the repository (default: the current directory)")
    f.add_argument("--task-id", dest="new_task_id", help="the new task's id (default: <task-id>-fork<step>)")
    f.add_argument("--model", help="model spec for planner and executor (default: the old task's models)")
    f.add_argument("--workers", type=positive_int, metavar="N", help="executor steps at once (default from config)")
    f.add_argument("--no-run", action="store_true", help="only create the fork's branch; run it later with `run --resume`")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the answer")
    f.__class__ = _IntermixedParser  # `fork ID --at 4 "instruction"`: options between the positionals


class _IntermixedParser(argparse.ArgumentParser):
    """A subparser whose optional positional may come after options (plain argparse would give
    `fork ID --at 4 "text"` an empty instruction and reject "text")."""

    _intermixed = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._intermixed:
            return super().parse_known_args(args, namespace)
        self._intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixed = False


def _git(args):
    from gitops_agent.app.local import find_repo
    from gitops_agent.git.repo import GitRepo

    return GitRepo(find_repo(args.repo))


def cmd_memory(args: argparse.Namespace) -> int:
    from gitops_agent.core.errors import ConfigError
    from gitops_agent.memory.experience import MEMORY_BRANCH
    from gitops_agent.memory.store import MemoryStore

    action = getattr(args, "memory_command", None)
    if action is None:
        raise ConfigError("memory needs an action: search, show, list, add-data or reindex (see `gitops-agent memory --help`)")
    if action == "add-data":  # the one action that works on a repository with no memory yet
        return _memory_add_data(MemoryStore.open(_git(args)), args)
    store = MemoryStore.open_read(_git(args))  # a fresh clone: the remote's memory, as last fetched
    if store.tip() is None:
        raise ConfigError(
            f"this repository has no memory yet ({MEMORY_BRANCH}); it is made when a task finishes, or by `memory add-data`"
        )
    if store.git.remote is not None:
        print(f"(the memory of {store.git.remote}, as last fetched: {store.git.remote}/{MEMORY_BRANCH})", file=sys.stderr)
    run = _MEMORY_ACTIONS.get(action)
    if run is None:
        raise ConfigError(f"unknown memory action {action!r}")  # pragma: no cover
    return run(store, args)


def _memory_add_data(store: MemoryStore, args: argparse.Namespace) -> int:
    from gitops_agent.memory.experience import MEMORY_BRANCH

    sha, paths = store.add_data(args.path, args.name)
    print(f"committed {len(paths)} file(s) on {MEMORY_BRANCH} ({sha[:12]}):")
    for p in paths[:50]:
        print(f"  {p}")
    if len(paths) > 50:
        print(f"  … and {len(paths) - 50} more")
    print("the model's code sees them read-only under the data_dir shown in its prompt")
    return EXIT_OK


def _memory_search(store: MemoryStore, args: argparse.Namespace) -> int:
    from gitops_agent.core.errors import ConfigError

    if args.k < 1:
        raise ConfigError("-k must be at least 1")
    hits = store.search(args.text, args.k, args.method)
    if args.json:
        for h in hits:
            print(
                json.dumps(
                    {
                        "task_id": h.experience.task_id,
                        "score": round(h.score, 4),
                        "rank": h.rank,
                        "experience": h.experience.model_dump(mode="json", by_alias=True),
                    },
                    ensure_ascii=False,
                )
            )
        return EXIT_OK
    if not hits:
        print("no similar experience")
    for h in hits:
        e = h.experience
        print(f"{h.rank}. {e.task_id}  score {h.score:.3f}  {e.outcome}  {e.date:%Y-%m-%d}")
        print(f"   {e.question.splitlines()[0][:120]}")
        if e.summary:
            print(f"   answer: {e.summary[:160]}")
        for lesson in e.lessons[:3]:
            print(f"   lesson: {lesson[:160]}")
    return EXIT_OK


def _memory_show(store: MemoryStore, args: argparse.Namespace) -> int:
    from gitops_agent.core.errors import ConfigError
    from gitops_agent.memory.experience import MEMORY_BRANCH

    e = store.get(args.task_id)
    if e is None:
        raise ConfigError(f"no experience for task {args.task_id!r} on {MEMORY_BRANCH} (see `gitops-agent memory list`)")
    if args.json:
        print(e.model_dump_json(by_alias=True, indent=2))
        return EXIT_OK
    print(f"# {e.task_id} ({e.outcome})\n")
    print(f"question: {e.question}")
    for i in e.instructions:
        print(f"instruction: {i}")
    print(f"branch:   {e.branch}\ndate:     {e.date:%Y-%m-%d %H:%M}Z\ncost:     ${e.cost_usd:.4f}, {e.tokens} tokens")
    if e.parent:
        print(f"forked from: {e.parent}")
    if e.reused:
        print(f"reused:   {', '.join(e.reused)}")
    print("\nplan:")
    for o in e.outline:
        print(f"  {'  ' * o.depth}- [{o.status}] {o.id} {o.title}")
    if e.lessons:
        print("\nlessons:")
        for x in e.lessons:
            print(f"  - {x}")
    if e.failures:
        print("\nproblems:")
        for x in e.failures:
            print(f"  - {x}")
    print(f"\nsummary: {e.summary}\n\n{e.answer}")
    return EXIT_OK


def _memory_list(store: MemoryStore, args: argparse.Namespace) -> int:
    from gitops_agent.memory.experience import MEMORY_BRANCH

    exps = sorted(store.experiences(), key=lambda e: e.date, reverse=True)
    data = store.data_files()
    if args.json:
        print(
            json.dumps(
                {
                    "tip": store.tip(),
                    "experiences": [
                        {"task_id": e.task_id, "outcome": e.outcome, "date": e.date.isoformat(), "question": e.question[:200]}
                        for e in exps
                    ],
                    "data": data,
                    "problems": store.problems,
                },
                indent=2,
            )
        )
        return EXIT_OK
    print(f"{len(exps)} experience(s) on {MEMORY_BRANCH}")
    for e in exps:
        print(f"  {e.task_id:48} {e.outcome:7} {e.date:%Y-%m-%d}  {e.question.splitlines()[0][:60]}")
    print(f"{len(data)} data file(s)" + (":" if data else ""))
    for p in data[:100]:
        print(f"  {p}")
    for p in store.problems:
        print(f"problem: {p}", file=sys.stderr)
    return EXIT_OK


def _memory_reindex(store: MemoryStore, args: argparse.Namespace) -> int:
    idx = store.reindex(args.method)
    print(f"indexed {len(idx)} experience(s) at {idx.tip[:12] if idx.tip else '-'} with {idx.method} in {idx.build_ms} ms")
    for p in store.problems:
        print(f"skipped: {p}", file=sys.stderr)
    return EXIT_OK


# The actions that need the memory branch to exist (add-data makes it).
_MEMORY_ACTIONS = {"search": _memory_search, "show": _memory_show, "list": _memory_list, "reindex": _memory_reindex}


def cmd_brain(args: argparse.Namespace) -> int:
    from gitops_agent.brain.branch import BRAIN_BRANCH, brain_diff, brain_show, init_brain
    from gitops_agent.core.errors import ConfigError

    action = getattr(args, "brain_command", None)
    if action is None:
        raise ConfigError("brain needs an action: init, diff or show (see `gitops-agent brain --help`)")
    git = _git(args)
    if action == "init":
        sha = init_brain(git)
        print(f"created {BRAIN_BRANCH} at {sha[:12]} with the packaged defaults; edit it, then `gitops-agent brain diff`")
        return EXIT_OK
    if action == "diff":
        d = brain_diff(git)
        print(d if d else f"{BRAIN_BRANCH} is the same as the packaged defaults", end="" if d else "\n")
        return EXIT_OK
    if action == "show":
        print(brain_show(git), end="")
        return EXIT_OK
    raise ConfigError(f"unknown brain action {action!r}")  # pragma: no cover


def cmd_evolve(args: argparse.Namespace) -> int:
    from gitops_agent.app.local import check_model_env, find_repo
    from gitops_agent.evolve.propose import run_evolve
    from gitops_agent.git.repo import GitRepo
    from gitops_agent.models import make_model
    from gitops_agent.observe.progress import ConsoleReporter
    from gitops_agent.settings.config import CONFIG_PATH, load_config

    repo = find_repo(args.repo)
    spec = args.model or load_config(repo / CONFIG_PATH).models.planner
    check_model_env(spec)
    git = GitRepo(repo)
    cfg = load_config(repo / CONFIG_PATH)
    if args.suite:
        cfg.evolve.suite = args.suite
    if args.eval_model:
        cfg.evolve.model = args.eval_model
    eval_spec = cfg.evolve.model or cfg.models.executor
    if not args.no_eval and cfg.evolve.suite and eval_spec != "scripted":
        from gitops_agent.core.errors import ConfigError
        from gitops_agent.memory.store import MemoryStore

        if MemoryStore.open(git).tip() is not None:  # (with no memory, run_evolve says so first)
            try:
                check_model_env(eval_spec)  # before a proposal is made that then cannot be measured
            except ConfigError as e:
                raise ConfigError(
                    f"evolve measures its proposal on the suite {cfg.evolve.suite}: {e}; "
                    "or choose its model with --eval-model SPEC, or skip it with --no-eval"
                ) from None
    p = run_evolve(git, make_model(spec), last=args.last, reporter=ConsoleReporter(), max_usd=cfg.evolve.max_usd)
    if not args.no_eval:
        from gitops_agent.eval.store import commit_run
        from gitops_agent.evolve.gate import compare_brains

        print(f"measuring: suite {cfg.evolve.suite} on agent/brain @ {p.base[:12]} and on the proposal …", file=sys.stderr)
        p.gate = compare_brains(git, p.base, p.commit, cfg, repo=repo, workers=args.workers)
        if p.gate is not None:
            commit_run(git, p.gate.run, p.gate.table + f"\nProposal {p.branch}: {p.gate.verdict} ({p.gate.why}).\n")
    print(f"proposal: {p.branch}  (based on agent/brain @ {p.base[:12]}, commit {p.commit[:12]})")
    print(f"title:    {p.title}")
    print(f"files:    {', '.join(sorted(p.changes))}")
    print(f"from:     {', '.join(p.experiences)}")
    print(f"\n{p.rationale}\n")
    if p.gate is not None:
        print(f"measured: {p.gate.verdict.upper()}: {p.gate.why}\n\n{p.gate.table}")
        if p.gate.blocks:
            print(f"this proposal is marked {p.gate.verdict}: adopt it only if you know better than the suite\n")
    print(f"review: git -C {repo} diff agent/brain {p.branch}")
    print(f"adopt:  git -C {repo} branch -f agent/brain {p.branch}   (or merge it by pull request)")
    return EXIT_OK


def cmd_fork(args: argparse.Namespace) -> int:
    from gitops_agent.app.fork import fork_task, run_fork
    from gitops_agent.app.local import check_model_env, find_repo, make_runtime
    from gitops_agent.cli.output import print_result as _print_result
    from gitops_agent.cli.output import reporter as _reporter
    from gitops_agent.core.state import TaskModels

    repo = find_repo(args.repo)
    rt = make_runtime(repo, reporter=_reporter(args))
    models = None
    if args.model:
        check_model_env(args.model)
        rt.model(args.model)  # a bad spec fails here, before any branch is made
        models = TaskModels(planner=args.model, executor=args.model)
    if args.no_run:
        task = fork_task(rt, args.task_id, args.at, args.instruction, args.new_task_id, models)
        print(f"forked {args.task_id} at step {args.at} as {task.task_id} (branch agent/task/{task.task_id})")
        print(f"run it: gitops-agent run --repo {repo} --resume {task.task_id}")
        return EXIT_OK
    res = run_fork(rt, args.task_id, args.at, args.instruction, new_task_id=args.new_task_id, models=models, workers=args.workers)
    return _print_result(res, repo)


COMMANDS = {"memory": cmd_memory, "brain": cmd_brain, "evolve": cmd_evolve, "fork": cmd_fork}
