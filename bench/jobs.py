#!/usr/bin/env python
"""P7 jobs per task: how many GitHub Actions jobs a question takes, and their runner time, with
`github.inline_steps` off (one job per step: before) and on (after), for three plan shapes —
2 nodes in sequence, a 4-leaf fan-out, 10 nodes mixed — and the import time of each step.

    python bench/jobs.py [--quick] [--setup-cold S --setup-warm S]

Every job runs as a runner runs it: its own process, `python -X importtime -m gitops_agent step auto`,
with the GitHub Actions environment and event file, against a local fake of GitHub's REST API
(PyGithub talks to it), a bare Git remote over file://, and a local Messages API server (the
anthropic SDK talks to it) whose planner plans the shape and finishes once every node has a
result. Dispatched jobs are run one after another, as they are sent (on GitHub the fan-out's
jobs run side by side; their number is the same). Runner time = the jobs' own wall time, plus
each job's setup (the action's steps before the agent starts; bench/setup_time.py measures it
through act) — cold, as on GitHub-hosted runners, and warm, as on a persistent runner.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Row, Section, git, print_section  # noqa: E402

SHAPES: dict[str, list[dict]] = {
    "2-node sequential": [{"id": "n1", "deps": []}, {"id": "n2", "deps": ["n1"]}],
    "4-leaf fan-out": [{"id": f"q{i}", "deps": []} for i in range(1, 5)],
    "10-node mixed": [
        {"id": "n1", "deps": []},
        *({"id": f"n{i}", "deps": ["n1"]} for i in (2, 3, 4)),
        {"id": "n5", "deps": ["n2", "n3", "n4"]},
        {"id": "n6", "deps": ["n5"]},
        {"id": "n7", "deps": ["n5"]},
        {"id": "n8", "deps": ["n6"]},
        {"id": "n9", "deps": ["n7"]},
        {"id": "n10", "deps": ["n8", "n9"]},
    ],
}
TOKEN = "ghs_benchjobs0123456789"
KEY = "sk-ant-bench-jobs-0123456789"
HEAVY = ("anthropic", "openai", "numpy", "bm25s", "gitops_agent.memory.retrieval")


def responder(shape: list[dict]):
    from tests.fakes.agent_responder import AgentResponder, tool

    nodes = [
        {"id": n["id"], "title": f"Part {n['id']}", "goal": f"Work out part {n['id']}.", "depends_on": n["deps"]} for n in shape
    ]
    ids = [n["id"] for n in shape]

    def planner(body, text, n):
        done = set(re.findall(r"## ([A-Za-z0-9_-]+) \(done\)", text))
        if set(ids) <= done:
            return tool("finish", answer=f"All {len(ids)} parts done.", summary="bench")
        return tool("update_plan", nodes=nodes, note="the shape")

    def executor(body, text, n):
        return tool("finish_step", status="done", result="part ok")

    return AgentResponder({"planner": planner, **{f"executor:{i}": executor for i in ids}})


def parse_imports(stderr: str) -> tuple[float, set[str]]:
    """(total import seconds, top-level packages imported) from `-X importtime` output."""
    total_us, names = 0, set()
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            total_us += int(m.group(1))
            names.add(m.group(2).strip())
    return total_us / 1e6, names


def run_task(work: Path, shape_name: str, inline: bool) -> dict:
    from tests.fakes.anthropic_server import FakeAnthropic
    from tests.fakes.github_server import FakeGitHub

    shape = SHAPES[shape_name]
    d = Path(tempfile.mkdtemp(prefix="task-", dir=work))
    src = d / "src"
    (src / ".github").mkdir(parents=True)
    (src / ".github" / "gitops-agent.yml").write_text(
        f"github: {{inline_steps: {str(inline).lower()}, max_parallel: 8}}\n"
        "sandbox: {backend: subprocess, require_isolation: false}\n"
    )
    (src / "README.md").write_text("# bench\n")
    git(src, "init", "-q", "-b", "main")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "one commit")
    bare = d / "remote.git"
    git(d, "clone", "-q", "--bare", str(src), str(bare))
    jobs: list[dict] = []
    with FakeGitHub(token=TOKEN) as gh, FakeAnthropic(api_key=KEY, responder=responder(shape), min_cache_tokens=0) as llm:
        gh.add_repo("o/r", default_branch="main", git_dir=bare)
        gh.set_permission("o/r", "alice", "write")
        n = gh.add_issue("o/r", "Benchmark question", "parts", user="alice", labels=["agent"])
        events = [
            (
                "issues",
                {
                    "action": "opened",
                    "sender": {"login": "alice", "type": "User"},
                    "repository": {"full_name": "o/r"},
                    "issue": {
                        "number": n,
                        "title": "Benchmark question",
                        "body": "parts",
                        "labels": [{"name": "agent"}],
                        "user": {"login": "alice"},
                    },
                },
            )
        ]
        sent = 0
        while events:
            name, ev = events.pop(0)
            k = len(jobs)
            (d / f"event-{k}.json").write_text(json.dumps(ev))
            (d / f"runner-{k}").mkdir()
            env = {
                **{x: v for x, v in os.environ.items() if not x.startswith(("GITHUB_", "ANTHROPIC", "OPENAI", "GITOPS_AGENT"))},
                "GITHUB_REPOSITORY": "o/r",
                "GITHUB_API_URL": gh.url,
                "GITHUB_SERVER_URL": "https://github.example",
                "GITOPS_AGENT_GITHUB_TOKEN": TOKEN,
                "GITOPS_AGENT_GIT_URL": f"file://{bare}",
                "GITHUB_EVENT_NAME": name,
                "GITHUB_EVENT_PATH": str(d / f"event-{k}.json"),
                "RUNNER_TEMP": str(d / f"runner-{k}"),
                "GITHUB_RUN_ID": str(100 + k),
                "GITOPS_AGENT_GITHUB_THROTTLE": "0",
                "ANTHROPIC_BASE_URL": llm.url,
                "ANTHROPIC_API_KEY": KEY,
                "PYTHONSAFEPATH": "1",
                "PYTHONPATH": str(ROOT),
            }
            t0 = time.perf_counter()
            p = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "gitops_agent", "step", "auto"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                raise RuntimeError(f"{name} job failed: {p.stderr[-2000:]}")
            imp, mods = parse_imports(p.stderr)
            kind = "intake" if name == "issues" else ev["action"].removeprefix("agent-")
            jobs.append({"kind": kind, "wall": wall, "imports": imp, "heavy": sorted(m for m in HEAVY if m in mods)})
            for x in gh.dispatches[sent:]:
                events.append(
                    (
                        "repository_dispatch",
                        {
                            "action": x["event_type"],
                            "client_payload": x["client_payload"],
                            "sender": {"login": "github-actions[bot]", "type": "Bot"},
                        },
                    )
                )
            sent = len(gh.dispatches)
        prs = list(gh.repo("o/r").pulls.values())
        ok = len(prs) == 1 and f"All {len(shape)} parts done." in prs[0].body
        branch = prs[0].pull.head if prs else ""
        commits = len(git(bare, "rev-list", f"main..{branch}").split()) if branch else 0
    return {"jobs": jobs, "ok": ok, "commits": commits}


def measure(
    quick: bool = False,
    setup_cold: float | None = None,
    setup_warm: float | None = None,
    before: tuple[float, float] | None = None,
) -> Section:
    """``setup_*``: seconds of setup per job now; ``before``: (cold, warm) of the action before."""
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    sec = Section()
    shapes = list(SHAPES) if not quick else ["2-node sequential", "4-leaf fan-out"]
    per_kind: dict[str, list[tuple[float, list[str]]]] = {}
    lines = [
        "",
        "**P7 jobs per task** (`python bench/jobs.py`): every job its own process (`python -m gitops_agent step auto`), "
        "a fake GitHub, a bare remote, a local Messages API server.",
        "",
        "| plan | inline_steps | jobs | commits | job wall, sum "
        "| runner time, hosted (cold setup) | runner time, persistent (warm) | answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cold = setup_cold if setup_cold is not None else float("nan")
    warm = setup_warm if setup_warm is not None else float("nan")
    for shape in shapes:
        res = {}
        for inline in (False, True):
            r = run_task(work, shape, inline)
            res[inline] = r
            wall = sum(j["wall"] for j in r["jobs"])
            n = len(r["jobs"])
            lines.append(
                f"| {shape} | {'on' if inline else 'off'} | {n} | {r['commits']} | {wall:.1f} s | "
                f"{wall + n * cold:.1f} s | {wall + n * warm:.1f} s | {'right' if r['ok'] else 'WRONG'} |"
            )
            if not inline:
                for j in r["jobs"]:
                    per_kind.setdefault(j["kind"], []).append((j["imports"], j["heavy"]))
        off, on = len(res[False]["jobs"]), len(res[True]["jobs"])
        if before is not None and setup_cold is not None:
            w_off, w_on = (sum(j["wall"] for j in res[x]["jobs"]) for x in (False, True))
            old_t, new_t = w_off + off * before[0], w_on + on * setup_cold
            sec.rows.append(
                Row(
                    f"P7 runner time on GitHub-hosted (every job cold): {shape}",
                    f"{new_t:.0f} s ({on} jobs, lock + uv)",
                    f"{old_t:.0f} s ({off} jobs, pip)",
                    f"{new_t / old_t:.2f}",
                    "—",
                    None,
                    note="the jobs' own wall time plus each job's setup (P8); a runner's start is not counted",
                )
            )
        target = {"2-node sequential": 2}.get(shape)
        ok = res[False]["ok"] and res[True]["ok"] and res[False]["commits"] == res[True]["commits"]
        sec.rows.append(
            Row(
                f"P7 jobs per task: {shape}",
                f"{on} jobs (inline_steps on)",
                f"{off} jobs (off)",
                f"{on / off:.2f}",
                f"≤ {target} jobs" if target else "fewer, same commits",
                (on <= target if target else on < off) and ok,
                note="" if ok else "a run gave a wrong answer or a different number of commits",
            )
        )
        if shape == "4-leaf fan-out":
            leaves = sum(1 for j in res[True]["jobs"] if j["kind"] == "execute")
            sec.rows.append(
                Row(
                    "P7 fan-out: leaves in jobs of their own (inline_steps on)",
                    f"{leaves} of 4",
                    "4 of 4",
                    "—",
                    "4 of 4",
                    leaves == 4,
                )
            )
    lines += [
        "",
        "Import time of each step (`-X importtime`, the sum of every module's own time; jobs with inline_steps off, median):",
        "",
        "| step | import time | heavy packages imported |",
        "|---|---|---|",
    ]
    for kind in ("intake", "plan", "execute", "finish"):
        xs = per_kind.get(kind, [])
        if xs:
            heavy = sorted({h for _, hs in xs for h in hs})
            lines.append(f"| {kind} | {statistics.median(x for x, _ in xs):.2f} s | {', '.join(heavy) or 'none'} |")
            if kind in ("intake", "finish"):
                sec.rows.append(
                    Row(
                        f"P7 {kind} step imports no model SDK",
                        ", ".join(h for h in heavy if h in ("anthropic", "openai")) or "none",
                        "—",
                        "—",
                        "none",
                        not any(h in ("anthropic", "openai") for h in heavy),
                        note=f"import time {statistics.median(x for x, _ in xs):.2f} s",
                    )
                )
            if kind == "execute":
                sec.rows.append(
                    Row(
                        "P7 execute step imports no retrieval stack",
                        ", ".join(h for h in heavy if h not in ("anthropic", "openai")) or "none",
                        "—",
                        "—",
                        "none",
                        not any(h not in ("anthropic", "openai") for h in heavy),
                        note=f"import time {statistics.median(x for x, _ in xs):.2f} s",
                    )
                )
    if setup_cold is None:
        lines.append(
            "\nRunner time with setup: pass `--setup-cold/--setup-warm` (from bench/setup_time.py); `bench/run.py` does."
        )
    sec.details = lines
    sec.seconds = time.perf_counter() - t_all
    return sec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the 2-node and 4-leaf plans only")
    ap.add_argument("--setup-cold", type=float, help="seconds of setup per job on a cold runner (bench/setup_time.py)")
    ap.add_argument("--setup-warm", type=float, help="seconds of setup per job on a warm runner")
    a = ap.parse_args()
    return print_section(measure(a.quick, a.setup_cold, a.setup_warm))


if __name__ == "__main__":
    sys.exit(main())
