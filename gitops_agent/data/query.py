"""One query, bounded: run on a fresh read-only connection, its rows sent in chunks as they are
fetched (the broker never holds the whole result), cut at the source's caps, and cancelled on the
server when it runs past its time, when the client goes away, or when the action ends."""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from typing import Any, Callable

from gitops_agent.core.state import QueryRecord
from gitops_agent.data.sources import Connection, SourceError, connect, secrets_of
from gitops_agent.data.values import encode_line, json_safe

MAX_CHUNK_ROWS = 5000
CHUNK_BYTES = 4_000_000  # what one fetch aims to hold: the broker's memory is about one chunk
MEMORY_NOTE = (
    "the query needs more memory than the broker gives one query ({mb} MB): a row or a value is too large, "
    "or the work too big to hold; select fewer or smaller columns (e.g. left(col, 1000)), filter, or aggregate in SQL"
)
MAX_RECORDED_SQL = 20_000  # characters of a statement kept in step.json (the broker runs up to 200,000)
MAX_RECORDED_PARAMS = 10_000  # bytes of parameters, as JSON, kept in step.json
log = logging.getLogger("gitops_agent.data")
Send = Callable[[dict[str, Any]], None]


def client_gone(client: socket.socket) -> bool:
    """The client closed its end. poll(), not select(): the agent may hold descriptors past 1024;
    and readable first, as a socket with a timeout would wait that long for the peek."""
    try:
        ready = select.poll()
        ready.register(client, select.POLLIN)
        if not ready.poll(0):
            return False
        return client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except (OSError, ValueError):
        return True


class ClientGone(Exception):
    """The client closed its end while rows were being sent."""


def sender(client: socket.socket) -> Send:
    """``send(message)``: one JSON line to the client; ClientGone when it is not there any more."""

    def send(message: dict[str, Any]) -> None:
        try:
            client.sendall(encode_line(message))
        except OSError as e:
            raise ClientGone(str(e)) from None

    return send


def _one_line(text: str) -> str:
    return text.strip().splitlines()[0][:500] if text.strip() else ""


