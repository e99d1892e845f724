"""Each query runs in a worker process under a hard memory limit, so the agent's own memory stays
bounded whatever the database sends: PostgreSQL sends a fetched row whole, and one value may be a
gigabyte. A worker is forked for each query by a small fork server (started once per agent process,
single-threaded, the drivers already imported: a fork costs milliseconds, an interpreter a quarter
of a second). The worker gets the client's socket and a control socket of its own; the URL comes
over the control socket, never on a command line or in an environment.

    broker --(client fd, control fd)--> fork server --fork--> worker
    broker <--control: {"pid"}, then {"record"}-- worker --rows--> client (the sandbox)

The broker half-closes the control socket to stop the worker's query (the action ended); the
worker's guard then cancels it on the server. A worker past its deadline is killed."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gitops_agent.core.state import QueryRecord
from gitops_agent.data.values import encode_line

MEMORY_BYTES = 1 << 30  # what one query may use, besides the interpreter it starts with
KILL_GRACE_S = 15.0  # past the query's own timeout, before a worker that did not stop is killed
STOP_GRACE_S = 5.0  # after the action ended (its guard cancels at once)
WORKER_GONE = "the query's worker ended without an answer (it crashed, ran out of memory or was killed)"
MAX_WORKERS = 4  # at once in the agent, across actions: the agent's memory is bounded by this many limits
MAX_CONTROL = 1_000_000  # bytes a worker may send before its record ends (query.py keeps a record small)
# what a worker keeps of the agent's environment: the locale, the home (libpq's ~/.pgpass), the
# certificates, libpq's own PG* settings; not the model's key, the GitHub token or other sources' URLs
_ENV_KEPT = re.compile(r"(PATH|HOME|USER|LOGNAME|LANG|LANGUAGE|LC_[A-Z]+|TZ|TMPDIR|PG[A-Z]+|SSL_CERT_(FILE|DIR))")
_PRELOAD = ("psycopg", "duckdb", "gitops_agent.data.query", "gitops_agent.settings.data_sources")


class _Server:
    """The fork server's process and the socket the broker hands it file descriptors on."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = str(Path(__file__).resolve().parents[2])  # where gitops_agent is, installed or not
        # the working directory is the model's: it leaves the path before anything is imported;
        # the package's own directory joins it in front unless it is a site directory already there
        code = (
            "import sys; p = [d for d in sys.path if d not in ('', '.')]; "
            "sys.path[:] = p if sys.argv[1] in p else [sys.argv[1], *p]; "
            "from gitops_agent.data.worker import serve; serve(int(sys.argv[2]))"
        )
        env = {k: v for k, v in os.environ.items() if _ENV_KEPT.fullmatch(k)}  # not the agent's keys and tokens
        env["MALLOC_ARENA_MAX"] = "2"  # threads share arenas: less address space under the limit
        self.proc = subprocess.Popen(
            [sys.executable, "-E", "-c", code, root, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the agent's output is its own (--json)
            env=env,
        )
        theirs.close()
        self.sock = ours

    def hand(self, fds: list[int]) -> None:
        socket.send_fds(self.sock, [b"q"], fds)


_server: _Server | None = None
_slots = threading.BoundedSemaphore(MAX_WORKERS)
log = logging.getLogger("gitops_agent.data")
_server_lock = threading.Lock()


def _hand_over(fds: list[int]) -> None:
    """Give the fork server a query's sockets, (re)starting it if it is not running."""
    global _server
    with _server_lock:
        for attempt in range(2):
            if _server is None or _server.proc.poll() is not None:
                _server = _Server()
            try:
                _server.hand(fds)
                return
            except OSError:
                if attempt:
                    raise
                _server = None


def serve(fd: int) -> None:
    """The fork server's loop: for each pair of descriptors, fork a worker; exit when the agent's end closes."""
    for module in _PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(module)
    _warm_libpq()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    sock = socket.socket(fileno=fd)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 2)
        except OSError:
            return
        if not msg:
            return
        if len(fds) != 2:
            for f in fds:
                os.close(f)
            continue
        if os.fork() == 0:
            code = 1
            try:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _work(fds[0], fds[1])
                code = 0
            finally:
                os._exit(code)
        for f in fds:
            os.close(f)


def _warm_libpq() -> None:
    """Load libpq's crypto once, here, not in every worker: the first SCRAM login of a process
    costs about 2 ms more than the next (a forked child measured 10.5 ms, then 8.5 with this)."""
    with contextlib.suppress(Exception):
        from psycopg import pq

        conn = pq.PGconn.connect_start(b"host=/nonexistent port=1")  # fails at once; no server is asked
        try:
            conn.encrypt_password(b"warm", b"warm", b"scram-sha-256")
        finally:
            conn.finish()


