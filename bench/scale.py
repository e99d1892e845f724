#!/usr/bin/env python
"""Scale: many tasks started at once on one remote, 4 workers.

    python bench/scale.py [--tasks 50] [--workers 4] [--leaves 2]

One bare repository (the remote, over file://) and ``workers`` runners, each with its own
shallow clone of it and its own runtime in remote mode (every step fetches its task branch
and pushes its commit, as jobs on separate CI runners do). All tasks are created first (intake:
one push each), then every task's first plan job goes into one queue (the engine's
``LocalDispatcher``: one planner per task at a time, executors in parallel) served by
``workers`` threads; a job runs on the runner of the thread that picks it up, so consecutive
steps of one task land on different clones and race each other on the remote. The model is
scripted with zero latency (plan ``leaves`` independent nodes, each finished at once), so what
is measured is the engine and git under contention.

Checked afterwards, on the remote itself:
- every task finished (its last commit is the finish step, outcome done);
- no commit lost: every commit a step reported (the sha ``commit_files`` returned) is on its
  task branch, and the branch holds exactly as many commits beyond the base as were reported;
- one experience per task on ``agent/memory`` (finish writes them; all of them race there).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ReactiveModel, Row, Section, git, make_bare_copy, make_one_file_repo  # noqa: E402
from gitops_agent.app.local import make_runtime, result_of  # noqa: E402
from gitops_agent.core.dispatch import LocalDispatcher  # noqa: E402
from gitops_agent.core.state import Budget, TaskModels, branch_for  # noqa: E402
from gitops_agent.git.repo import GitRepo  # noqa: E402
from gitops_agent.settings.config import AgentConfig  # noqa: E402
from gitops_agent.steps.engine import Engine  # noqa: E402

SPEC = "scripted:bench"


class RecordingGitRepo(GitRepo):
    """GitRepo that remembers every commit it reports as made: (branch, sha)."""

    log_lock = threading.Lock()
    made: list[tuple[str, str]] = []

    def commit_files(self, branch, changes, *a, **kw):  # type: ignore[no-untyped-def, override]
        sha = super().commit_files(branch, changes, *a, **kw)
        with self.log_lock:
            self.made.append((branch, sha))
        return sha


def measure(quick: bool = False, tasks: int = 50, workers: int = 4, leaves: int = 2) -> Section:
    t_all = time.perf_counter()
    RecordingGitRepo.made = []
    model = ReactiveModel(leaves)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        src = make_one_file_repo(work)
        bare = make_bare_copy(src, work / "origin.git")
        cfg = AgentConfig().model_copy(update={"workers": workers})
        runners = []
        for i in range(workers):
            clone = GitRepo.clone(f"file://{bare}", work / f"runner{i}", branch="main")
            rt = make_runtime(clone.repo, config=cfg, remote="origin", models={SPEC: model})
            rt.git = RecordingGitRepo(clone.repo, remote="origin")
            rt.get_sandbox()
            runners.append(rt)
        base_sha = git(bare, "rev-parse", "main").strip()
        engines = [Engine(rt) for rt in runners]
        budget = Budget(max_steps=100, max_hops=100, max_usd=1000, max_tokens=10**10, max_wall_seconds=86400)

        t0 = time.perf_counter()
        jobs = []
        for i in range(tasks):
            jobs.append(
                engines[0].start(
                    f"Scale benchmark task {i}",
                    base_ref="main",
                    base_sha=base_sha,
                    models=TaskModels(planner=SPEC, executor=SPEC),
                    budget=budget,
                    task_id=f"bench-scale-{i:03d}",
                )
            )
        t_intake = time.perf_counter() - t0

        slot = threading.local()
        next_slot = iter(range(10**6))
        slot_lock = threading.Lock()

        def handle(job):  # type: ignore[no-untyped-def]
            if not hasattr(slot, "i"):
                with slot_lock:
                    slot.i = next(next_slot) % workers
            return engines[slot.i].handle(job)

        d = LocalDispatcher(handle, workers=workers)
        for j in jobs:
            d.dispatch(j)
        d.run()
        wall = time.perf_counter() - t0

        # ---- what each task reported vs what the remote holds
        outcomes: dict[str, int] = defaultdict(int)
        unfinished = []
        for j in jobs:
            res = result_of(runners[0], j.task)
            outcomes[res.outcome] += 1
            if res.outcome != "done":
                unfinished.append(f"{j.task}: {res.outcome} ({res.reason})")
        reported: dict[str, list[str]] = defaultdict(list)
        for branch, sha in RecordingGitRepo.made:
            reported[branch].append(sha)
        lost, extra, total_reported = [], [], 0
        for j in jobs:
            branch = branch_for(j.task)
            on_remote = git(bare, "rev-list", f"{base_sha}..refs/heads/{branch}").split()
            mine = reported.get(branch, [])
            total_reported += len(mine)
            missing = set(mine) - set(on_remote)
            if missing:
                lost.append(f"{j.task}: {len(missing)} reported commit(s) not on the branch")
            if len(on_remote) != len(mine):
                extra.append(f"{j.task}: {len(on_remote)} commits on the remote, {len(mine)} reported")
        mem = (
            git(bare, "ls-tree", "--name-only", "refs/heads/agent/memory", "experiences/").split()
            if git(bare, "branch", "--list", "agent/memory").strip()
            else []
        )
        experiences = sum(1 for m in mem if m.endswith(".json"))
        steps_handled = len(d.handled)
        failures = sum(len(e.failures) for e in engines) + len(d.errors)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    done = outcomes.get("done", 0)
    per_min = tasks / wall * 60
    rows = [
        Row(
            f"Scale: {tasks} tasks at once on one remote, {workers} workers — tasks finished",
            f"{done}/{tasks} done",
            target="all finish",
            met=done == tasks,
            note="" if done == tasks else "; ".join(unfinished[:3]),
        ),
        Row(
            "Scale: commits lost (reported by a step but not on its task branch on the remote)",
            f"{len(lost)} of {total_reported} commits" + (f"; {len(extra)} branches with a count mismatch" if extra else ""),
            target="0 lost",
            met=not lost and not extra,
            note="; ".join((lost + extra)[:3]),
        ),
        Row(
            "Scale: experiences on agent/memory (one per finished task, all racing)",
            f"{experiences}/{tasks}",
            target=f"{tasks}",
            met=experiences == tasks,
        ),
        Row(
            "Scale: throughput (zero-latency model: engine + git only)",
            f"{per_min:.1f} tasks/min",
            note=f"{steps_handled} steps in {wall:.1f} s incl. intake ({t_intake:.1f} s)",
        ),
    ]
    details = [
        f"- Scale: {tasks} tasks × ({leaves} leaves) = {steps_handled} steps after intake, {workers} runners (own clones) "
        f"on one bare remote; wall {wall:.1f} s ({t_intake:.1f} s intake); outcomes {dict(outcomes)}; "
        f"engine failures {failures}; "
        f"{total_reported} commits reported by steps, all checked on the remote."
    ]
    return Section(rows, details, time.perf_counter() - t_all)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--leaves", type=int, default=2)
    a = ap.parse_args(argv)
    from bench.common import table

    s = measure(tasks=a.tasks, workers=a.workers, leaves=a.leaves)
    print(table(s.rows))
    print("\n".join(s.details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
