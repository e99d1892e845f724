"""Small helpers for CSV tables without pandas: load rows with numbers parsed, and group them.

A brain tool: any module in the brain's tools/ folder (the packaged one, or tools/*.py on the
repository's agent/brain branch) can be imported by the model's code in the sandbox
(`import tabular`). Its docstring and public functions are listed in the executor's prompt.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from typing import Any, Iterable

__all__ = ["load_csv", "to_number", "group_stats"]


def to_number(value: Any) -> float | None:
    """The value as a float, or None when it is empty or not a number (e.g. "n/a", "12,5x")."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    text = str(value).strip().replace(",", "")
    if not text:
        return None
    try:
        x = float(text)
    except ValueError:
        return None
    return None if math.isnan(x) else x


def load_csv(path: str, numeric: Iterable[str] = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a CSV file into (good rows, bad rows): columns named in `numeric` are parsed with
    to_number; a row where one of them is not a number goes to the bad rows (kept whole)."""
    numeric = list(numeric)
    good, bad = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed = dict(row)
            ok = True
            for col in numeric:
                x = to_number(row.get(col))
                if x is None:
                    ok = False
                parsed[col] = x
            (good if ok else bad).append(parsed if ok else row)
    return good, bad


def group_stats(rows: Iterable[dict[str, Any]], by: str, value: str) -> list[dict[str, Any]]:
    """Per value of column `by`: count, sum, mean, min and max of column `value` (numbers only),
    sorted by mean, highest first."""
    groups: dict[Any, list[float]] = defaultdict(list)
    for r in rows:
        x = to_number(r.get(value))
        if x is not None:
            groups[r.get(by)].append(x)
    out = [
        {by: k, "count": len(v), "sum": sum(v), "mean": sum(v) / len(v), "min": min(v), "max": max(v)} for k, v in groups.items()
    ]
    return sorted(out, key=lambda d: -d["mean"])
