#!/usr/bin/env python
"""All the benchmarks in one run, one table.

    python bench/run.py            # the full run (about 6 to 10 minutes on 2 cores); writes bench/RESULTS.md
    python bench/run.py --quick    # under two minutes: smaller sizes, printed only (unless --out)
    python bench/run.py --only P2,P3 [--out FILE]

A benchmark, not a test: it prints one Markdown table (measure, ours, baseline, ratio, target,
met?) followed by details per measurement, and asserts nothing about time; a missed target is a
row that says so. It exits 0 unless it was called wrongly; a measurement that breaks becomes a
row saying what broke (with the traceback on stderr).

  P1     orchestration overhead per step (bench/orchestration.py, remote mode)
  P2     cold step on a heavy-history repository vs a one-commit one (bench/cold_step.py)
  P3     token economy against smolagents and a naive agent (bench/tokens.py)
  P4     parallel speed-up, 8 leaves, 1 s model latency, 4 workers vs 1 (bench/parallel.py)
  P5     memory retrieval latency and recall@3 (bench/memory.py, written with gitops_agent/memory/)
  P6     a steered round: one node of five redone costs one node plus one planner call (bench/steer.py)
  Scale  50 tasks at once on one remote, 4 workers (bench/scale.py)
  P7, P8 jobs per task, a job's setup through act (bench/jobs.py, bench/setup_time.py)
  P9     dabench on Gemma 3 270M through llama-server vs scripted (bench/local_model.py; the 'local' extra)
  P10    what a question costs with the default models, an estimate (bench/question_cost.py)
  P11    runner minutes per idle day and per stalled-task recovery, before and after (bench/idle.py)
  P12    the workbench: setup cold and warm beside the action's own, first imports in the sandbox (bench/workbench.py)
  P13    the warehouse broker: overhead per query and rows/s of a 1M-row result against psycopg direct (bench/warehouse.py)

bench/README.md says what each row means.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, Row, Section, fmt_ms, load_avg, machine_lines, table  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
QUICK_SCALE_TASKS = 25


# ----------------------------------------------------------------------------- P1


def p1(quick: bool) -> Section:
    """bench/orchestration.py's tasks and timing, remote mode (a file:// bare remote: every step
    fetches its branch and pushes its commit)."""
    from bench import orchestration as o

    t0 = time.perf_counter()
    short, long_ = 10, (60 if quick else 200)
    o.run_task(4, remote=False)  # warm-up (discarded): imports, template compilation, the sandbox probe
    runs = {}
    for n in (short, long_):
        repeats = max(1, -(-o.MIN_SAMPLES // n))  # short tasks repeated until they have MIN_SAMPLES steps
        runs[n] = o.pooled([o.run_task(n, remote=True) for _ in range(repeats)])
    rows, details = [], []
    for n, r in runs.items():
        kinds = ", ".join(f"{k} {v:.0f} ms" for k, v in r.by_step.items())
        ok = r.outcome == "done" and not r.failures
        rows.append(
            Row(
                f"P1 orchestration overhead per step, {r.jobs}-step task (remote: fetch + commit + push + dispatch)",
                f"median {fmt_ms(r.median_ms)} · p95 {fmt_ms(r.p95_ms)}",
                target=f"median ≤ {o.TARGET_MEDIAN_MS:g} ms",
                met=ok and r.median_ms <= o.TARGET_MEDIAN_MS,
                note=(f"{r.runs} tasks pooled ({len(r.samples)} steps)" if r.runs > 1 else "")
                + ("" if ok else f"; the task ended {r.outcome}: {'; '.join(r.failures)[:200]}"),
            )
        )
        details.append(
            f"- P1 {r.jobs}-step task × {r.runs}: median by kind of step: {kinds}; wall {r.wall_s:.1f} s per task; "
            f"scripted model {r.model_ms_per_step:.1f} ms per step; outcome {r.outcome}."
        )
    a, b = runs[short], runs[long_]
    ratio = b.median_ms / a.median_ms
    rows.append(
        Row(
            f"P1 per-step overhead growth: median of the {b.jobs}-step task vs the {a.jobs}-step task",
            fmt_ms(b.median_ms),
            fmt_ms(a.median_ms),
            f"{ratio:.2f}",
            f"≤ {o.TARGET_RATIO:g}",
            ratio <= o.TARGET_RATIO,
            "--quick: 60 steps instead of 200" if quick else "",
        )
    )
    return Section(rows, details, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- P5


def p5(quick: bool) -> Section:
    """bench/memory.py's functions (written alongside gitops_agent/memory/), if present."""
    t0 = time.perf_counter()
    try:
        from bench import memory as m

        bench_retrieval = getattr(m, "bench_retrieval")
        bench_recall = getattr(m, "bench_recall")
    except (ImportError, AttributeError) as e:
        return Section(
            [
                Row(
                    "P5 memory retrieval latency and recall@3",
                    "not available",
                    note=f"bench/memory.py with bench_retrieval / bench_recall is missing ({e})",
                )
            ],
            [],
        )
    from gitops_agent.memory.retrieval import embeddings_available

    sizes = [1000, 10000] if quick else [1000, 10000, 100000]
    embed = embeddings_available() and not quick
    lat = [r for r in bench_retrieval(sizes, 200, False) if r.get("method") == "bm25"]
    recall = bench_recall(embed)
    by_n = {r["experiences"]: r for r in lat}
    label = " / ".join(f"{n // 1000}k" for n in sizes)
    p50s = " / ".join(f"{by_n[n]['p50_ms']:.2f}" for n in sizes)
    p95s = " / ".join(f"{by_n[n]['p95_ms']:.2f}" for n in sizes)
    target_ms = 50.0  # bench/memory.py's target: p50 <= 50 ms at 10k
    p50_10k = by_n.get(10000, {}).get("p50_ms")
    rows = [
        Row(
            f"P5 memory retrieval latency, one BM25 search (k=3), {label} experiences",
            f"p50 {p50s} ms · p95 {p95s} ms",
            target=f"p50 ≤ {target_ms:g} ms at 10k",
            met=None if p50_10k is None else p50_10k <= target_ms,
            note="--quick: 1k and 10k only" if quick else "",
        )
    ]
    rec = ", ".join(f"{r['method']} {r.get('recall@3 all', float('nan')):.3f}" for r in recall)
    rows.append(
        Row(
            "P5 memory recall@3 on the labelled set (tests/data/retrieval_set.jsonl, all queries)",
            rec,
            note="" if embed else ("embeddings skipped in --quick" if quick else "embeddings not installed: BM25 only"),
        )
    )
    details = [
        "- P5 (bench/memory.py): index build "
        + ", ".join(f"{r['experiences']:,}: {r['build_s']} s" for r in lat)
        + "; recall@3 full / partial queries: "
        + "; ".join(f"{r['method']} {r.get('recall@3 full')} / {r.get('recall@3 partial')}" for r in recall)
        + "."
    ]
    return Section(rows, details, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- the run


def _p2(quick: bool) -> Section:
    from bench import cold_step

    return cold_step.measure(quick)


def _p3(quick: bool) -> Section:
    from bench import tokens

    return tokens.measure(quick)


def _p4(quick: bool) -> Section:
    from bench import parallel

    return parallel.measure(quick)


def _scale(quick: bool) -> Section:
    from bench import scale

    if quick:
        s = scale.measure(quick, tasks=QUICK_SCALE_TASKS)
        for r in s.rows:
            r.note = "; ".join(x for x in (f"--quick: {QUICK_SCALE_TASKS} tasks instead of 50", r.note) if x)
        return s
    return scale.measure(quick, tasks=50)


MEASUREMENTS: dict[str, tuple[str, Callable[[bool], Section]]] = {
    "P1": ("orchestration overhead", p1),
    "P2": ("cold step", _p2),
    "P3": ("token economy", _p3),
    "P4": ("parallel speed-up", _p4),
    "P5": ("memory", p5),
    "P6": ("steered round", lambda quick: __import__("bench.steer", fromlist=["measure"]).measure(quick)),
    "Scale": ("scale", _scale),
    "P8": ("job setup through act", lambda quick: __import__("bench.setup_time", fromlist=["measure"]).measure(quick)),
    "P7": ("jobs per task", lambda quick: _p7(quick)),
    "P9": ("a real model on the CPU", lambda quick: __import__("bench.local_model", fromlist=["measure"]).measure(quick)),
    "P10": ("cost of a question", lambda quick: __import__("bench.question_cost", fromlist=["measure"]).measure(quick)),
    "P11": ("idle and recovery", lambda quick: __import__("bench.idle", fromlist=["measure"]).measure(quick)),
    "P12": ("the workbench", lambda quick: __import__("bench.workbench", fromlist=["measure"]).measure(quick)),
    "P13": ("the warehouse broker", lambda quick: __import__("bench.warehouse", fromlist=["measure"]).measure(quick)),
}


def _p7(quick: bool) -> Section:
    from bench import jobs, setup_time

    last = setup_time.LAST
    return jobs.measure(
        quick, last.get("cold"), last.get("warm"), (last["cold_before"], last["warm_before"]) if "cold_before" in last else None
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="smaller sizes, under two minutes on 2 cores; not written to RESULTS.md unless --out"
    )
    ap.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(MEASUREMENTS)}")
    ap.add_argument(
        "--out", type=Path, help=f"write the results here (default: {RESULTS.relative_to(ROOT)} for a full run of everything)"
    )
    a = ap.parse_args(argv)
    wanted = [x.strip() for x in a.only.split(",") if x.strip()] or list(MEASUREMENTS)
    unknown = [x for x in wanted if x not in MEASUREMENTS]
    if unknown:
        ap.error(f"unknown measurement(s) {unknown}; choose from {list(MEASUREMENTS)}")

    load0 = load_avg()
    t0 = time.perf_counter()
    rows: list[Row] = []
    details: list[str] = []
    timings: list[str] = []
    for key in wanted:
        title, fn = MEASUREMENTS[key]
        print(f"[bench] {key} {title} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            s = fn(a.quick)
        except Exception as e:  # noqa: BLE001 - a broken measurement is a row, the others still run
            traceback.print_exc()
            s = Section(
                [Row(f"{key} {title}", "not measured", note=f"the benchmark broke: {type(e).__name__}: {str(e)[:200]}")], []
            )
        dt = time.perf_counter() - t
        timings.append(f"{key} {dt:.0f} s")
        print(f"[bench] {key} done in {dt:.1f} s", file=sys.stderr, flush=True)
        rows += s.rows
        details += s.details
    total = time.perf_counter() - t0

    mode = "--quick" if a.quick else "full"
    doc = [
        f"# Benchmarks ({mode} run)",
        "",
        f"`python bench/run.py{' --quick' if a.quick else ''}{' --only ' + a.only if a.only else ''}` — "
        "what each row means: [bench/README.md](README.md). Benchmarks, not tests: nothing here is asserted.",
        "",
        *machine_lines(load0),
        f"- Wall time: {total:.0f} s ({', '.join(timings)})",
        "",
        table(rows),
        "",
        "## Details",
        "",
        *details,
        "",
    ]
    text = "\n".join(doc)
    print(text)
    out = a.out or (RESULTS if not a.quick and not a.only else None)
    if out:
        out.write_text(text)
        print(f"[bench] written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