def _limit_memory(extra: int) -> None:
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * resource.getpagesize()
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra if hard == resource.RLIM_INFINITY else min(hard, size + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _read_line(sock: socket.socket) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _work(client_fd: int, control_fd: int) -> None:
    from gitops_agent.data.query import run_query, sender
    from gitops_agent.settings.data_sources import DataSource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file with the URL in it, wherever a crash is
    client, control = socket.socket(fileno=client_fd), socket.socket(fileno=control_fd)
    control.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    job = json.loads(_read_line(control))
    _limit_memory(job["memory"])
    stopping = threading.Event()

    def watch() -> None:  # anything more on the control socket, or its end: the action ended
        with contextlib.suppress(OSError):
            control.recv(1)
        stopping.set()

    threading.Thread(target=watch, daemon=True).start()
    cfg = DataSource(**job["cfg"])
    rec = run_query(job["source"], cfg, job["url"], job["sql"], job["params"], sender(client), client, stopping, job["memory"])
    control.sendall(json.dumps({"record": rec.model_dump(mode="json")}).encode() + b"\n")


def run_isolated(
    name: str, cfg: Any, url: str, sql: str, params: Any, client: socket.socket, stopping: threading.Event
) -> QueryRecord:
    """Run the query in a worker, under MEMORY_BYTES, that streams its rows to ``client``; its
    record. At most MAX_WORKERS at once in the agent (others wait their turn within their
    timeout); stopped when ``stopping`` is set, killed when it overstays."""
    t0 = time.monotonic()
    if _turn(cfg.timeout_s, stopping):
        try:
            reply = _in_worker(name, cfg, url, sql, params, client, stopping)
        finally:
            _slots.release()
    else:
        reply = {"error": f"the broker is running {MAX_WORKERS} queries already, its limit; try again when one has ended"}
    if "record" in reply:
        return QueryRecord(**reply["record"])
    rec = QueryRecord(source=name, sql=sql, params=params, error=reply["error"], ms=int((time.monotonic() - t0) * 1000))
    # the worker could not say it: the broker does, on a line of its own (the worker may have
    # died in the middle of one), and within a short time (the client may not be reading)
    with contextlib.suppress(OSError):
        client.settimeout(2.0)
        client.sendall((b"\n" if reply.get("cut") else b"") + encode_line({"error": rec.error}))
    return rec


def _turn(timeout_s: float, stopping: threading.Event) -> bool:
    end = time.monotonic() + timeout_s
    while not stopping.is_set() and time.monotonic() < end:
        if _slots.acquire(timeout=0.1):
            return True
    return False


def _in_worker(name: str, cfg: Any, url: str, sql: str, params: Any, client: socket.socket, stopping: threading.Event) -> dict:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with theirs:
            _hand_over([client.fileno(), theirs.fileno()])
        job = {"source": name, "cfg": cfg.model_dump(mode="json"), "url": url, "sql": sql, "params": params}
        ours.sendall(json.dumps({**job, "memory": MEMORY_BYTES}).encode() + b"\n")
        return _await(ours, cfg.timeout_s, stopping)
    except OSError as e:
        return {"error": f"the broker could not start a worker for the query: {e.strerror or e}"}
    except Exception as e:  # noqa: BLE001 - the handler still answers and records
        log.warning("the warehouse broker failed running a query: %s", type(e).__name__)
        return {"error": f"the broker failed running the query: {type(e).__name__}", "cut": True}
    finally:
        ours.close()


def _await(control: socket.socket, timeout_s: float, stopping: threading.Event) -> dict[str, Any]:
    """The worker's record, or ``{"error", "cut"}`` when it died or was killed without one."""
    deadline = time.monotonic() + timeout_s + KILL_GRACE_S
    buf, pid, stopped = bytearray(), 0, False
    control.settimeout(0.1)  # a timeout, not select(): the broker may hold descriptors past 1024
    while True:
        try:
            chunk = control.recv(1 << 16)
            if not chunk:
                return {"error": WORKER_GONE, "cut": True}
            buf += chunk
        except TimeoutError:
            pass
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf = bytearray(rest)
            message = json.loads(line)
            if "pid" in message:
                pid = int(message["pid"])
            elif "record" in message:
                return message
        if len(buf) > MAX_CONTROL:
            deadline = 0.0  # a record is small (query.py cuts it): this is not one
        if stopping.is_set() and not stopped:
            stopped = True
            deadline = min(deadline, time.monotonic() + STOP_GRACE_S)
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_WR)  # the worker's guard cancels the query
        if time.monotonic() > deadline:
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            return {"error": "the query's worker did not finish in time and was killed", "cut": True}
