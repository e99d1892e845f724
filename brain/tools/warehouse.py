"""SQL over the repository's databases (`data.sources`) and its data files (source `files`); results as DataFrames.

A brain tool: the model's code does `import warehouse`. The database's credentials never enter the
sandbox: each call goes over a Unix socket (its path in $WAREHOUSE_SOCKET) to the agent, which runs
the query read-only, with a time limit and caps on rows and bytes. The source `files` needs no
agent: DuckDB answers it here, over the working tree's CSV and Parquet files and the shared data
sets ($AGENT_DATA_DIR), a file named in FROM (`select * from 'data/sales.csv'`). Only the standard
library, pandas and duckdb are used (this runs in the workbench).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

__all__ = ["WarehouseError", "sources", "query"]

SOCKET_ENV = "WAREHOUSE_SOCKET"
MAX_REQUEST = 1_000_000  # bytes of one request line: the broker's limit (gitops_agent/data/broker.py)
FILES = "files"
_DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".csv.gz", ".tsv.gz")
_MAX_FILES = 500
_DATE_TYPES = ("date", "timestamp", "timestamptz", "timestamp with time zone", "timestamp without time zone")


class WarehouseError(Exception):
    """A query or a listing failed; the message is the database's or the broker's reason."""


def _request(message: dict[str, Any]):
    path = os.environ.get(SOCKET_ENV)
    if not path:
        raise WarehouseError("no data sources are configured for this repository (data.sources in .github/gitops-agent.yml)")
    try:
        data = json.dumps(message, default=_plain).encode() + b"\n"
    except (TypeError, ValueError) as e:
        raise WarehouseError(f"params: {e}") from None
    if len(data) > MAX_REQUEST:
        raise WarehouseError(
            f"the request is {len(data):,} bytes; the broker takes at most {MAX_REQUEST:,} "
            "(pass fewer parameters, or join with a table or a VALUES list in the SQL)"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise WarehouseError(f"cannot reach the warehouse broker at {path}: {e}") from None
    broken = False
    with sock, sock.makefile("rb") as lines:
        try:
            sock.sendall(data)
        except OSError:  # the broker refused the request before it was all sent: its reason follows
            pass
        for line in _lines(lines):
            if not line.strip():
                continue
            try:
                reply = json.loads(line)
            except ValueError:  # a line cut off when the broker's worker died: its reason follows
                broken = True
                continue
            if "error" in reply:
                raise WarehouseError(reply["error"])
            if not broken:
                yield reply
    if broken:
        raise WarehouseError("the broker's answer broke off in the middle (its worker stopped)")


def _plain(v: Any) -> Any:
    """A parameter as JSON: numpy's and pandas' numbers (a value taken from a DataFrame), dates as
    ISO text, a Decimal as text, an array or a Series as a list."""
    import datetime as dt
    import decimal

    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=repr)
    if getattr(getattr(v, "dtype", None), "kind", "") == "M":  # numpy datetime64: tolist() would be nanoseconds
        return v.astype("datetime64[us]").astype(str).tolist()
    if hasattr(v, "tolist"):  # numpy scalars and arrays, pandas Series and Index
        out = v.tolist()
        return out.isoformat() if isinstance(out, (dt.date, dt.time)) else out
    raise TypeError(
        f"a {type(v).__name__} cannot be sent; each parameter must be a number, a string, a boolean, None or a list of those"
    )


def _as_dates(df, i: int, name: str) -> None:
    """Column ``i`` as datetimes, unless a value would be lost: 'infinity' or a BC date, which
    pandas cannot hold, keep the column as the database's text (and a note says so)."""
    import pandas as pd

    text = df.iloc[:, i]
    # pandas 2 reads ISO 8601 by name; an older pandas (a repository's own requirements) infers it
    iso = {"format": "ISO8601"} if int(pd.__version__.split(".")[0]) >= 2 else {}
    try:
        dates = pd.to_datetime(text, errors="coerce", **iso)
    except (ValueError, TypeError):  # offsets that differ (a summer and a winter time): as UTC
        dates = pd.to_datetime(text, errors="coerce", utc=True, **iso)
    if not pd.api.types.is_datetime64_any_dtype(dates):
        dates = pd.to_datetime(text, errors="coerce", utc=True, **iso)
    lost = text[dates.isna() & text.notna()]
    if len(lost):
        print(f"warehouse: column {name!r} kept as text: pandas cannot hold {lost.iloc[0]!r} as a date", file=sys.stderr)
        return
    df.isetitem(i, dates)


