"""Query the repository's databases (its `data.sources`) with SQL; results come back as pandas DataFrames.

A brain tool: the model's code does `import warehouse`. The database's credentials never enter the
sandbox: each call goes over a Unix socket (its path in $WAREHOUSE_SOCKET) to the agent, which runs
the query read-only, with a time limit and caps on rows and bytes. Only the standard library and
pandas are used (this runs in the workbench).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

__all__ = ["WarehouseError", "sources", "query"]

SOCKET_ENV = "WAREHOUSE_SOCKET"
_DATE_TYPES = ("date", "timestamp", "timestamptz", "timestamp with time zone", "timestamp without time zone")


class WarehouseError(Exception):
    """A query or a listing failed; the message is the database's or the broker's reason."""


def _request(message: dict[str, Any]):
    path = os.environ.get(SOCKET_ENV)
    if not path:
        raise WarehouseError("no data sources are configured for this repository (data.sources in .github/gitops-agent.yml)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise WarehouseError(f"cannot reach the warehouse broker at {path}: {e}") from None
    sock.sendall(json.dumps(message).encode() + b"\n")
    with sock, sock.makefile("rb") as lines:
        for line in lines:
            reply = json.loads(line)
            if "error" in reply:
                raise WarehouseError(reply["error"])
            yield reply


def sources() -> list[dict[str, Any]]:
    """The sources: [{name, description, tables: [{name, columns: [{name, type}]}]}]."""
    for reply in _request({"op": "sources"}):
        return reply["sources"]
    raise WarehouseError("the broker closed the connection without an answer")


def query(source: str, sql: str, params: list | dict | None = None):
    """Run ONE read-only SQL statement on `source` and return a pandas DataFrame. Placeholders: `%s`
    with a list, `%(name)s` with a dict (PostgreSQL); `?` or `$1` (DuckDB). A result over the
    source's caps is cut: a note is printed and kept in `df.attrs["warehouse_note"]`."""
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
    for name, typ in zip(columns, types):
        if str(typ).lower() in _DATE_TYPES:
            df[name] = pd.to_datetime(df[name], errors="coerce")
    if done.get("truncated"):
        df.attrs["warehouse_note"] = done["truncated"]
        print(f"warehouse: {done['truncated']}", file=sys.stderr)
    return df