def redact(text: str, secrets: list[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        if len(s) >= 4:
            text = text.replace(s, "***")
    return text


class Guard:
    """A watcher beside the query: it cancels the statement on the server at the deadline, when
    the client's socket closes, or when ``stopping`` is set (the action ended). A cancel through
    the driver, not a closed connection: the server stops the statement now."""

    def __init__(self, conn: Connection, timeout_s: float, client: socket.socket | None, stopping: threading.Event):
        self.conn, self.client, self.stopping = conn, client, stopping
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.reason: str | None = None
        self._done = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True, name="warehouse-guard")

    def __enter__(self) -> Guard:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._t.join(timeout=10)

    def _client_closed(self) -> bool:
        return self.client is not None and client_gone(self.client)

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            if time.monotonic() >= self.deadline:
                self.reason = timed_out(self.timeout_s)
            elif self.stopping.is_set():
                self.reason = "the sandbox action ended; the query was cancelled"
            elif self._client_closed():
                self.reason = "the client disconnected; the query was cancelled"
            else:
                continue
            self.conn.cancel()
            return


def timed_out(timeout_s: float) -> str:
    return (
        f"the query ran past the source's timeout ({timeout_s:g} s) and was cancelled on the server; "
        "make it cheaper (filter, aggregate, limit) or raise timeout_s for the source in data.sources"
    )


def about_url(error: str, cfg: Any) -> str:
    """A connection's failure names the variable whose URL to check (never the URL)."""
    if error.startswith(("cannot connect", "cannot open")):
        return f"{error} (check the URL in {cfg.url_env})"
    return error


def _capped(rows: list[list[Any]], room_rows: int, room_bytes: int) -> tuple[list[list[Any]], int, bool]:
    """The rows that fit the caps left, their size as JSON, and whether some were left out."""
    cut = len(rows) > room_rows
    rows = rows[:room_rows]
    size = len(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode())  # bytes, as sent
    if size <= room_bytes:
        return rows, size, cut
    kept, size = [], 2
    for row in rows:  # only the last chunk of a capped result is measured row by row
        n = len(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()) + 1
        if size + n > room_bytes:
            break
        kept.append(row)
        size += n
    return kept, size, True


def next_chunk(last: int, fetched_rows: int, fetched_bytes: int, room_rows: int, room_bytes: int) -> int:
    """How many rows to fetch next: one first (a row can be megabytes), then at most twice the
    last fetch (small rows first do not buy a large fetch at once), as many as fit CHUNK_BYTES and
    the bytes left at the sizes seen so far, and one past the rows left (to know a cut happened)."""
    if fetched_rows == 0:
        return 1
    per_row = max(1, fetched_bytes // fetched_rows)
    fit = min(CHUNK_BYTES, max(room_bytes, 0)) // per_row + 1
    return max(1, min(MAX_CHUNK_ROWS, 2 * last, fit, room_rows + 1))


def _within_raw(batch: list[tuple], room_bytes: int) -> tuple[list[tuple], bool]:
    """The rows whose text and bytes (hex: two characters a byte) fit ``room_bytes`` as they come
    from the driver, and whether some did not: their JSON is never smaller, so nothing that fits is cut."""
    total = 0
    for i, row in enumerate(batch):
        sized = (v for v in row if isinstance(v, (str, bytes, bytearray, memoryview)))
        total += sum(len(v) * (1 if isinstance(v, str) else 2) for v in sized)
        if total > room_bytes:
            return batch[:i], True
    return batch, False


def _stream(conn: Connection, sql: str, params: Any, cfg: Any, send: Send, record: QueryRecord) -> None:
    columns, types, fetch = conn.run(sql, params)
    send({"columns": columns, "types": types})
    n = 1
    while batch := fetch(n := next_chunk(n, record.rows, record.bytes, cfg.max_rows - record.rows, cfg.max_bytes - record.bytes)):
        room_rows, room_bytes = cfg.max_rows - record.rows, cfg.max_bytes - record.bytes
        batch, over = _within_raw(batch, room_bytes)  # before any copy: a 1 GB value is cut, not hexed
        rows, size, cut = _capped([[json_safe(v) for v in row] for row in batch], room_rows, room_bytes)
        cut = cut or over
        if rows:
            send({"rows": rows})
        record.rows += len(rows)
        record.bytes += size
        if cut:  # a row past a cap exists: at most one chunk more than the caps was fetched
            which = f"max_rows {cfg.max_rows}" if record.rows >= cfg.max_rows else f"max_bytes {cfg.max_bytes}"
            record.truncated = f"the result was cut at {record.rows} rows (the source's {which}); aggregate in SQL or filter"
            return


def run_query(
    name: str,
    cfg: Any,
    url: str,
    sql: str,
    params: Any,
    send: Send,
    client: socket.socket | None,
    stopping: threading.Event,
    memory: int | None = None,
) -> QueryRecord:
    """Run ``sql`` on source ``name`` (settings ``cfg``), sending its messages with ``send``; the
    record of what happened. Errors go to the client as ``{"error": ...}`` with the URL redacted;
    running out of ``memory`` (the worker's limit, gitops_agent/data/worker.py) is said plainly."""
    record = QueryRecord(source=name, sql=sql, params=params)
    t0 = time.monotonic()
    guard: Guard | None = None
    conn: Connection | None = None
    out_of_memory = False
    try:
        conn = connect(url, cfg.timeout_s, memory)
        with Guard(conn, cfg.timeout_s, client, stopping) as guard:
            _stream(conn, sql, params, cfg, send, record)
    except SourceError as e:
        record.error = (guard.reason if guard is not None and guard.reason else None) or str(e)
        if e.cancelled and not (guard is not None and guard.reason):
            # the server's statement_timeout, or someone else's cancel (pg_cancel_backend) before it
            late = time.monotonic() - t0 >= cfg.timeout_s * 0.9
            record.error = timed_out(cfg.timeout_s) if late else "the query was cancelled on the server, not by the agent"
        out_of_memory = e.out_of_memory
    except ClientGone:
        record.error = "the client disconnected"
    except MemoryError:  # a worker's limit (gitops_agent/data/worker.py)
        out_of_memory = True
    except Exception as e:  # noqa: BLE001 - a driver's odd failure still gets a reply and a record
        log.warning("warehouse query on %s failed unexpectedly: %s", name, type(e).__name__)
        record.error = f"the query failed: {type(e).__name__}: {_one_line(str(e))}"
    finally:
        if conn is not None:
            conn.close()
    record.ms = int((time.monotonic() - t0) * 1000)
    if out_of_memory:  # said plainly, decided by what failed, never by what a message says
        record.error = MEMORY_NOTE.format(mb=memory >> 20) if memory else "the broker ran out of memory for the query"
    if record.error:
        record.error = redact(about_url(record.error, cfg), secrets_of(url))
    try:
        if record.error:
            send({"error": record.error})
        else:
            send({"done": True, "rows": record.rows, "bytes": record.bytes, "ms": record.ms, "truncated": record.truncated})
    except ClientGone:
        pass
    return _for_the_record(record)


def _for_the_record(record: QueryRecord) -> QueryRecord:
    """The record as step.json keeps it: a statement or parameters the size of a request are cut
    (the model sent them; the step's record stays small)."""
    if len(record.sql) > MAX_RECORDED_SQL:
        record.sql = record.sql[:MAX_RECORDED_SQL] + f"\n-- ... cut: {len(record.sql) - MAX_RECORDED_SQL} more characters"
    if record.params is not None:
        size = len(json.dumps(record.params, default=str))
        if size > MAX_RECORDED_PARAMS:
            record.params = f"({size} bytes of parameters, not recorded)"
    if record.error and len(record.error) > MAX_RECORDED_SQL:
        record.error = record.error[:MAX_RECORDED_SQL] + " ... (cut)"
    return record
