#!/usr/bin/env python
"""P13 the warehouse broker: what going through it costs against the same query run directly
with psycopg, on a real PostgreSQL started here (tests/fakes/postgres.py; needs root and Debian's
postgresql package, else the rows say why they were not measured).

- overhead per query: a one-row lookup by key, through the broker (a client on its Unix socket,
  the broker's fresh read-only connection, JSON lines back) against psycopg connecting, running
  it and closing, in the same process; median of N;
- throughput: a 1M-row, 3-column result within the caps (max_rows 1M), rows per second through
  the broker against psycopg's fetchall of the same query.

    python bench/warehouse.py [--queries 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, Section, print_section  # noqa: E402

LOOKUP = "select id, customer, amount from orders where id = %s"
MILLION = "select i, 'row ' || i as label, i * 0.5 as half from generate_series(1, 1000000) i"


def _direct(url: str, sql: str, params) -> list:
    import psycopg

    with psycopg.connect(url) as conn:
        conn.read_only = True
        return conn.execute(sql, params).fetchall()


def _measure(pg, queries: int) -> dict[str, float]:
    from tests.warehouse.wclient import query, serving

    out: dict[str, float] = {}
    direct, brokered = [], []
    with serving(pg.url, max_rows=1_000_000, max_bytes=2_000_000_000) as (_, path):
        for i in range(queries):  # interleaved: the machine's noise falls on both alike
            t0 = time.perf_counter()
            _direct(pg.url, LOOKUP, [1 + i % 100])
            direct.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows, last = query(path, LOOKUP, [1 + i % 100])
            brokered.append(time.perf_counter() - t0)
            assert len(rows) == 1 and last.get("done"), last
        out["direct_ms"] = statistics.median(direct) * 1000
        out["broker_ms"] = statistics.median(brokered) * 1000
        t0 = time.perf_counter()
        rows, last = query(path, MILLION, timeout=600)
        out["broker_s"] = time.perf_counter() - t0
        assert len(rows) == 1_000_000 and not last.get("truncated"), last
        del rows
    t0 = time.perf_counter()
    n = len(_direct(pg.url, MILLION, None))
    out["direct_s"] = time.perf_counter() - t0
    assert n == 1_000_000
    return out


def measure(quick: bool = False, queries: int = 200) -> Section:
    from tests.fakes.postgres import Unavailable, postgres_server

    t_all = time.perf_counter()
    sec = Section()
    try:
        with postgres_server() as pg:
            m = _measure(pg, 50 if quick else queries)
    except Unavailable as e:
        sec.rows.append(Row("P13 warehouse broker", "—", note=f"not measured: {e}"))
        return sec
    over = m["broker_ms"] - m["direct_ms"]
    sec.rows += [
        Row(
            "P13 warehouse query through the broker, per query (a one-row lookup, median)",
            f"{m['broker_ms']:.1f} ms",
            baseline=f"{m['direct_ms']:.1f} ms (psycopg: connect, run, close)",
            ratio=f"{m['broker_ms'] / m['direct_ms']:.2f}",
            target="≤ 15 ms more than direct",
            met=over <= 15,
            note=f"{over:+.1f} ms: a worker forked for the query (its hard memory limit), the socket, JSON, the settings",
        ),
        Row(
            "P13 warehouse 1M-row result through the broker (3 columns, within max_rows)",
            f"{1_000_000 / m['broker_s']:,.0f} rows/s ({m['broker_s']:.1f} s)",
            baseline=f"{1_000_000 / m['direct_s']:,.0f} rows/s (psycopg fetchall)",
            ratio=f"{m['broker_s'] / m['direct_s']:.2f}",
            target="≥ 100,000 rows/s",
            met=1_000_000 / m["broker_s"] >= 100_000,
            note="chunks of what fits 4 MB, JSON lines over a Unix socket, decoded by the client",
        ),
    ]
    sec.seconds = time.perf_counter() - t_all
    return sec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=200, help="lookups to time each way (default 200)")
    a = ap.parse_args()
    return print_section(measure(queries=a.queries))


if __name__ == "__main__":
    sys.exit(main())
