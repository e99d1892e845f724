#!/usr/bin/env python
"""P2 cold step: one execute step run the way a fresh CI runner runs it, on a repository with
a long, heavy history against the same step on a one-commit repository.

    python bench/cold_step.py [--commits 5000] [--mb 220] [--repeat 5]

The two remotes (bare repositories, reached over file://, so git speaks its wire protocol as
with a real server) are generated once with ``git fast-import`` and kept in
``bench/.cache/cold-step-<commits>c-<mb>mb/`` (reused by later runs; delete it to rebuild):

- heavy: ``main`` with ``commits`` commits, each rewriting one of 200 files with random
  (incompressible) bytes, ``mb`` MB of blobs in all; ``agent/memory`` with a history of one
  commit per experience file (plus a small shared data set);
- light: ``main`` with ONE commit holding exactly the heavy tip's tree, and ``agent/memory``
  with one commit holding the heavy memory tip's tree.

So both steps check out the same files and see the same memory: the only difference is the
history behind them, which is what a shallow, single-branch clone is meant to make free.

Each run works on hard-linked copies of the cached remotes. A task is made ready on each copy
(intake, then a plan step that dispatches node n1), and the branch's tip is noted. Then each
repetition resets the task branch to that tip and runs the step cold, with the product's own
code path: ``gitops_agent.github.steps.StepRunner.step`` (what ``gitops-agent step execute`` runs on a
runner): a new shallow single-branch clone of the task branch in an empty directory
(``GitRepo.clone``, depth 1), a new runtime (config, brain), the execute step with a scripted
model (one ``run_python`` turn in the sandbox, then ``finish_step``), which fetches the memory
branch (blobless, shallow) and its shared data for the sandbox, commits and pushes; the next
step is handed to a stand-in for the GitHub API. Heavy and light repetitions alternate. Nothing
is kept between repetitions (new directories), except what the OS caches.

Target: median(heavy) ≤ 1.5 × median(light).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, Row, Section, fmt_s, git  # noqa: E402
from gitops_agent.app.local import make_runtime  # noqa: E402
from gitops_agent.core.state import Budget, TaskModels  # noqa: E402
from gitops_agent.git.repo import GitRepo  # noqa: E402
from gitops_agent.github.steps import Settings, StepRunner  # noqa: E402
from gitops_agent.observe.progress import RecordingReporter  # noqa: E402
from gitops_agent.steps.engine import Engine  # noqa: E402

TARGET = 1.5
SLOTS = 200
TASK_ID = "bench-cold-step"
TS0 = 1_700_000_000

SCRIPT = """\
planner:
  - tool: update_plan
    input:
      note: one node
      nodes: [{id: n1, title: Count the data files, goal: Count the files under data/ and say how many there are.}]
executor:n1:
  - text: I will count them.
    tool: run_python
    input: {code: "import os; print(len(os.listdir('data')))"}
  - tool: finish_step
    input: {status: done, result: "There are {{ last_output }} files."}
