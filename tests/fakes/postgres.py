"""A real PostgreSQL server for the warehouse tests (the fixture `pg`, registered in
tests/conftest.py): a fresh cluster in a temporary directory,
started on 127.0.0.1 on a free port, with a role `analyst` whose password is a canary and which
owns a table `orders` (so the read-only rules are tested against a role that could write).
Skipped, with the reason, where PostgreSQL is not installed or cannot start."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ORDERS = 3000


@dataclass
class Postgres:
    port: int
    password: str
    sockdir: str
    bindir: str

    @property
    def url(self) -> str:
        return f"postgresql://analyst:{self.password}@127.0.0.1:{self.port}/shop"

    def psql(self, sql: str, db: str = "shop") -> str:
        """Run ``sql`` as the superuser over the Unix socket (not through the broker), in ``db``."""
        r = subprocess.run(
            ["runuser", "-u", "postgres", "--", f"{self.bindir}/psql", "-h", self.sockdir, "-p", str(self.port), "-d", db]
            + ["-v", "ON_ERROR_STOP=1", "-AtXq", "-c", sql],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return r.stdout.strip()


def _bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=timeout)


SETUP = f"""
create role analyst login password '{{password}}';
create database shop owner analyst;
\\c shop
set role analyst;
create table orders (id int primary key, customer text, amount numeric(10, 2), placed date);
insert into orders select i, 'c' || (i % 50), (i % 97) * 1.25, date '2024-01-01' + (i % 365)
  from generate_series(1, {ORDERS}) i;
create function wipe() returns int language sql volatile as 'delete from orders returning 1';
"""


class Unavailable(Exception):
    """PostgreSQL cannot run here; the message says why."""


@contextlib.contextmanager
def postgres_server():
    """A fresh PostgreSQL cluster on 127.0.0.1 with the role `analyst` (a canary password) owning
    the database `shop` and its table `orders`; stopped and removed at the end. Unavailable: why
    it cannot run here (not installed, not root, initdb or start failed)."""
    bindir = _bindir()
    if bindir is None or shutil.which("runuser") is None:
        raise Unavailable("PostgreSQL is not installed here (no /usr/lib/postgresql/*/bin/initdb, or no runuser)")
    if os.geteuid() != 0:
        raise Unavailable("the PostgreSQL fixture runs initdb as the postgres user, which needs root")
    root = Path(tempfile.mkdtemp(prefix="warehouse-pg-"))
    data, sockdir = root / "data", root / "sock"
    data.mkdir()
    sockdir.mkdir()
    shutil.chown(root, "postgres")
    shutil.chown(data, "postgres")
    shutil.chown(sockdir, "postgres")
    port, password = _free_port(), f"canary-{secrets.token_hex(12)}"
    r = _as_postgres(f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
    if r.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"PostgreSQL's initdb failed here: {r.stderr.strip()[-300:]}")
    # passwords over TCP (the broker's way in), trust over the socket (the test's own psql)
    (data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    opts = f"-h 127.0.0.1 -p {port} -k {sockdir} -c fsync=off -c full_page_writes=off -c max_connections=40"
    r = _as_postgres(f"{bindir}/pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30", "-o", opts, "start")
    if r.returncode != 0:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise Unavailable(f"PostgreSQL could not start here: {(r.stderr + log).strip()[-300:]}")
    server = Postgres(port, password, str(sockdir), bindir)
    try:
        setup = subprocess.run(
            ["runuser", "-u", "postgres", "--", f"{bindir}/psql", "-h", str(sockdir), "-p", str(port), "-d", "postgres"]
            + ["-v", "ON_ERROR_STOP=1", "-qX"],
            input=SETUP.format(password=password),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert setup.returncode == 0, setup.stderr
        yield server
    finally:
        _as_postgres(f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg():
    try:
        with postgres_server() as server:
            yield server
    except Unavailable as e:
        pytest.skip(str(e))
