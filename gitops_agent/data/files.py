"""The embedded source ``files``: SQL over the repository's CSV and Parquet files and the shared
data sets, answered by DuckDB inside the sandbox (brain/tools/warehouse.py), so no broker, no
credential and no host process reads them. The host only names the files for the prompts, from
the list of the tree it already has: a table is a file's path, queried as ``FROM 'data/x.csv'``."""

from __future__ import annotations

import re
from typing import Any

NAME = "files"
# a path shown in a system prompt: earlier steps of the model name files, so only plain names
_SHOWN = re.compile(r"[A-Za-z0-9_./ -]{1,200}")
SUFFIXES = (".csv", ".tsv", ".parquet", ".csv.gz", ".tsv.gz")
MAX_TABLES = 40  # in the prompt; warehouse.sources() in the sandbox lists them all
DESCRIPTION = (
    "the repository's CSV and Parquet files and the shared data sets, queried with DuckDB inside the "
    "sandbox: name a file in FROM, e.g. select count(*) from 'data/sales.csv'"
)


def files_source(paths: list[str], data_dir: str | None = None) -> dict[str, Any]:
    """The ``files`` source for the prompts: its data files (at most MAX_TABLES named)."""
    tables = [p for p in paths if p.lower().endswith(SUFFIXES) and _SHOWN.fullmatch(p)]
    out: dict[str, Any] = {
        "name": NAME,
        "description": DESCRIPTION + (f"; shared data sets under {data_dir}" if data_dir else ""),
        "tables": [{"name": f"'{p}'", "columns": []} for p in tables[:MAX_TABLES]],
    }
    if len(tables) > MAX_TABLES:
        out["more"] = len(tables) - MAX_TABLES
    return out