def _lines(f):
    """The reply's lines; a connection the broker reset ends them (the caller says what is missing)."""
    try:
        yield from f
    except OSError:
        return


def sources() -> list[dict[str, Any]]:
    """The sources: [{name, description, tables: [{name, columns: [{name, type}]}]}]; `files` first."""
    out = [_files_source()]
    if os.environ.get(SOCKET_ENV):
        for reply in _request({"op": "sources"}):
            return out + reply["sources"]
        raise WarehouseError("the broker closed the connection without an answer")
    return out


def _data_files() -> list[str]:
    """The CSV and Parquet files of the working tree (relative) and the shared data sets (absolute)."""
    found: list[str] = []
    roots = [(".", True)] + ([(os.environ["AGENT_DATA_DIR"], False)] if os.environ.get("AGENT_DATA_DIR") else [])
    for root, relative in roots:
        for d, dirs, names in os.walk(root):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))  # .git, .agent: not data
            for n in sorted(names):
                if n.lower().endswith(_DATA_SUFFIXES):
                    p = os.path.join(d, n)
                    found.append(os.path.relpath(p) if relative else p)
                    if len(found) >= _MAX_FILES:
                        return found
    return found


def _files_source() -> dict[str, Any]:
    tables = []
    con = _duckdb()
    try:
        for path in _data_files():
            try:
                desc = con.execute(f"describe select * from {_quote(path)}").fetchall()
                tables.append({"name": _quote(path), "columns": [{"name": c[0], "type": c[1]} for c in desc]})
            except Exception as e:  # noqa: BLE001 - a file DuckDB cannot read is listed with why
                tables.append({"name": _quote(path), "columns": [], "error": str(e).splitlines()[0][:300]})
    finally:
        con.close()
    about = "the working tree's CSV and Parquet files and the shared data sets (DuckDB, here)"
    return {"name": FILES, "description": about, "tables": tables}


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def _duckdb():
    try:
        import duckdb
    except ImportError:
        raise WarehouseError("the source `files` needs duckdb, which the workbench has; this sandbox runs without it") from None
    # what the sandbox allows, not the machine's cores and 80% of its memory
    return duckdb.connect(":memory:", config={"threads": 2, "memory_limit": "1GB"})


def _files_query(sql: str, params: list | dict | None):
    import duckdb

    con = _duckdb()
    try:
        return con.execute(sql, params if params else None).df()
    except duckdb.Error as e:
        raise WarehouseError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from None
    finally:
        con.close()


def query(source: str, sql: str, params: list | dict | None = None):
    """Run ONE read-only SQL statement on `source` and return a pandas DataFrame. Placeholders: `%s`
    with a list, `%(name)s` with a dict (PostgreSQL); `?` or `$1` (DuckDB, and `files`). A result over
    the source's caps is cut: a note is printed and kept in `df.attrs["warehouse_note"]`. Parameters
    may be values taken from a DataFrame (numpy numbers, Timestamps, arrays); a request is at most
    1 MB. Date columns come back as datetimes, or as the database's text when a value is one pandas
    cannot hold ('infinity', a BC date). At most 4 queries of one run go at once; more wait their turn."""
    if source == FILES:
        return _files_query(sql, params)
    import pandas as pd

    columns: list[str] = []
    types: list[str] = []
    rows: list[list[Any]] = []
    done: dict[str, Any] | None = None
    for reply in _request({"op": "query", "source": source, "sql": sql, "params": params}):
        if reply.get("done"):  # its "rows" is the count
            done = reply
        elif "columns" in reply:
            columns, types = reply["columns"], reply.get("types", [])
        elif "rows" in reply:
            rows.extend(reply["rows"])
    if done is None:
        raise WarehouseError("the broker closed the connection before the result was complete")
    df = pd.DataFrame(rows, columns=columns)
    for i, (name, typ) in enumerate(zip(columns, types)):
        if str(typ).lower() in _DATE_TYPES:
            _as_dates(df, i, name)
    if done.get("truncated"):
        df.attrs["warehouse_note"] = done["truncated"]
        print(f"warehouse: {done['truncated']}", file=sys.stderr)
    return df