"""


# ----------------------------------------------------------------------------- the remotes


def _experience(i: int) -> bytes:
    return (
        json.dumps(
            {
                "schema": 1,
                "task_id": f"old-{i:05d}",
                "question": f"Past question number {i} about orders and regions",
                "outcome": "done",
                "summary": f"answered question {i}",
                "lessons": ["check the data first"],
                "plan": [{"id": "n1", "title": "Load", "status": "done"}],
                "answer": "x" * 600,
                "cost_usd": 0.01,
            },
            indent=2,
        )
        + "\n"
    ).encode()


class _Stream:
    def __init__(self, bare: Path) -> None:
        self.p = subprocess.Popen(
            ["git", "-C", str(bare), "fast-import", "--quiet", "--done"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert self.p.stdin is not None
        self.w = self.p.stdin
        self.n = 0

    def commit(self, ref: str, msg: str, files: dict[str, bytes]) -> None:
        """A commit on ``ref``: the ref's first commit in this stream is a root commit, the next
        ones follow it (fast-import's default parent is the branch's current tip)."""
        self.n += 1
        m = msg.encode()
        self.w.write(
            f"commit {ref}\ncommitter bench <bench@localhost> {TS0 + self.n} +0000\ndata {len(m)}\n".encode() + m + b"\n"
        )
        for path, data in files.items():
            self.w.write(f"M 100644 inline {path}\ndata {len(data)}\n".encode() + data + b"\n")
        self.w.write(b"\n")

    def close(self) -> None:
        self.w.write(b"done\n")
        self.w.close()
        err = self.p.stderr.read() if self.p.stderr else b""
        if self.p.wait() != 0:
            raise RuntimeError(f"git fast-import failed: {err.decode(errors='replace')[:500]}")


def build_remotes(commits: int, mb: int, mem_commits: int, cache_dir: Path = CACHE_DIR) -> tuple[Path, Path, dict]:
    """The cached heavy and light bare repositories (made once)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not (cache_dir / ".gitignore").exists():
        (cache_dir / ".gitignore").write_text("*\n")  # never committed, whatever the top-level .gitignore says
    d = cache_dir / f"cold-step-{commits}c-{mb}mb"
    done = d / "done.json"
    if done.exists():
        return d / "heavy.git", d / "light.git", {**json.loads(done.read_text()), "reused": True}
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    heavy, light = d / "heavy.git", d / "light.git"
    for b in (heavy, light):
        git(d, "init", "-q", "--bare", "-b", "main", str(b))
        git(b, "config", "gc.auto", "0")
    blob = max(1, mb * 1_000_000 // commits)
    tip: dict[str, bytes] = {"README.md": b"# heavy bench repository\n"}
    s = _Stream(heavy)
    s.commit("refs/heads/main", "initial", dict(tip))
    for i in range(1, commits):
        path = f"data/part-{i % SLOTS:03d}.bin"
        data = os.urandom(blob)
        tip[path] = data
        s.commit("refs/heads/main", f"update {path} ({i})", {path: data})
    mem: dict[str, bytes] = {
        "data/shared/regions.csv": b"region,manager\n" + b"".join(f"R{i},M{i}\n".encode() for i in range(2000))
    }
    s.commit("refs/heads/agent/memory", "memory: add data shared", dict(mem))
    for i in range(1, mem_commits):
        path = f"experiences/old-{i:05d}.json"
        mem[path] = _experience(i)
        s.commit("refs/heads/agent/memory", f"memory: old-{i:05d} (done)", {path: mem[path]})
    s.close()
    s = _Stream(light)
    s.commit("refs/heads/main", "the same tree, one commit", tip)
    s.commit("refs/heads/agent/memory", "memory, one commit", mem)
    s.close()
    # the same trees, checked
    for ref in ("main", "agent/memory"):
        a, b = git(heavy, "rev-parse", f"{ref}^{{tree}}").strip(), git(light, "rev-parse", f"{ref}^{{tree}}").strip()
        if a != b:
            raise RuntimeError(f"heavy and light {ref} trees differ")
    info = {
        "commits": int(git(heavy, "rev-list", "--count", "main").strip()),
        "mem_commits": int(git(heavy, "rev-list", "--count", "agent/memory").strip()),
        "pack_mb": _pack_mb(heavy),
        "light_pack_mb": _pack_mb(light),
        "tip_mb": sum(len(v) for v in tip.values()) / 1e6,
        "build_s": time.perf_counter() - t0,
    }
    done.write_text(json.dumps(info))
    return heavy, light, info


def _pack_mb(bare: Path) -> float:
    out = git(bare, "count-objects", "-v")
    kb = sum(int(line.split()[1]) for line in out.splitlines() if line.startswith(("size-pack:", "size:")))
    return kb / 1024


def linked_copy(src: Path, dest: Path) -> Path:
    """A copy of a bare repository whose object files are hard links (cheap; pushes land in the
    copy only). Falls back to a real copy across file systems."""
    try:
        subprocess.run(["cp", "-al", str(src), str(dest)], check=True, capture_output=True)
    except (subprocess.CalledProcessError, FileNotFoundError):
        shutil.copytree(src, dest)
    return dest


# ----------------------------------------------------------------------------- the step


class _Client:
    """Stands in for the GitHub API: records dispatches; nothing else is called for a task
    without an issue."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def dispatch(self, event_type: str, payload: dict) -> None:
        self.sent.append((event_type, payload))


class TimedRunner(StepRunner):
    clone_s = 0.0

    def config(self, git, commit):  # type: ignore[no-untyped-def]
        cfg = super().config(git, commit)
        cfg.github.inline_steps = False  # one step is what is measured, not the chain after it
        return cfg

    def clone(self, branch):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return super().clone(branch)
        finally:
            self.clone_s = time.perf_counter() - t0


def prepare(remote: Path, work: Path, spec: str):  # type: ignore[no-untyped-def]
    """Intake + first plan on ``remote``: the execute job for n1, and the branch tip to reset to."""
    clone = GitRepo.clone(f"file://{remote}", work / "setup", branch="main")
    rt = make_runtime(clone.repo, remote="origin")
    engine = Engine(rt)
    base = git(remote, "rev-parse", "main").strip()
    job = engine.start(
        "How many data files are there?",
        base_ref="main",
        base_sha=base,
        models=TaskModels(planner=spec, executor=spec),
        budget=Budget(max_steps=20, max_usd=10),
        task_id=TASK_ID,
    )
    nxt = engine.handle(job)
    if engine.failures or len(nxt) != 1 or nxt[0].step != "execute":
        raise RuntimeError(f"setup failed: {engine.failures or nxt}")
    shutil.rmtree(work / "setup", ignore_errors=True)
    return nxt[0], git(remote, "rev-parse", f"refs/heads/{nxt[0].branch}").strip()


def cold_step(remote: Path, job, tip: str, work: Path) -> dict:  # type: ignore[no-untyped-def]
    git(remote, "update-ref", f"refs/heads/{job.branch}", tip)
    rdir = Path(tempfile.mkdtemp(prefix="runner-", dir=work))
    settings = Settings(repo="bench/cold-step", git_url=f"file://{remote}", workdir=rdir)
    client = _Client()
    reporter = RecordingReporter()
    runner = TimedRunner(settings, client, reporter=reporter)
    t0 = time.perf_counter()
    try:
        rc = runner.step(job)
        wall = time.perf_counter() - t0
        # the memory branch was fetched (blobless cache) and its shared data materialized for the sandbox
        cache = runner._tmp / "repo" / ".git" / "gitops-agent"
        memory_ok = (cache / "memory.git").is_dir() and any((cache / "memory-data").glob("*/.complete"))
    finally:
        runner.close()
        shutil.rmtree(rdir, ignore_errors=True)
    head = git(
        remote,
        "log",
        "-1",
        "--format=%(trailers:key=Agent-Role,valueonly)%(trailers:key=Agent-Node,valueonly)",
        f"refs/heads/{job.branch}",
    )
    errors = [f.get("error") for k, f in reporter.events if k == "error"]
    ok = rc == 0 and "executor" in head and [e for e, _ in client.sent] == ["agent-plan"] and memory_ok and not errors
    return {
        "wall": wall,
        "clone": runner.clone_s,
        "ok": ok,
        "why": f"rc={rc} head={head.strip()!r} memory={memory_ok} errors={errors}",
    }


def measure(
    quick: bool = False, commits: int | None = None, mb: int | None = None, repeat: int | None = None, cache_dir: Path = CACHE_DIR
) -> Section:
    t_all = time.perf_counter()
    commits = commits or (1000 if quick else 5000)
    mb = mb or (50 if quick else 220)
    repeat = repeat or (3 if quick else 5)
    heavy_src, light_src, info = build_remotes(commits, mb, mem_commits=max(50, commits // 10), cache_dir=cache_dir)
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    try:
        (work / "script.yaml").write_text(SCRIPT)
        spec = f"scripted:{work / 'script.yaml'}"
        heavy = linked_copy(heavy_src, work / "heavy.git")
        light = linked_copy(light_src, work / "light.git")
        hjob, htip = prepare(heavy, work, spec)
        ljob, ltip = prepare(light, work, spec)
        cold_step(light, ljob, ltip, work)  # warm-up (discarded): imports, templates, the sandbox probe
        runs: dict[str, list[dict]] = {"heavy": [], "light": []}
        for _ in range(repeat):
            runs["heavy"].append(cold_step(heavy, hjob, htip, work))
            runs["light"].append(cold_step(light, ljob, ltip, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r["wall"] for r in v) for k, v in runs.items()}
    clone = {k: statistics.median(r["clone"] for r in v) for k, v in runs.items()}
    ok = all(r["ok"] for v in runs.values() for r in v)
    ratio = med["heavy"] / med["light"]
    size = f"{info['commits']:,} commits, {info['pack_mb']:.0f} MB packed"
    mem_commits = info.get("mem_commits", "?")
    small = commits < 5000 or info["pack_mb"] < 200  # MiB: the full run's 220 MB of blobs pack to ~210 MiB
    row = Row(
        f"P2 cold step (fresh shallow clone + memory fetch + execute + push): heavy history ({size}) vs one-commit repo",
        fmt_s(med["heavy"]),
        fmt_s(med["light"]),
        f"{ratio:.2f}",
        f"≤ {TARGET:g}",
        ok and ratio <= TARGET,
        ("--quick: a smaller heavy repository than the full run's 5,000 commits / 200 MB" if small else "")
        + ("" if ok else "; a step did not finish cleanly — see details"),
    )
    bad = [r["why"] for v in runs.values() for r in v if not r["ok"]]
    details = [
        f"- P2: heavy remote {size} (tip tree {info['tip_mb']:.1f} MB in both; memory branch with {mem_commits} commits vs 1); "
        f"median of {repeat} cold steps each: heavy {med['heavy']:.2f} s (clone {clone['heavy']:.2f} s), "
        f"light {med['light']:.2f} s (clone {clone['light']:.2f} s); all walls heavy "
        f"{_walls(runs['heavy'])}, light {_walls(runs['light'])}."
        + (" Remotes reused from bench/.cache/" if info.get("reused") else " Remotes generated with git fast-import")
        + f" (generation took {info['build_s']:.0f} s)."
    ]
    if bad:
        details.append(f"  - P2 problems: {'; '.join(bad[:3])}")
    return Section([row], details, time.perf_counter() - t_all)


def _walls(runs: list[dict]) -> str:
    return ", ".join(f"{r['wall']:.2f}" for r in runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=5000)
    ap.add_argument("--mb", type=int, default=220)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args(argv)
    from bench.common import table

    s = measure(commits=a.commits, mb=a.mb, repeat=a.repeat)
    print(table(s.rows))
    print("\n".join(s.details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
