"""The warehouse broker: the host side of ``import warehouse`` (brain/tools/warehouse.py).

For each sandbox action it listens on a Unix socket in the action's private run directory, which
the sandbox binds at /run/warehouse.sock (gitops_agent/sandbox/services.py); the network stays
off. A connection carries one request, a JSON line of at most MAX_REQUEST bytes:

    {"op": "sources"}                                        -> {"sources": [...]}
    {"op": "query", "source": S, "sql": Q, "params": P}      -> {"columns": [...], "types": [...]}
                                                                {"rows": [[...], ...]}  (repeated)
                                                                {"done": true, "rows": n, "bytes": b, "ms": t, "truncated": note}
    anything wrong                                           -> {"error": "..."}

The URL of a source is read from the agent's environment when a query needs it and never leaves
this process; each query is recorded (QueryRecord) for the step's step.json."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from gitops_agent.core.state import QueryRecord
from gitops_agent.data.query import ClientGone, about_url, client_gone, redact, sender
from gitops_agent.data.sources import DESCRIBE_SQL, SourceError, connect, secrets_of
from gitops_agent.data.values import encode_line
from gitops_agent.data.worker import run_isolated

log = logging.getLogger("gitops_agent.data")

SOCKET_ENV = "WAREHOUSE_SOCKET"
MAX_REQUEST = 1_000_000  # bytes of one request line
MAX_SQL = 200_000  # characters of one statement
MAX_CONNECTIONS = 4  # queries running at once per action: each holds a database connection
MAX_OPEN = 16  # connections open at once per action, those still sending their request included
REQUEST_WAIT_S = 10.0  # for the whole request line, once connected (a trickle is cut off too)
SEND_WAIT_S = 30.0  # for the sources' reply to be taken in
STOP_WAIT_S = 15.0  # for all the handlers together, once the action ended and their queries were cancelled
MAX_RECORDS = 1000  # queries kept per step in step.json; past it they are counted
MAX_COLUMNS_SHOWN = 2000  # of a source's schema, for the prompt


class Broker:
    """Serves the configured sources (``data.sources``) to the actions of one sandbox."""

    name = "warehouse"
    env = SOCKET_ENV

    def __init__(self, sources: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
        self.sources = dict(sources)
        self._environ = environ if environ is not None else os.environ
        self._lock = threading.Lock()
        self._log: dict[int, list[QueryRecord]] = {}  # by the thread that ran the action: its step
        self._schemas: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def serve(self, path: Path) -> Iterator[None]:
        """Listen on ``path`` for one action; at the end stop and cancel every query still running."""
        listener = _Listener(self, Path(path), threading.get_ident())
        try:
            yield
        finally:
            listener.stop()

    def take_queries(self) -> list[QueryRecord]:
        """The queries of the actions this thread ran since the last call (one step's)."""
        with self._lock:
            return self._log.pop(threading.get_ident(), [])

    def url(self, name: str) -> str:
        var = self.sources[name].url_env
        url = self._environ.get(var, "")
        if not url:
            raise SourceError(
                f"source {name!r}: {var} is not set in the agent's environment "
                f"(on GitHub: add a line {var}=URL to the caller's data-sources-env secret)"
            )
        return url

    def describe(self, name: str) -> dict[str, Any]:
        """``{name, description, tables: [{name, columns: [{name, type}]}]}``, read once and kept."""
        with self._lock:
            if name in self._schemas:
                return self._schemas[name]
        cfg = self.sources[name]
        out: dict[str, Any] = {"name": name, "description": cfg.description, "tables": []}
        url = ""
        try:
            url = self.url(name)
            conn = connect(url, cfg.timeout_s)
            try:
                _cols, _types, fetch = conn.run(DESCRIBE_SQL, None)
                tables: dict[str, list[dict[str, str]]] = {}
                shown = 0
                while batch := fetch(500):
                    for schema, table, column, typ in batch:
                        full = table if schema in ("public", "main") else f"{schema}.{table}"
                        tables.setdefault(full, []).append({"name": column, "type": str(typ)})
                        shown += 1
                    if shown >= MAX_COLUMNS_SHOWN:
                        break
            finally:
                conn.close()
            out["tables"] = [{"name": t, "columns": c} for t, c in tables.items()]
        except SourceError as e:
            out["error"] = redact(about_url(str(e), cfg), secrets_of(url)) if url else str(e)
            return out  # not kept: the next call tries again
        with self._lock:
            self._schemas[name] = out
        return out

    def record(self, owner: int, rec: QueryRecord) -> None:
        """Keep ``rec`` for its step's step.json: the first MAX_RECORDS, then a count of the rest."""
        with self._lock:
            log_ = self._log.setdefault(owner, [])
            if len(log_) < MAX_RECORDS:
                log_.append(rec)
                return
            if len(log_) == MAX_RECORDS:
                log_.append(QueryRecord(source=rec.source, sql="", error=""))
            more = log_[-1]
            more.rows += 1
            n = "1 more query" if more.rows == 1 else f"{more.rows} more queries"
            more.error = f"{n} ran in this step, not recorded (the record keeps {MAX_RECORDS})"


class _Listener:
    """The socket of one action, an accept loop, and a thread per connection (MAX_OPEN). A query
    waits its turn among the action's MAX_CONNECTIONS running ones, within its source's timeout."""

    def __init__(self, broker: Broker, path: Path, owner: int) -> None:
        self.broker, self.path, self.owner = broker, path, owner
        self.stopping = threading.Event()
        self.handlers: list[threading.Thread] = []
        self.turns = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)  # the action's user only (the run directory is private too)
        self.sock.listen(16)
        self.sock.settimeout(0.1)  # the accept loop sees stop() within this
        self._t = threading.Thread(target=self._accept, daemon=True, name="warehouse-accept")
        self._t.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.handlers = [t for t in self.handlers if t.is_alive()]
            if len(self.handlers) >= MAX_OPEN:
                _refuse(client, f"at most {MAX_OPEN} connections to the warehouse at once; wait for a query to finish")
                continue
            t = threading.Thread(target=self._handle, args=(client,), daemon=True, name="warehouse-query")
            self.handlers.append(t)
            t.start()

    def stop(self) -> None:
        self.stopping.set()  # the guards cancel running queries on the server
        self._t.join(timeout=5)
        self.sock.close()
        end = time.monotonic() + STOP_WAIT_S
        for t in self.handlers:
            t.join(timeout=max(0.0, end - time.monotonic()))
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _handle(self, client: socket.socket) -> None:
        with client:
            try:
                self._serve_one(client)
            except Exception as e:  # noqa: BLE001 - never a silent hang: the client hears why
                log.warning("the warehouse broker failed on a request: %s", type(e).__name__)
                _reply_and_close(client, {"error": f"the broker failed: {type(e).__name__}"})

    def _serve_one(self, client: socket.socket) -> None:
        try:
            request = _read_request(client)
        except SourceError as e:
            _reply_and_close(client, {"error": str(e)})
            return
        client.settimeout(None)  # sends are bounded by the guard's cancel and the action's end
        send = sender(client)
        try:
            if request["op"] == "sources":
                self._sources(client, send)
                return
            name, sql, params = _query_fields(request, self.broker.sources)
        except SourceError as e:
            with contextlib.suppress(ClientGone):
                send({"error": str(e)})
            return
        except ClientGone:
            return
        try:
            url = self.broker.url(name)
        except SourceError as e:  # a well-formed query that could not run: on the record too
            self.broker.record(self.owner, QueryRecord(source=name, sql=sql, params=params, error=str(e)))
            with contextlib.suppress(ClientGone):
                send({"error": str(e)})
            return
        waited = self._turn(client, self.broker.sources[name].timeout_s)
        if waited is not None:
            self.broker.record(self.owner, QueryRecord(source=name, sql=sql, params=params, error=waited))
            with contextlib.suppress(ClientGone):
                send({"error": waited})
            return
        try:
            rec = run_isolated(name, self.broker.sources[name], url, sql, params, client, self.stopping)
        finally:
            self.turns.release()
        self.broker.record(self.owner, rec)

    def _sources(self, client: socket.socket, send: Any) -> None:
        """The sources' schemas: reading one connects to its database, so it takes a turn too."""
        waited = self._turn(client, max(s.timeout_s for s in self.broker.sources.values()))
        if waited is not None:
            send({"error": waited})
            return
        try:
            described = [self.broker.describe(n) for n in self.broker.sources]
        finally:
            self.turns.release()
        client.settimeout(SEND_WAIT_S)  # a client that never reads does not keep this thread past the action
        send({"sources": described})

    def _turn(self, client: socket.socket, timeout_s: float) -> str | None:
        """Wait for one of the action's MAX_CONNECTIONS turns (None: taken), or say why not."""
        end = time.monotonic() + timeout_s
        while not self.turns.acquire(timeout=0.1):
            if self.stopping.is_set():
                return "the code's run ended before the query's turn came"
            if client_gone(client):
                return "the client disconnected before the query's turn came"
            if time.monotonic() >= end:
                return (
                    f"at most {MAX_CONNECTIONS} queries run at once in one action, and none ended within "
                    f"{timeout_s:g} s (the source's timeout_s); run fewer at once"
                )
        return None


