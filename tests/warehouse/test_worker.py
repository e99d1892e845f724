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
from tests.warehouse.wclient import decode, peak_mb, peak_reset, query, running, serving, sessions, wait_until


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
        assert rows == [] and "needs more memory than the broker gives one query (200 MB)" in last["error"], last
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
            replies = [decode(line) for line in f if line.strip()]
        assert time.monotonic() - t0 < 10
        assert replies[-1] == {"error": "the query's worker did not finish in time and was killed"}
        assert wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 5)
        [_, rec] = broker.take_queries()
        assert rec.error == replies[-1]["error"] and rec.sql.startswith("select pg_sleep")


def test_a_worker_killed_from_outside_gets_the_client_an_error_and_a_record(pg):
    with serving(pg.url, timeout_s=60) as (broker, path):
        query(path, "select 1")
        s = _start_sleeping(path)
        assert wait_until(lambda: running(pg) == 1 and len(_workers()) == 1, 10)
        os.kill(_workers()[0], signal.SIGKILL)  # as the kernel's OOM killer would
        with s, s.makefile("rb") as f:
            replies = [decode(line) for line in f if line.strip()]
        assert "worker ended without an answer" in replies[-1]["error"]
        assert "worker ended without an answer" in broker.take_queries()[-1].error
        _, last = query(path, "select 2 as two")
        assert last["done"]
    # the server notices its client is gone (client_connection_check_interval) and ends the
    # statement within seconds, not at the source's 60 s timeout
    assert wait_until(lambda: sessions(pg) == 0, 8)


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


def test_a_huge_error_message_is_cut_before_it_reaches_the_agent(pg):
    with serving(pg.url) as (broker, path):
        query(path, "select 1")
        base = peak_reset()
        _, last = query(path, "select repeat('x', 100000000)::int as n")  # the server quotes the 100 MB value
        grew = peak_mb() - base
        [_, rec] = broker.take_queries()
    assert last["error"].startswith("invalid input syntax for type integer") and len(last["error"]) < 1200
    assert rec.error == last["error"]
    assert grew < 60, grew


def test_an_error_that_says_out_of_memory_is_the_servers_not_the_brokers(pg):
    with serving(pg.url) as (_, path):
        _, last = query(path, "select 'out of memory'::int as n")
    assert last["error"] == 'invalid input syntax for type integer: "out of memory"'


def test_a_duckdb_aggregate_larger_than_its_memory_spills_to_disk(tmp_path, monkeypatch):
    monkeypatch.setattr("gitops_agent.data.worker.MEMORY_BYTES", 256 << 20)
    db = tmp_path / "big.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table t as select range as id, md5(range::varchar) as s from range(2000000)")
    with serving(f"duckdb://{db}", timeout_s=120) as (_, path):
        # DuckDB given the whole limit reserved more address space than the worker has, and failed
        rows, last = query(path, "select count(*) as n from (select s, count(*) from t group by s)")
    assert rows == [[2000000]] and last["done"], last
    assert not list(tmp_path.glob("*.tmp")) and not [p for p in os.listdir("/tmp") if p.startswith("gitops-agent-duckdb-")]


def test_queries_run_when_the_agent_holds_descriptors_past_1024(pg):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        with serving(pg.url) as (broker, path):
            rows, last = query(path, "select 7 as seven")
            [rec] = broker.take_queries()
    finally:
        for fd in held:
            os.close(fd)
    assert rows == [[7]] and last["done"] and rec.rows == 1 and rec.error is None


def test_the_agent_runs_at_most_its_workers_at_once_and_the_next_waits_its_turn(pg, monkeypatch):
    import threading

    monkeypatch.setattr("gitops_agent.data.worker._slots", threading.BoundedSemaphore(1))
    with serving(pg.url, timeout_s=5) as (broker, path):
        query(path, "select 1")
        out: list = []
        first = threading.Thread(target=lambda: out.append(query(path, "select pg_sleep(2) as a")))
        first.start()
        assert wait_until(lambda: running(pg) == 1, 10)
        second = threading.Thread(target=lambda: out.append(query(path, "select 2 as b")))
        second.start()
        time.sleep(0.5)
        assert len(_workers()) == 1 and running(pg) == 1  # the second waits for the first's worker
        first.join(30)
        second.join(30)
    assert sorted(last.get("done", False) for _, last in out) == [True, True]


