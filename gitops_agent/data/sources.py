"""Connections to the databases behind the broker, each made for one query and closed after it:
PostgreSQL through psycopg 3, DuckDB files through duckdb. Every connection is read-only whatever
the role may do, runs exactly one statement, fetches in chunks and can be cancelled from another
thread."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import tempfile
from typing import Any, Callable, Protocol
from urllib.parse import unquote, urlsplit

EXTRA = "pip install 'gitops-agent[warehouse]'"
# the tables and columns the model is shown; information_schema lists only what the role may read
DESCRIBE_SQL = (
    "select table_schema, table_name, column_name, data_type from information_schema.columns "
    "where table_schema not in ('pg_catalog', 'information_schema') "
    "order by table_schema, table_name, ordinal_position"
)


# what DECLARE takes; anything else is a syntax error there, which the model is told the reason for
_QUERY_WORDS = ("select", "with", "values", "table")
ONE_STATEMENT = "exactly one SQL statement per query"
ONE_QUERY = " (only one read-only query can run: SELECT, WITH ... SELECT, VALUES or TABLE)"


Fetch = Callable[[int], list[tuple]]


DUCKDB_MEMORY = 1 << 30  # what a DuckDB query's process may use when no worker limit is given
CLIENT_CHECK = "SET LOCAL client_connection_check_interval = 1000"
MAX_ERROR = 1000  # characters of a database's message: it may quote a value the model made (100 MB of it)
# libpq's own words when it cannot hold what the server sent (no SQLSTATE: not the server's), and
# psycopg's reading of the error result libpq adds after the rows it could not hold
_LIBPQ_OOM = re.compile(r"^out of memory|^received \d+ results from command 'FETCH ")


class SourceError(Exception):
    """A readable reason a query failed, for the model; never holds the URL. ``out_of_memory``:
    the driver, on this side, could not hold the result (never a server's message);
    ``cancelled``: the server cancelled the statement (its timeout, or the guard's cancel)."""

    def __init__(self, message: str, out_of_memory: bool = False, cancelled: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory
        self.cancelled = cancelled


# what the model can do about a server's error, by its SQLSTATE
_HINTS = {
    "42P01": " (warehouse.sources() lists the tables and their columns)",
    "42703": " (warehouse.sources() lists the tables and their columns)",
}


def _pg_error(e: Exception, sql: str = "", params: Any = None) -> SourceError:
    text, state = _first_line(e), getattr(e, "sqlstate", None)
    words = sql.lstrip(" \t\r\n(").split(None, 1)
    if text.startswith("cannot insert multiple commands"):  # the extended protocol's words for `a; b`
        text, hint = ONE_STATEMENT, ONE_QUERY
    elif sql and not (words and words[0].lower() in _QUERY_WORDS):
        hint = ONE_QUERY
    elif state == "42601" and 'at or near "%"' in text and not params:
        hint = " (a %s or %(name)s placeholder needs params; write %% for a literal %)"
    else:
        hint = _HINTS.get(state or "", "")
    oom = state is None and bool(_LIBPQ_OOM.search(text))
    return SourceError(text + hint, out_of_memory=oom, cancelled=state == "57014")


class Connection(Protocol):
    def run(self, sql: str, params: Any) -> tuple[list[str], list[str], Fetch]:
        """Start ``sql``: its column names, their types, and ``fetch(n)``: up to n more rows ([] at the end)."""
        ...

    def cancel(self) -> None:
        """Stop the running statement (called from another thread)."""
        ...

    def close(self) -> None: ...


def _driver(module: str, kind: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SourceError(f"{kind} sources need the {module} package on the agent's host: {EXTRA}") from None


def connect(url: str, timeout_s: float, memory: int | None = None) -> Connection:
    """A read-only connection to ``url`` (postgresql://, postgres://, duckdb:///path, or with
    SQLAlchemy's +driver, e.g. postgresql+psycopg://); ``memory``:
    the bytes the process may use for it (a worker's limit), which DuckDB keeps within."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    dialect, plus, driver = scheme.partition("+")
    if (
        plus
        and dialect in ("postgresql", "postgres", "duckdb")
        and re.fullmatch(r"[a-z][a-z0-9_]{0,20}", driver)
        and url[len(scheme) :].startswith("://")  # without //, libpq would read the rest as key=value and quote it
    ):
        # SQLAlchemy's dialect+driver (postgresql+psycopg2://, duckdb+duckdb_engine://): the agent
        # has its own driver for the dialect, so the URL is read as the dialect's
        scheme, url = dialect, dialect + url[len(scheme) :]
    if scheme in ("postgresql", "postgres") and _netloc(url).count("@") > 1:
        # libpq reads the password to the first @, the rest as the host: its error would quote a
        # piece of the password that no redaction knows
        raise SourceError("cannot connect: the URL's user or password holds an unescaped @ (write it as %40)")
    if scheme in ("postgresql", "postgres"):
        return PostgresConnection(url, timeout_s)
    if scheme == "duckdb":
        return DuckDBConnection(url, timeout_s, memory)
    shown = repr(scheme) if re.fullmatch(r"[a-z][a-z0-9+.-]{0,20}", scheme) else "(not a URL)"  # never a password's text
    raise SourceError(f"unsupported database URL scheme {shown}: use postgresql:// or duckdb:///path/to/file.duckdb")


def _netloc(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""


def secrets_of(url: str) -> list[str]:
    """The parts of a URL that must never leave the host: itself, its password, and each piece of
    a user and password written with an unescaped @ (a driver may read them otherwise)."""
    out = [url]
    userinfo = _netloc(url).rsplit("@", 1)[0] if "@" in _netloc(url) else ""
    for piece in re.split(r"[@:]", userinfo)[1:]:  # not the user name alone
        if len(piece) >= 4:
            out += [piece, unquote(piece)]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        out += [password, unquote(password)]
    # a password given as an option (postgresql://u@h/db?password=..., or key=value text)
    for given in re.findall(r"password\s*=\s*([^&\s'\"]+)", url, re.I):
        out += [given, unquote(given)]
    return list(dict.fromkeys(s for s in out if s))


def _first_line(e: BaseException) -> str:
    diag = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = (primary or str(e) or type(e).__name__)[: MAX_ERROR * 4]
    line = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return line if len(line) <= MAX_ERROR else line[:MAX_ERROR] + f"... ({len(line) - MAX_ERROR}+ more characters)"


def _lenient_dates(conn: Any, psycopg: Any) -> None:
    """Dates and timestamps Python cannot hold ('infinity', '-infinity', a BC date) come back as
    PostgreSQL's text, not as an error that fails the whole query. Each wraps the loader already
    registered (psycopg's C one when installed: it cannot be subclassed, and the Python one is
    three times slower on a result of dates)."""
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    for name in ("date", "timestamp", "timestamptz"):
        info = conn.adapters.types.get(name)
        if info is None:
            continue
        inner_cls = conn.adapters.get_loader(info.oid, Format.TEXT)
        if inner_cls is None:
            continue

        class Lenient(Loader):
            _inner_cls = inner_cls

            def __init__(self, oid: int, context: Any = None) -> None:
                super().__init__(oid, context)
                self._inner = self._inner_cls(oid, context)

            def load(self, data: Any) -> Any:
                try:
                    return self._inner.load(data)
                except psycopg.DataError:
                    return bytes(data).decode("utf-8", "replace")

        conn.adapters.register_loader(name, Lenient)


class PostgresConnection:
    """One psycopg connection in a READ ONLY transaction with a statement timeout. The query is
    declared as a server-side cursor: DECLARE takes exactly one SELECT or VALUES (a second
    statement, a COMMIT, a SET, a DELETE is a syntax error), and the read-only transaction refuses
    what a SELECT can still write (FOR UPDATE, a data-modifying CTE, a function that writes)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        psycopg = _driver("psycopg", "PostgreSQL")
        self._errors = psycopg.Error
        ms = max(1, int(timeout_s * 1000))
        try:
            self.conn = psycopg.connect(
                url, autocommit=False, connect_timeout=max(2, min(int(timeout_s), 10)), application_name="gitops-agent-warehouse"
            )
            self.conn.read_only = True  # every transaction begins READ ONLY
            # one round trip (no parameters: the simple protocol runs them all): a later
            # transaction is read-only too; the server stops the statement at the source's timeout;
            # a broker stuck sending to a slow client still frees the server
            settings = (
                "SET default_transaction_read_only = on; "
                f"SET LOCAL statement_timeout = {ms}; SET LOCAL idle_in_transaction_session_timeout = {ms + 5000}"
            )
            # PostgreSQL 14+ on Linux: the server notices within a second that its client is gone
            # (a worker killed, the agent's host lost) and stops the statement then, not at its timeout
            check = f"; {CLIENT_CHECK}" if self.conn.info.server_version >= 140000 else ""
            try:
                self.conn.execute(settings + check)
            except psycopg.Error:
                if not check:
                    raise
                self.conn.rollback()  # a server that cannot check (not Linux): the rest still holds
                self.conn.execute(settings)
        except psycopg.Error as e:
            raise SourceError(f"cannot connect: {_first_line(e)}") from None
        _lenient_dates(self.conn, psycopg)

    def run(self, sql: str, params: Any) -> tuple[list[str], list[str], Fetch]:
        cur = self.conn.cursor(name="warehouse_query")
        try:
            cur.execute(sql, params if params else None)
        except self._errors as e:
            raise _pg_error(e, sql, params) from None
        types = self.conn.adapters.types
        desc = cur.description or []
        columns = [d.name for d in desc]
        names = [getattr(types.get(d.type_code), "name", str(d.type_code)) for d in desc]

        def fetch(n: int) -> list[tuple]:
            try:
                return cur.fetchmany(n)  # FETCH FORWARD n: the server sends n rows, no more
            except self._errors as e:
                raise _pg_error(e) from None

        return columns, names, fetch

    def cancel(self) -> None:
        try:
            if hasattr(self.conn, "cancel_safe"):
                self.conn.cancel_safe(timeout=5.0)
            else:  # psycopg before 3.2
                self.conn.cancel()
        except Exception:  # noqa: BLE001 - a cancel that fails leaves the server's statement_timeout
            pass

    def close(self) -> None:
        try:
            self.conn.close()  # in a transaction: the server rolls it back
        except Exception:  # noqa: BLE001
            pass


class DuckDBConnection:
    """A DuckDB file opened read-only, with no access to other files or the network from SQL (the
    broker runs on the host: read_csv('/etc/...') must not work)."""

    def __init__(self, url: str, timeout_s: float, memory: int | None = None) -> None:
        duckdb = _driver("duckdb", "DuckDB")
        self._errors = duckdb.Error
        path = url[len("duckdb://") :]
        if not path.startswith("/"):
            raise SourceError("a DuckDB URL names an absolute path: duckdb:///path/to/file.duckdb")
        if not os.path.isfile(path):
            raise SourceError("the source's DuckDB file does not exist on the agent's host")
        self._oom = duckdb.OutOfMemoryException
        # spills go to a directory of this query's own, removed at close
        self._spill = tempfile.mkdtemp(prefix="gitops-agent-duckdb-")
        try:
            # a quarter of the process's limit (a worker's, gitops_agent/data/worker.py): DuckDB
            # reserves about three times the memory it uses, and spills to disk past its limit
            limit = f"{max(32, (memory or DUCKDB_MEMORY) // 4 >> 20)}MB"
            config = {"threads": 2, "memory_limit": limit, "temp_directory": self._spill}
            config["max_temp_directory_size"] = "2GB"
            self.conn = duckdb.connect(path, read_only=True, config=config)
            # then no file or network from SQL (the temporary directory is set before), and
            # the query cannot turn it back on
            self.conn.execute("SET enable_external_access = false")
            self.conn.execute("SET lock_configuration = true")
        except duckdb.Error as e:
            shutil.rmtree(self._spill, ignore_errors=True)
            raise SourceError(f"cannot open: {_first_line(e)}") from None

    def run(self, sql: str, params: Any) -> tuple[list[str], list[str], Fetch]:
        try:
            if len(self.conn.extract_statements(sql)) != 1:
                raise SourceError(ONE_STATEMENT)
            self.conn.execute(sql, params if params else None)
        except self._errors as e:
            raise SourceError(_first_line(e), out_of_memory=isinstance(e, self._oom)) from None
        desc = self.conn.description or []
        columns, names = [d[0] for d in desc], [str(d[1]) for d in desc]

        def fetch(n: int) -> list[tuple]:
            try:
                return self.conn.fetchmany(n)
            except self._errors as e:
                raise SourceError(_first_line(e), out_of_memory=isinstance(e, self._oom)) from None

        return columns, names, fetch

    def cancel(self) -> None:
        try:
            self.conn.interrupt()
        except Exception:  # noqa: BLE001
            pass

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self._spill, ignore_errors=True)
