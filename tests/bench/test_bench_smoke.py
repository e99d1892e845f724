"""The benchmarks still run (tiny sizes). Nothing about time is asserted: only that each
measurement produces its rows and that the token billing follows its rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cold_step, parallel, scale, tokens
from bench.common import Row, table


def _filled(rows: list[Row]) -> None:
    assert rows
    for r in rows:
        assert r.measure and r.ours and r.ours != "not measured", r


def test_billing_rules() -> None:
    count = lambda s: len(s)  # noqa: E731 - one "token" per character
    B = tokens.Block
    # turn 1 writes tools+system+first message; turn 2 reads it back through the look-back
    # (its own breakpoint is on the new last block) and writes only the new part
    t1 = [B("aaaa", True), B("bb"), B("cc", True)]
    t2 = [B("aaaa", True), B("bb"), B("cc"), B("dd"), B("ee", True), B("ff")]
    b = tokens.bill([t1, t2], count)
    assert (b.read, b.write, b.uncached) == (8, 8 + 4, 2)
    assert b.billed == pytest.approx(2 * 1.0 + 12 * 1.25 + 8 * 0.1)
    # without look-back only the first breakpoint's prefix is read
    nl = tokens.bill([t1, t2], count, lookback=0)
    assert nl.read == 4
    # below the floor nothing is cached
    assert tokens.bill([t1, t2], count, min_cache_tokens=100).read == 0


def test_token_economy_requests(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    tokens.make_orders(tmp_path / "data" / "orders.csv", n=200)
    obs = tokens.observations(tmp_path)
    assert len(obs) == len(tokens.TURNS) and all(o.strip() for o in obs)
    params, task_text = tokens.ours_requests(obs, (tmp_path / "data" / "orders.csv").read_bytes(), tmp_path / "w")
    assert len(params) == len(tokens.TURNS) + 1 and "orders.csv" in task_text
    marks = [sum(1 for b in tokens.anthropic_blocks(p) if b.breakpoint) for p in params]
    assert max(marks) <= 4
    ours = tokens.bill([tokens.anthropic_blocks(p) for p in params], tokens.get_counter()[1])
    naive = tokens.bill([tokens.anthropic_blocks(p, keep_breakpoints=False) for p in params], tokens.get_counter()[1])
    assert ours.total == naive.total and ours.billed < naive.billed


def test_parallel_and_scale_run() -> None:
    _filled(parallel.measure(leaves=2, latency=0.0, workers=2).rows)
    s = scale.measure(tasks=3, workers=2, leaves=2)
    _filled(s.rows)
    assert s.rows[0].met and s.rows[1].met, table(s.rows)


def test_cold_step_runs(tmp_path: Path) -> None:
    s = cold_step.measure(commits=20, mb=1, repeat=1, cache_dir=tmp_path / "cache")
    _filled(s.rows)
    assert "problems" not in "\n".join(s.details), s.details
    assert (tmp_path / "cache" / ".gitignore").read_text() == "*\n"


def test_steered_round_bench_runs_and_costs_less_than_the_task():
    from bench import steer

    s = steer.measure(quick=True)
    (row,) = s.rows
    assert row.met is True, row  # one node of five redone: one node plus one planner call


def test_jobs_bench_counts_jobs_and_commits(tmp_path: Path) -> None:
    from bench import jobs

    on = jobs.run_task(tmp_path, "2-node sequential", inline=True)
    assert on["ok"] and len(on["jobs"]) == 2 and on["commits"] == 7
    assert [j["kind"] for j in on["jobs"]] == ["intake", "plan"] and all(j["imports"] > 0 for j in on["jobs"])


def test_setup_bench_reads_acts_step_timings() -> None:
    from bench import setup_time

    log = (
        "[agent/x/reconcile] ⭐ Run Main # the install\nset -e\n"
        "[agent/x/reconcile]   ✅  Success - Main # the install\nset -e\n [3.5s]\n"
        '[agent/x/reconcile] ⭐ Run Main cd "$ACTION_PATH"\n"$PY" -m gitops_agent step "$STEP"\n'
        "[agent/x/reconcile]   | gitops-agent: reconcile: 0 tasks\n"
        '[agent/x/reconcile]   ✅  Success - Main cd "$ACTION_PATH"\n"$PY" -m gitops_agent step "$STEP"\n [1.25s]\n'
        "[agent/x/reconcile]   ⚙  ::set-output:: task=\n"
        "[agent/x/reconcile]   ✅  Success - Main gitops-agent/gitops-agent@v1 [1m5.25s]\n"
    )
    assert setup_time.setup_seconds(log) == (64.0, 1.25)
    assert setup_time._seconds("x [28.6ms]") == 0.0286