def test_a_worker_killed_while_sending_leaves_the_client_a_readable_error(pg, monkeypatch):
    monkeypatch.setattr("gitops_agent.data.worker.KILL_GRACE_S", 1.0)
    with serving(pg.url, timeout_s=1, max_bytes=100_000_000) as (_, path):
        query(path, "select 1")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(path)
        sql = "select repeat('x', 100000) as v from generate_series(1, 400)"
        s.sendall(json.dumps({"op": "query", "source": "shop", "sql": sql}).encode() + b"\n")
        time.sleep(4)  # not reading: the worker blocks in the middle of a line and is killed
        with s, s.makefile("rb") as f:
            replies = [decode(line) for line in f if line.strip()]
    assert any("broken" in r for r in replies)  # the line it was sending
    assert replies[-1] == {"error": "the query's worker did not finish in time and was killed"}


def test_the_sandbox_client_reads_a_cut_line_as_the_brokers_error(tmp_path, monkeypatch):
    """brain/tools/warehouse.py, the module the model's code imports, against a broker whose worker
    died in the middle of a line."""
    import importlib.util
    import threading

    spec = importlib.util.spec_from_file_location(
        "warehouse_tool", worker.__file__.replace("gitops_agent/data/worker.py", "brain/tools/warehouse.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    path = str(tmp_path / "w.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b'{"columns":["v"],"types":["text"]}\n{"rows":[["xxxx' + b'\n{"error":"the worker was killed"}\n')

    t = threading.Thread(target=answer)
    t.start()
    monkeypatch.setenv(tool.SOCKET_ENV, path)
    try:
        list(tool._request({"op": "query", "source": "shop", "sql": "select 1"}))
        raised = None
    except tool.WarehouseError as e:
        raised = str(e)
    t.join(5)
    server.close()
    assert raised == "the worker was killed"


def test_parameters_nested_past_a_list_are_refused_and_records_stay_small(pg, monkeypatch):
    monkeypatch.setattr("gitops_agent.data.broker.MAX_RECORDS", 3)
    deep: list = [1]
    for _ in range(300):
        deep = [deep]
    with serving(pg.url) as (broker, path):
        _, last = query(path, "select %(a)s::int + 41 as n", {"a": 1, "b": deep})
        assert "each parameter must be a number, a string" in last["error"]
        rows, last = query(path, "select %s::int + 1 as n, %s::int[] as ids", [41, [1, 2]])
        assert rows == [[42, [1, 2]]]
        long_sql = "select 1 as one -- " + "x" * 50_000
        query(path, long_sql)
        for n in range(2, 5):
            query(path, f"select {n}")
        recs = broker.take_queries()
    assert len(recs) == 4 and recs[-1].error == "2 more queries ran in this step, not recorded (the record keeps 3)"
    assert recs[1].sql.startswith("select 1 as one") and len(recs[1].sql) < 20_100 and "cut: 30019 more characters" in recs[1].sql


def test_a_server_that_cannot_check_its_client_still_gets_the_timeouts(pg, monkeypatch):
    # PostgreSQL refuses client_connection_check_interval where it cannot check (not Linux)
    monkeypatch.setattr("gitops_agent.data.sources.CLIENT_CHECK", "SET LOCAL no_such.setting_here = 1; SELECT 1/0")
    from gitops_agent.data.sources import connect

    conn = connect(pg.url, 7)
    try:
        _, _, fetch = conn.run(
            "select current_setting('statement_timeout') as t, current_setting('transaction_read_only') as ro", None
        )
        assert fetch(1) == [("7s", "on")]
    finally:
        conn.close()
