"""The SQL behind an answer: the queries each step's code ran on a data source (``queries`` in
its step.json, recorded by the broker, gitops_agent/data/broker.py), for report.md, so a
reviewer of the pull request can run them again."""

from __future__ import annotations

import json
from typing import Iterable

from gitops_agent.core.state import StepRecord
from gitops_agent.observe.render import md_text
from gitops_agent.safety.fences import fenced

MAX_QUERIES = 40  # a report stays readable; the rest is in each step.json
MAX_SQL_CHARS = 4000


def _line(q) -> str:
    facts = [f"`{md_text(q.source, 80)}`", f"{q.rows} row{'s' if q.rows != 1 else ''}", f"{q.ms} ms"]
    if q.truncated:
        facts.append(f"cut: {md_text(q.truncated, 200)}")
    if q.error:
        facts.append(f"error: {md_text(q.error, 300)}")
    return " · ".join(facts)


def queries_markdown(steps: Iterable[StepRecord]) -> str:
    """One entry per query, in the order the steps ran: source, rows, time, the SQL as a fenced
    block and its parameters; empty when no step queried a source."""
    out: list[str] = []
    shown = total = 0
    for rec in sorted(steps, key=lambda r: r.seq):
        for q in rec.queries:
            total += 1
            if shown >= MAX_QUERIES:
                continue
            shown += 1
            sql = q.sql if len(q.sql) <= MAX_SQL_CHARS else q.sql[:MAX_SQL_CHARS] + "\n-- … (cut)"
            entry = f"- node `{md_text(rec.node, 80)}`, step {rec.seq}: {_line(q)}\n\n{fenced(sql.strip(), 'sql')}"
            if q.params:  # a fence opens only at the start of a line: the parameters get their own
                entry += (
                    f"\n\nwith the parameters\n\n{fenced(json.dumps(q.params, ensure_ascii=False, default=str)[:500], 'json')}"
                )
            out.append(entry)
    if total > shown:
        out.append(f"{total - shown} more queries not shown here: each step's `step.json` lists them (`queries`).")
    return "\n\n".join(out)