def _refuse(client: socket.socket, reason: str) -> None:
    """Reply to a connection that will not be served. What it already sent is read first: closing
    a socket with unread data resets it, and the client would see a reset instead of the reason."""
    with contextlib.suppress(OSError):
        client.settimeout(0.2)
        client.recv(MAX_REQUEST)
    _reply_and_close(client, {"error": reason})


def _reply_and_close(client: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        client.sendall(encode_line(message))
        client.close()


def _read_request(client: socket.socket) -> dict[str, Any]:
    end = time.monotonic() + REQUEST_WAIT_S
    buf = bytearray()
    try:
        while b"\n" not in buf:
            left = end - time.monotonic()
            if left <= 0:
                raise SourceError(f"the request did not arrive within {REQUEST_WAIT_S:g} s")
            client.settimeout(left)
            chunk = client.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_REQUEST:
                raise SourceError(f"the request is over {MAX_REQUEST} bytes")
    except TimeoutError:
        raise SourceError(f"the request did not arrive within {REQUEST_WAIT_S:g} s") from None
    except OSError as e:
        raise SourceError(f"reading the request: {e}") from None
    try:
        request = json.loads(bytes(buf).split(b"\n", 1)[0])
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise SourceError("the request is not one line of JSON") from None
    if not isinstance(request, dict) or request.get("op") not in ("sources", "query"):
        raise SourceError('the request must be {"op": "sources"} or {"op": "query", "source", "sql", "params"}')
    return request


def _query_fields(request: dict[str, Any], sources: Mapping[str, Any]) -> tuple[str, str, Any]:
    name, sql, params = request.get("source"), request.get("sql"), request.get("params")
    if not isinstance(name, str) or name not in sources:
        raise SourceError(f"unknown source {name!r}; the sources are: {', '.join(['files', *sorted(sources)])}")
    if not isinstance(sql, str) or not sql.strip():
        raise SourceError("sql must be a non-empty string")
    if len(sql) > MAX_SQL:
        raise SourceError(f"the statement is over {MAX_SQL} characters")
    if params is not None and not isinstance(params, (list, dict)):
        raise SourceError("params must be a list (for %s placeholders), a dict (for %(name)s) or None")
    values = params.values() if isinstance(params, dict) else params or []
    if not all(_scalar(v) or (isinstance(v, list) and all(_scalar(x) for x in v)) for v in values):
        raise SourceError("each parameter must be a number, a string, a boolean, null, or a list of those (for = any(%s))")
    return name, sql, params


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))
