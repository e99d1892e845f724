"""dabench over PostgreSQL (the suite `dabench-pg`, written by make_suite.py beside this file): the
same questions and data, the data loaded into a database (the suite's `database:`,
gitops_agent/eval/database.py), the questions naming tables instead of files."""

from __future__ import annotations

import re

import yaml

PG = "dabench-pg"
# the scripted model's way in: every table fetched through the broker into CSV files in a scratch
# folder, in their files' order (_row), then the same solution as over the files
FETCH = (
    "import os, tempfile, warehouse\nos.chdir(tempfile.mkdtemp())\nos.mkdir('data')\n"
    "for _t in {tables!r}:\n"
    "    _df = warehouse.query('shop', f'select * from {{_t}} order by _row')\n"
    "    _df.drop(columns='_row').to_csv(f'data/{{_t}}.csv', index=False)\n"
)


def pg_suite(suite: dict, files: dict[str, str], tables: list[str]) -> dict[str, str]:
    """The same questions over the same data loaded into PostgreSQL (the suite's `database:`): the
    files become tables of the source `shop`, the questions name the tables."""
    questions = [
        {
            **q,
            "question": re.sub(r"data/(\w+)\.csv", r"the `\1` table of the `shop` database", q["question"]),
            "solution": FETCH.format(tables=tuple(tables)) + q["solution"],
        }
        for q in suite["questions"]
    ]
    pg = {
        "name": PG,
        "description": "dabench's questions over its data loaded into PostgreSQL; regenerate with dabench/make_suite.py",
        "data": "data",
        "database": {"source": "shop", "url_env": "DABENCH_EVAL_URL"},
        "questions": questions,
    }
    out = {f"../{PG}/{p}": text for p, text in files.items() if p.startswith("data/")}
    out[f"../{PG}/suite.yaml"] = "# written by dabench/make_suite.py: do not edit by hand\n" + yaml.safe_dump(
        pg, sort_keys=False, allow_unicode=True, width=120
    )
    return out
