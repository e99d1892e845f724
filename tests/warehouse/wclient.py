"""The warehouse protocol spoken from the test process (the sandbox's client needs pandas, which the
agent's environment does not have): a broker served on a short socket path, and a raw client."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from gitops_agent.data.broker import Broker
from gitops_agent.settings.data_sources import DataSource


@contextlib.contextmanager
def serving(url: str, more: dict | None = None, **cfg):
    """A broker with one source `shop` at ``url`` (and ``more``: name -> settings, at the same
    URL), listening as for one action: (broker, socket path)."""
    sources = {"shop": DataSource(url_env="SHOP_DB_URL", **cfg)}
    sources.update({n: DataSource(url_env="SHOP_DB_URL", **c) for n, c in (more or {}).items()})
    broker = Broker(sources, environ={"SHOP_DB_URL": url})
    d = Path(tempfile.mkdtemp(prefix="wh-"))  # sun_path is short: not under a test's long tmp_path
    try:
        with broker.serve(d / "w.sock"):
            yield broker, str(d / "w.sock")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def ask(path: str, message: dict, timeout: float = 60) -> list[dict]:
    """Send one request; every reply line until the broker closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(message).encode() + b"\n")
        with s.makefile("rb") as f:
            return [decode(line) for line in f if line.strip()]


def decode(line: bytes) -> dict:
    """A reply line; one cut off (its worker died while sending it) as ``{"broken": its start}``."""
    try:
        return json.loads(line)
    except ValueError:
        return {"broken": line[:200].decode(errors="replace")}


def query(path: str, sql: str, params=None, timeout: float = 60) -> tuple[list[list], dict]:
    """(rows, the last reply: done or error)."""
    replies = ask(path, {"op": "query", "source": "shop", "sql": sql, "params": params}, timeout)
    rows = [r for m in replies if isinstance(m.get("rows"), list) for r in m["rows"]]
    return rows, replies[-1]


def wait_until(check, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(field + r":\s+(\d+)", f.read()).group(1)) / 1024


def peak_reset() -> float:
    """Start this process's peak resident memory afresh (Linux: 5 in clear_refs resets VmHWM);
    the resident memory now, in MB, to measure growth from."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_mb("VmRSS")


def peak_mb() -> float:
    """This process's peak resident memory since peak_reset(), in MB."""
    return _status_mb("VmHWM")


ACTIVITY = "select count(*) from pg_stat_activity where application_name = 'gitops-agent-warehouse'"


def running(pg) -> int:
    """The broker's statements running on the server (a cursor's rows are made by its FETCH, so
    the query's own text is not what pg_stat_activity shows)."""
    return int(pg.psql(ACTIVITY + " and state = 'active'"))


def sessions(pg) -> int:
    """The broker's sessions open on the server."""
    return int(pg.psql(ACTIVITY))
