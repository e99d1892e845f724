"""A suite's data in a database (``database:`` of a suite, e.g. ``dabench-pg``): each CSV file of
its data folder becomes a table of the same name in the PostgreSQL database whose URL is in
``url_env`` (a scratch database: its tables of those names are replaced), typed from its values
(bigint, double precision, date, else text; an empty field is NULL), with a first column ``_row``
that keeps the file's order. The questions' repositories then hold no data: the model's code
queries the source through the broker, as it would a team's warehouse."""

from __future__ import annotations

import csv
import re
from datetime import date
from pathlib import Path

from gitops_agent.core.errors import ConfigError
from gitops_agent.data.query import redact
from gitops_agent.data.sources import secrets_of

_INT = re.compile(r"-?\d{1,18}")
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def column_type(values: list[str]) -> str:
    """The narrowest type every non-empty value fits."""
    present = [v for v in values if v != ""]
    if present and all(_INT.fullmatch(v) for v in present):
        return "bigint"
    try:
        if present:
            [float(v) for v in present]
            return "double precision"
    except ValueError:
        pass
    try:
        if present and all(len(v) == 10 for v in present):
            [date.fromisoformat(v) for v in present]
            return "date"
    except ValueError:
        pass
    return "text"


def load_tables(data_dir: Path, url: str) -> list[str]:
    """Replace a table per CSV file of ``data_dir`` in the database at ``url``; their names."""
    import psycopg
    from psycopg import sql

    files = sorted(p for p in data_dir.glob("*.csv") if p.is_file() and not p.is_symlink() and _TABLE.fullmatch(p.stem))
    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
            for path in files:
                with path.open(newline="") as f:
                    header, *rows = list(csv.reader(f))
                types = [column_type([r[i] if i < len(r) else "" for r in rows]) for i in range(len(header))]
                table = sql.Identifier(path.stem)
                cols = [sql.SQL("{} {}").format(sql.Identifier(h), sql.SQL(t)) for h, t in zip(header, types)]
                cur.execute(sql.SQL("drop table if exists {}").format(table))
                cur.execute(sql.SQL("create table {} (_row integer primary key, {})").format(table, sql.SQL(", ").join(cols)))
                with cur.copy(sql.SQL("copy {} from stdin").format(table)) as copy:
                    for n, r in enumerate(rows):
                        copy.write_row([n, *[(v if v != "" else None) for v in r]])
    except psycopg.Error as e:
        text = redact(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, secrets_of(url))
        raise ConfigError(f"loading the suite's tables into its database: {text}") from None
    return [p.stem for p in files]
