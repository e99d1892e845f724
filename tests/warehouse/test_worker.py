"""Each query in a worker process (gitops_agent/data/worker.py): a hard memory limit, killed when it
overstays, nothing of the agent's environment or working directory, and the fork server started
again when it is gone. Against a real PostgreSQL, and a DuckDB file."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import duckdb

from gitops_agent.data import worker
from tests.warehouse.wclient import peak_mb, peak_reset, query, running, serving, sessions, wait_until


def _workers() -> list[int]:
    """The worker processes the fork server has running now."""
    server = worker._server
    if server is None:
        return []
    out = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.proc.pid:
            out.append(int(d))
    return out


def _start_sleeping(path: str, seconds: int = 60) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    s.sendall(json.dumps({"op": "query", "source": "shop", "sql": f"select pg_sleep({seconds}) as slept"}).encode() + b"\n")
    return s


def test_a_row_over_the_workers_memory_is_refused_and_the_broker_stays_small(pg, monkeypatch):
    monkeypatch.setattr("gitops_agent.data.worker.MEMORY_BYTES", 200 << 20)
    with serving(pg.url, max_bytes=2_000_000_000) as (broker, path):
        query(path, "select 1")  # the fork server is running
        base = peak_reset()
        rows, last = query(path, "select repeat('x', 300000000) as big")  # one 300 MB value in one row
        grew = peak_mb() - base
        [_, rec] = broker.take_queries()
        assert rows == [] and "more memory than the broker gives one query (200 MB)" in last["error"], last
        assert rec.error == last["error"]
        _, after = query(path, "select count(*) as n from orders")
        assert after["done"]
    # in the agent's process the row alone was 300 MB, held by libpq and again as a str
    assert grew < 150, grew


def test_a_worker_that_does_not_stop_is_killed_and_the_client_told(pg, monkeypatch):
    monkeypatch.setattr("gitops_agent.data.worker.KILL_GRACE_S", 1.0)
    with serving(pg.url, timeout_s=1) as (broker, path):
        query(path, "select 1")
        s = _start_sleeping(path)
        assert wait_until(lambda: running(pg) == 1 and len(_workers()) == 1, 10)  # the first query's worker is gone
        [pid] = _workers()
        os.kill(pid, signal.SIGSTOP)  # a worker stuck: its guard cannot cancel, it cannot answer
        t0 = time.monotonic()
        with s, s.makefile("rb") as f:
            replies = [json.loads(line) for line in f]
        assert time.monotonic() - t0 < 10
        assert replies[-1] == {"error": "the query's worker did not finish in time and was killed"}
        assert wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 5)
        [_, rec] = broker.take_queries()
        assert rec.error == replies[-1]["error"] and rec.sql.startswith("select pg_sleep")


def test_a_worker_killed_from_outside_gets_the_client_an_error_and_a_record(pg):
    with serving(pg.url, timeout_s=3) as (broker, path):
        query(path, "select 1")
        s = _start_sleeping(path)
        assert wait_until(lambda: running(pg) == 1 and len(_workers()) == 1, 10)
        os.kill(_workers()[0], signal.SIGKILL)  # as the kernel's OOM killer would
        with s, s.makefile("rb") as f:
            replies = [json.loads(line) for line in f]
        assert "worker ended without an answer" in replies[-1]["error"]
        assert "worker ended without an answer" in broker.take_queries()[-1].error
        _, last = query(path, "select 2 as two")
        assert last["done"]
    # its statement on the server ends at the source's timeout (statement_timeout), not later
    assert wait_until(lambda: sessions(pg) == 0, 10)


def test_the_fork_server_is_started_again_when_it_is_gone(pg):
    with serving(pg.url) as (_, path):
        query(path, "select 1")
        first = worker._server.proc
        first.kill()
        first.wait()
        rows, last = query(path, "select 41 + 1 as n")
        assert rows == [[42]] and last["done"]
        assert worker._server.proc.pid != first.pid


def test_the_worker_has_none_of_the_agents_secrets_and_imports_nothing_from_the_working_directory(pg, tmp_path, monkeypatch):
    # a model-written psycopg.py where the agent runs must not be what the fork server imports
    (tmp_path / "psycopg.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-canary-key")
    monkeypatch.setenv("GITOPS_AGENT_GITHUB_TOKEN", "ghs_canary")
    monkeypatch.setenv("OTHER_DB_URL", f"postgresql://x:{pg.password}@h/db")
    if worker._server is not None:  # started afresh here, in this directory and environment
        worker._server.proc.kill()
        worker._server.proc.wait()
    with serving(pg.url) as (_, path):
        s = _start_sleeping(path, 30)
        assert wait_until(lambda: running(pg) == 1 and len(_workers()) == 1, 10)
        with open(f"/proc/{_workers()[0]}/environ", "rb") as f:
            environ = f.read()
        s.close()
        _, last = query(path, "select 1 as one")
    assert last["done"]
    assert not (tmp_path / "ran").exists()
    for secret in (b"sk-canary-key", b"ghs_canary", pg.password.encode()):
        assert secret not in environ
    assert b"PATH=" in environ


def test_a_duckdb_file_answers_through_the_broker_read_only_and_without_file_access(tmp_path):
    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table orders as select range as id, range * 0.5 as amount from range(10000)")
    (tmp_path / "secret.csv").write_text("k\nhidden\n")
    with serving(f"duckdb://{db}") as (broker, path):
        rows, last = query(path, "select count(*) as n, sum(amount) as total from orders where id < ?", [100])
        assert rows == [[100, 2475.0]] and last["done"]
        for sql in ("delete from orders", "select 1; delete from orders", f"select * from read_csv('{tmp_path}/secret.csv')"):
            _, last = query(path, sql)
            assert "error" in last and "hidden" not in json.dumps(last), (sql, last)
        assert [r.error is None for r in broker.take_queries()] == [True, False, False, False]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from orders").fetchone() == (10000,)
