#!/usr/bin/env python
"""P11 what a quiet repository pays, and what recovering a stalled task costs: runner minutes
per idle day and per stalled-task recovery, before (reconcile every 20 minutes, a job of its own)
and after (every job looks at its end; the schedule every 6 hours is the safety net).

    python bench/idle.py [--before 2155fb7] [--tasks 40] [--setup-cold S]

Jobs run as runners run them: their own process (`python -m gitops_agent step auto`, the
GitHub Actions environment and event file), a fake GitHub, a bare remote over file:// holding
``--tasks`` finished task branches and one task whose execute job was lost. The "before" jobs
run the code at ``--before`` (a git worktree of that commit). GitHub-hosted runners bill every
job by the started minute: minutes = jobs × ceil((setup + the job's wall time) / 60); ``setup``
is the action's cold setup (bench/setup_time.py, P8). Jobs per day come from each caller's cron
(examples/caller.yml at that commit, and what ``gitops-agent init`` writes now).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Row, Section, git, print_section  # noqa: E402

BEFORE = "2155fb7"  # the last commit before reconcile moved into every job (issue 23)
TOKEN = "ghs_benchidle0123456789"
KEY = "sk-ant-bench-idle-0123456789"
LEASE_S = 3  # github.lease_minutes of the bench's repository (0.05): jobs are seconds apart, not minutes


def caller_cron(text: str) -> str:
    import yaml

    on = yaml.safe_load(text).get("on") or yaml.safe_load(text).get(True)
    return on["schedule"][0]["cron"]


class World:
    """A bare remote with finished task branches and one stalled task, a fake GitHub, a model server."""

    def __init__(self, work: Path, finished: int) -> None:
        self.work = work
        src = work / "src"
        (src / ".github").mkdir(parents=True)
        (src / ".github" / "gitops-agent.yml").write_text(
            "github: {inline_steps: false, lease_minutes: 0.05}\nsandbox: {backend: subprocess, require_isolation: false}\n"
        )
        (src / "README.md").write_text("# bench\n")
        git(src, "init", "-q", "-b", "main")
        git(src, "add", "-A")
        git(src, "commit", "-q", "-m", "one commit")
        self.bare = work / "remote.git"
        git(work, "clone", "-q", "--bare", str(src), str(self.bare))
        tree = git(self.bare, "rev-parse", "main^{tree}").strip()
        main = git(self.bare, "rev-parse", "main").strip()
        for i in range(finished):  # a finished task's tip: the finish commit
            sha = git(
                self.bare, "commit-tree", tree, "-p", main, "-m", f"agent(finish): done\n\nAgent-Task: t{i}\nAgent-Role: finish"
            ).strip()
            git(self.bare, "update-ref", f"refs/heads/agent/task/t{i:03d}-done", sha)
        self.n = 0

    def job(self, gh_url: str, llm_url: str, name: str, event: dict, pythonpath: Path) -> float:
        self.n += 1
        d = self.work / f"job-{self.n}"
        d.mkdir()
        (d / "event.json").write_text(json.dumps(event))
        env = {
            **{x: v for x, v in os.environ.items() if not x.startswith(("GITHUB_", "ANTHROPIC", "OPENAI", "GITOPS_AGENT"))},
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_API_URL": gh_url,
            "GITHUB_SERVER_URL": "https://github.example",
            "GITOPS_AGENT_GITHUB_TOKEN": TOKEN,
            "GITOPS_AGENT_GIT_URL": f"file://{self.bare}",
            "GITHUB_EVENT_NAME": name,
            "GITHUB_EVENT_PATH": str(d / "event.json"),
            "RUNNER_TEMP": str(d),
            "GITHUB_RUN_ID": str(500 + self.n),
            "GITOPS_AGENT_GITHUB_THROTTLE": "0",
            "ANTHROPIC_BASE_URL": llm_url,
            "ANTHROPIC_API_KEY": KEY,
            "PYTHONSAFEPATH": "1",
            "PYTHONPATH": str(pythonpath),
        }
        mod = "gitops_agent" if (pythonpath / "gitops_agent").is_dir() else "agent"
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", mod, "step", "auto"], cwd=pythonpath, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{name} job failed: {p.stdout[-1000:]} {p.stderr[-2000:]}")
        return wall


def scenario(code: Path, finished: int) -> dict:
    """Wall seconds of: a scheduled reconcile on an idle repository; an intake job; and the
    re-send of a stalled task's step (by the scheduled job, and by an intake job's end)."""
    from tests.fakes.anthropic_server import FakeAnthropic
    from tests.fakes.github_server import FakeGitHub
    from tests.helpers import make_sales_responder

    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    w = World(work, finished)
    out: dict = {}
    with FakeGitHub(token=TOKEN) as gh, FakeAnthropic(api_key=KEY, responder=make_sales_responder(), min_cache_tokens=0) as llm:
        gh.add_repo("o/r", default_branch="main", git_dir=w.bare)
        gh.set_permission("o/r", "alice", "write")

        def issue(title: str) -> dict:
            n = gh.add_issue("o/r", title, "Use data please.", user="alice", labels=["agent"])
            return {
                "action": "opened",
                "sender": {"login": "alice", "type": "User"},
                "repository": {"full_name": "o/r"},
                "issue": {"number": n, "title": title, "body": "x", "labels": [{"name": "agent"}], "user": {"login": "alice"}},
            }

        out["idle_reconcile"] = w.job(gh.url, llm.url, "schedule", {"schedule": "*/20 * * * *"}, code)
        # a stalled task: intake, then its plan job whose execute dispatch is lost
        w.job(gh.url, llm.url, "issues", issue("Who is our top customer?"), code)
        d = gh.dispatches[-1]
        w.job(gh.url, llm.url, "repository_dispatch", {"action": d["event_type"], "client_payload": d["client_payload"]}, code)
        time.sleep(LEASE_S + 0.5)
        n = len(gh.dispatches)
        out["recover_by_schedule"] = w.job(gh.url, llm.url, "schedule", {"schedule": "*/20 * * * *"}, code)
        out["resent_by_schedule"] = len(gh.dispatches) - n
        # the next stall is noticed by whatever job runs next: a new issue's intake
        time.sleep(LEASE_S + 0.5)
        n = len(gh.dispatches)
        out["intake_with_look"] = w.job(gh.url, llm.url, "issues", issue("Another question"), code)
        out["resent_by_intake"] = sum(1 for x in gh.dispatches[n:] if x["event_type"] == "agent-execute")
    return out


def worktree(ref: str) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="bench-idle-before-")) / "src"
    git(ROOT, "worktree", "add", "--detach", "-f", str(dest), ref)
    return dest


def measure(quick: bool = False, before: str = BEFORE, finished: int | None = None, setup_cold: float = 5.1) -> Section:
    from gitops_agent.app.costs import idle_day_minutes
    from gitops_agent.app.setup_repo import caller_workflow

    t0 = time.perf_counter()
    finished = finished if finished is not None else (10 if quick else 40)
    old_tree = worktree(before)
    try:
        old = scenario(old_tree, finished)
        old_cron = caller_cron((old_tree / "examples" / "caller.yml").read_text())
    finally:
        git(ROOT, "worktree", "remove", "--force", str(old_tree))
    new = scenario(ROOT, finished)
    new_cron = caller_cron(caller_workflow("0" * 40, None))

    def billed(wall: float) -> int:
        return math.ceil((setup_cold + wall) / 60)

    old_jobs, new_jobs = idle_day_minutes(old_cron), idle_day_minutes(new_cron)
    old_min, new_min = old_jobs * billed(old["idle_reconcile"]), new_jobs * billed(new["idle_reconcile"])
    sec = Section()
    note = (
        f"cron {old_cron!r} before, {new_cron!r} now; {finished} finished tasks on the remote; "
        "hosted runners bill each job by the started minute"
    )
    sec.rows.append(
        Row(
            "P11 runner minutes per idle day (GitHub-hosted)",
            f"{new_min} min ({new_jobs} jobs)",
            f"{old_min} min ({old_jobs} jobs)",
            f"{new_min / old_min:.3f}",
            "close to none",
            new_min <= 5,
            note=note,
        )
    )
    sec.rows.append(
        Row(
            "P11 stalled-task recovery: jobs and billed minutes spent finding and re-sending the step",
            f"0 jobs of its own: the next intake re-sent it ({new['resent_by_intake']} step); "
            f"the look and re-send take {new['recover_by_schedule']:.1f} s of a job",
            f"1 job, {billed(old['recover_by_schedule'])} billed min ({old['recover_by_schedule']:.1f} s)",
            "—",
            "no job of its own",
            new["resent_by_intake"] >= 1,
            note="when no other job runs, the 6-hourly scheduled job does it: 1 job, "
            f"{billed(new['recover_by_schedule'])} billed min; the re-sent step itself is the same job before and after",
        )
    )
    sec.rows.append(
        Row(
            "P11 a scheduled reconcile job on an idle repository, wall time",
            f"{new['idle_reconcile']:.1f} s",
            f"{old['idle_reconcile']:.1f} s",
            f"{new['idle_reconcile'] / old['idle_reconcile']:.2f}",
            "—",
            None,
            note=f"{finished} finished task branches: one fetch of every tip now, one fetch per task before",
        )
    )
    sec.details = [
        "",
        f"**P11 idle** (`python bench/idle.py`): before {before}: {json.dumps({k: round(v, 2) for k, v in old.items()})}; "
        f"now: {json.dumps({k: round(v, 2) for k, v in new.items()})}. Recovery latency: before, the lease plus up to 20 "
        "minutes; now, the lease plus the time to the repository's next job of any kind, at most 6 hours when none runs. "
        f"Setup per job {setup_cold:.1f} s (P8, cold).",
    ]
    sec.seconds = time.perf_counter() - t0
    return sec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 finished tasks instead of 40")
    ap.add_argument("--before", default=BEFORE, help=f"the commit to compare with (default {BEFORE})")
    ap.add_argument("--tasks", type=int, help="finished task branches on the remote")
    ap.add_argument("--setup-cold", type=float, default=5.1, help="seconds of setup per hosted job (P8; default 5.1)")
    a = ap.parse_args()
    return print_section(measure(a.quick, a.before, a.tasks, a.setup_cold))


if __name__ == "__main__":
    sys.exit(main())
