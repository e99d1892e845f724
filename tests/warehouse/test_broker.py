"""The broker against a real PostgreSQL (tests/warehouse/conftest.py): read-only whatever the role
may do, one statement, bounded, and cancelled on the server."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest

from tests.fakes.postgres import ORDERS
from tests.warehouse.wclient import ask, peak_mb, peak_reset, query, running, serving, sessions, wait_until

WRITES = [
    "delete from orders",
    "select 1; delete from orders",
    "commit; delete from orders",
    "set transaction read write",
    "set transaction read write; delete from orders",
    "with gone as (delete from orders returning id) select count(*) from gone",
    "select * from orders for update",
    "select wipe()",
    "select set_config('transaction_read_only', 'off', true), wipe()",
    "insert into orders values (999999, 'x', 1, null)",
    "update orders set amount = 0",
    "truncate orders",
    "drop table orders",
    "create table stolen as select * from orders",
]


def _state(pg) -> str:
    return pg.psql("select count(*) || ' ' || sum(amount) from orders")


def test_sources_lists_the_tables_and_their_columns(pg):
    with serving(pg.url, description="the shop") as (_, path):
        [reply] = ask(path, {"op": "sources"})
    [shop] = reply["sources"]
    assert shop["name"] == "shop" and shop["description"] == "the shop"
    tables = {t["name"]: t["columns"] for t in shop["tables"]}
    assert [(c["name"], c["type"]) for c in tables["orders"]] == [
        ("id", "integer"),
        ("customer", "text"),
        ("amount", "numeric"),
        ("placed", "date"),
    ]


def test_a_query_returns_its_rows_as_json_with_parameters(pg):
    with serving(pg.url) as (broker, path):
        replies = ask(
            path, {"op": "query", "source": "shop", "sql": "select * from orders where id <= %s order by id", "params": [2]}
        )
        [rec] = broker.take_queries()
    assert replies[0] == {"columns": ["id", "customer", "amount", "placed"], "types": ["int4", "text", "numeric", "date"]}
    rows = [r for m in replies[1:-1] for r in m["rows"]]  # in chunks: the first is one row
    assert rows == [[1, "c1", 1.25, "2024-01-02"], [2, "c2", 2.5, "2024-01-03"]]
    assert replies[-1]["done"] and replies[-1]["rows"] == 2 and replies[-1]["truncated"] is None
    assert (rec.source, rec.params, rec.rows, rec.error) == ("shop", [2], 2, None) and rec.bytes > 0


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2", "asyncpg"])
def test_a_sqlalchemy_url_with_a_driver_is_read_as_its_dialect(pg, driver):
    url = pg.url.replace("postgresql://", f"postgresql+{driver}://", 1)
    assert url != pg.url
    with serving(url) as (broker, path):
        replies = ask(path, {"op": "query", "source": "shop", "sql": "select count(*) as n from orders"})
        [rec] = broker.take_queries()
    assert rec.error is None and [r for m in replies[1:-1] for r in m["rows"]] == [[int(_state(pg).split()[0])]]


@pytest.mark.parametrize("sql", WRITES)
def test_every_write_form_is_refused_and_the_table_is_unchanged(pg, sql):
    before = _state(pg)
    assert before.startswith(f"{ORDERS} ")
    with serving(pg.url) as (broker, path):
        rows, last = query(path, sql)
        [rec] = broker.take_queries()
    assert "error" in last, (sql, last)
    assert rec.error == last["error"]
    assert _state(pg) == before
    assert pg.psql("select count(*) from pg_tables where tablename = 'stolen'") == "0"


def test_a_chained_statement_is_refused_by_the_server_not_run_in_part(pg):
    with serving(pg.url) as (_, path):
        _, last = query(path, "select 1; select 2")
    # the server refused it whole ("cannot insert multiple commands into a prepared statement")
    one = "only one read-only query can run: SELECT, WITH ... SELECT, VALUES or TABLE"
    assert last == {"error": f"exactly one SQL statement per query ({one})"}


def test_a_long_query_is_stopped_at_the_sources_timeout_and_gone_from_the_server(pg):
    t0 = time.monotonic()
    with serving(pg.url, timeout_s=2) as (_, path):
        _, last = query(path, "select pg_sleep(600) as slept_600")
    assert time.monotonic() - t0 < 10
    assert last == {
        "error": "the query ran past the source's timeout (2 s) and was cancelled on the server; "
        "make it cheaper (filter, aggregate, limit) or raise timeout_s for the source in data.sources"
    }
    assert wait_until(lambda: sessions(pg) == 0)


def test_a_query_is_cancelled_on_the_server_when_its_client_goes_away(pg):
    with serving(pg.url, timeout_s=120) as (_, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(json.dumps({"op": "query", "source": "shop", "sql": "select pg_sleep(600) as gone_client"}).encode() + b"\n")
        assert wait_until(lambda: running(pg) == 1)
        s.close()
        assert wait_until(lambda: sessions(pg) == 0, 5)


def test_a_query_is_cancelled_on_the_server_when_the_action_ends(pg):
    with serving(pg.url, timeout_s=120) as (_, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)  # the client stays: only the end of the action stops the query
        s.sendall(json.dumps({"op": "query", "source": "shop", "sql": "select pg_sleep(600) as action_end"}).encode() + b"\n")
        assert wait_until(lambda: running(pg) == 1)
    assert wait_until(lambda: sessions(pg) == 0, 5)
    s.close()


def test_a_5m_row_result_is_cut_at_max_rows_in_bounded_memory(pg):
    base = peak_reset()
    t0 = time.monotonic()
    with serving(pg.url, max_rows=100_000) as (broker, path):
        rows, last = query(path, "select i, 'row ' || i as label from generate_series(1, 5000000) i")
        [rec] = broker.take_queries()
    assert len(rows) == 100_000 and rows[-1] == [100_000, "row 100000"]
    assert "cut at 100000 rows" in last["truncated"] and "max_rows" in last["truncated"]
    assert rec.truncated == last["truncated"] and rec.rows == 100_000
    assert time.monotonic() - t0 < 20
    # the test holds the 100k rows it read; the broker's worker only ever held a chunk
    assert peak_mb() - base < 200


def test_a_result_over_max_bytes_is_cut_with_a_note(pg):
    with serving(pg.url, max_bytes=10_000) as (_, path):
        rows, last = query(path, "select * from orders order by id")
    assert 0 < len(rows) < ORDERS
    assert len(json.dumps(rows, separators=(",", ":"))) <= 10_000
    assert "max_bytes 10000" in last["truncated"]


def test_errors_are_readable_and_never_hold_the_url(pg):
    bad = pg.url.replace(pg.password, pg.password + "x")
    with serving(bad) as (broker, path):
        _, last = query(path, "select 1")
        [rec] = broker.take_queries()
    assert "password authentication failed" in last["error"]
    assert pg.password not in last["error"] and pg.password not in rec.error
    # a driver's message that quotes the URL's text (here the bad sslmode, which is the password)
    with serving(f"{pg.url}?sslmode={pg.password}") as (broker, path):
        _, last = query(path, "select 1")
        [rec] = broker.take_queries()
    assert last["error"] == 'cannot connect: connection is bad: invalid sslmode value: "***" (check the URL in SHOP_DB_URL)'
    # an unescaped @ in the password: libpq would read the rest as the host and quote it
    raw = pg.url.replace(f":{pg.password}@", f":x@{pg.password}@")
    with serving(raw) as (broker, path):
        _, last = query(path, "select 1")
    assert (
        last["error"]
        == "cannot connect: the URL's user or password holds an unescaped @ (write it as %40) (check the URL in SHOP_DB_URL)"
    )
    assert pg.password not in rec.error
    with serving(pg.url) as (_, path):
        _, last = query(path, "select nope from orders")
        assert last == {"error": 'column "nope" does not exist (warehouse.sources() lists the tables and their columns)'}
        _, last = query(path, "select * from ordrs")
        assert last == {"error": 'relation "ordrs" does not exist (warehouse.sources() lists the tables and their columns)'}
        _, last = query(path, "select * from orders where id = %s")
        assert last["error"].endswith("(a %s or %(name)s placeholder needs params; write %% for a literal %)"), last
        [reply] = ask(path, {"op": "query", "source": "elsewhere", "sql": "select 1"})
        assert reply["error"] == "unknown source 'elsewhere'; the sources are: files, shop"


def test_an_oversized_or_malformed_request_gets_an_error(pg):
    with serving(pg.url) as (_, path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)

            def flood() -> None:
                with contextlib.suppress(OSError):  # the broker stops reading after 1 MB
                    s.sendall(b"x" * 2_000_000)

            threading.Thread(target=flood, daemon=True).start()
            reply = s.makefile("rb").readline()
        assert b"over 1000000 bytes" in reply
        [reply] = ask(path, {"op": "drop"})
        assert "error" in reply


def test_rows_of_megabytes_are_fetched_a_few_at_a_time_in_bounded_memory(pg, monkeypatch):
    # 40 rows of 20 MB: fetched 1000 at a time this held 800 MB of rows, twice over; a worker
    # given 300 MB must hold a few rows at a time to answer at all
    monkeypatch.setattr("gitops_agent.data.worker.MEMORY_BYTES", 300 << 20)
    base = peak_reset()
    with serving(pg.url, max_bytes=50_000_000) as (broker, path):
        rows, last = query(path, "select repeat('x', 20000000) as big from generate_series(1, 40)")
        [rec] = broker.take_queries()
    assert len(rows) == 2 and "max_bytes 50000000" in last["truncated"] and rec.rows == 2, last
    assert peak_mb() - base < 400


def test_a_drivers_unexpected_failure_is_a_reply_and_a_record(pg):
    with serving(pg.url) as (broker, path):
        _, last = query(path, "select %s::int as n", {"n": 1})  # psycopg raises TypeError here
        [rec] = broker.take_queries()
        assert "positional placeholders" in last["error"] and rec.error == last["error"]
        _, last = query(path, "select %s::int as n", [1])  # and the broker still serves
    assert last["done"]


def test_a_request_trickled_in_is_cut_off_at_the_deadline(pg, monkeypatch):
    monkeypatch.setattr("gitops_agent.data.broker.REQUEST_WAIT_S", 1.0)
    with serving(pg.url) as (_, path), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.settimeout(10)
        t0 = time.monotonic()
        with contextlib.suppress(OSError):
            for ch in b'{"op": "sources"':  # a byte every 0.3 s: each recv is on time, the whole is not
                s.sendall(bytes([ch]))
                time.sleep(0.3)
                if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    break
        reply = s.makefile("rb").readline()
    assert b"did not arrive within 1 s" in reply and time.monotonic() - t0 < 5


def _hold(path: str, n: int, sql: str | None = "select pg_sleep(600)") -> list[socket.socket]:
    """``n`` connections, each running ``sql`` (None: connected, sending nothing)."""
    held = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        if sql:
            s.sendall(json.dumps({"op": "query", "source": "shop", "sql": sql}).encode() + b"\n")
        held.append(s)
    return held


def test_a_fifth_query_waits_its_turn_and_runs_when_one_ends(pg):
    with serving(pg.url) as (_, path):
        held = _hold(path, 4)
        assert wait_until(lambda: running(pg) == 4)
        fifth: list = []
        t = threading.Thread(target=lambda: fifth.append(query(path, "select 41 + 1")))
        t.start()
        t.join(1.5)
        assert t.is_alive() and running(pg) == 4  # waiting, not refused, not a fifth session
        held.pop().close()  # one ends: its query is cancelled on the server, and the fifth runs
        t.join(20)
        [(rows, last)] = fifth
        assert rows == [[42]] and last["done"]
        for s in held:
            s.close()
    assert wait_until(lambda: sessions(pg) == 0, 5)


def test_a_query_whose_turn_does_not_come_within_its_timeout_is_told_why(pg):
    with serving(pg.url, more={"quick": {"timeout_s": 1}}) as (broker, path):
        held = _hold(path, 4)
        assert wait_until(lambda: running(pg) == 4)
        replies = ask(path, {"op": "query", "source": "quick", "sql": "select 1"})
        recs = broker.take_queries()
        for s in held:
            s.close()
    assert "at most 4 queries run at once in one action" in replies[-1]["error"]
    assert "1 s (the source's timeout_s)" in replies[-1]["error"]
    assert [(r.source, r.error) for r in recs if r.source == "quick"] == [("quick", replies[-1]["error"])]


def test_reading_the_schemas_takes_a_turn_too(pg):
    with serving(pg.url) as (_, path):
        held = _hold(path, 4)
        assert wait_until(lambda: running(pg) == 4)
        listing: list = []
        t = threading.Thread(target=lambda: listing.append(ask(path, {"op": "sources"})))
        t.start()
        t.join(1.5)
        assert t.is_alive() and sessions(pg) == 4  # no fifth session for the schemas
        held.pop().close()
        t.join(20)
        [[reply]] = listing
        assert [s["name"] for s in reply["sources"]] == ["shop"]
        for s in held:
            s.close()
    assert wait_until(lambda: sessions(pg) == 0, 5)


def test_a_query_whose_client_left_while_it_waited_never_runs(pg):
    with serving(pg.url) as (broker, path):
        held = _hold(path, 4)
        assert wait_until(lambda: running(pg) == 4)
        for s in _hold(path, 3, sql="select 'left early'"):
            s.close()
        time.sleep(0.5)  # the three see their clients gone while they wait
        for s in held:
            s.close()
        assert wait_until(lambda: sessions(pg) == 0, 10)
        recs = broker.take_queries()
    left = [r.error for r in recs if "left early" in r.sql]
    assert left == ["the client disconnected before the query's turn came"] * 3, left


def test_connections_that_send_nothing_do_not_hold_back_a_query(pg):
    with serving(pg.url) as (_, path):
        idle = _hold(path, 8, sql=None)
        t0 = time.monotonic()
        rows, last = query(path, "select 7")
        assert rows == [[7]] and last["done"] and time.monotonic() - t0 < 5  # not after the idle ones' 10 s
        for s in idle:
            s.close()


def test_small_rows_first_do_not_buy_a_large_fetch_at_once():
    from gitops_agent.data.query import next_chunk

    # one tiny row seen: the next fetch is at most twice the last, not 5000 rows of unknown size
    assert next_chunk(1, 1, 4, 99_999, 50_000_000) == 2
    sizes, n, rows = [], 1, 0
    for _ in range(6):
        n = next_chunk(n, rows, rows * 4, 99_999, 50_000_000)
        sizes.append(n)
        rows += n
    assert sizes == [1, 2, 4, 8, 16, 32]
    # and never more than the bytes left allow at the sizes seen
    assert next_chunk(4000, 4000, 4_000_000, 99_999, 10_000) == 11


def test_a_value_larger_than_the_bytes_left_is_cut_before_it_is_copied(pg):
    with serving(pg.url, max_bytes=50_000_000) as (broker, path):
        rows, last = query(path, "select decode(repeat('ff', 30000000), 'hex') as blob")  # 30 MB: 60 MB as hex
        [rec] = broker.take_queries()
    assert rows == [] and "max_bytes 50000000" in last["truncated"] and rec.rows == 0
