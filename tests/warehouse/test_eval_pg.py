"""`gitops-agent eval dabench-pg`: dabench's questions over its data loaded into a real PostgreSQL
(the suite's `database:`); each question's repository holds no data, the model's code queries the
source through the broker in bubblewrap, and the answers check."""

from __future__ import annotations

import json

import pytest

from gitops_agent.cli.main import main
from gitops_agent.core.errors import ConfigError
from gitops_agent.eval.suite import load_suite
from gitops_agent.sandbox.bubblewrap import bwrap_works

pytestmark = pytest.mark.skipif(not bwrap_works(), reason="bwrap is missing or cannot create namespaces here")

# line counts, NULLs, a month, a join, an order-dependent slope, days between dates, a ranked list
ONLY = "q01,q05,q10,q13,q22,q27,q28"


@pytest.fixture
def scratch_db(pg, monkeypatch):
    pg.psql("drop database if exists dabench")
    pg.psql("create database dabench owner analyst")
    url = pg.url.rsplit("/", 1)[0] + "/dabench"
    monkeypatch.setenv("DABENCH_EVAL_URL", url)
    return url


def test_dabench_over_postgresql_passes_with_the_data_only_in_the_database(scratch_db, pg, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["eval", "dabench-pg", "--model", "scripted", "--out", str(out), "--no-commit", "--workers", "2"]
    rc = main([*args, "--only", ONLY, "--min-pass-rate", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    res = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in res["results"]] == ONLY.split(",") and all(r["passed"] for r in res["results"]), text
    # the data was loaded, typed, in its files' order
    assert pg.psql("select count(*) from orders", db="dabench") == "200"
    types = pg.psql("select string_agg(data_type, ',' order by ordinal_position) from information_schema.columns "
                    "where table_name = 'orders'", db="dabench")  # fmt: skip
    assert types.startswith("integer,") and "date" in types and "double precision" in types and "bigint" in types
    assert pg.password not in text


def test_the_suite_names_what_is_missing_and_never_loads_into_a_source(monkeypatch):
    monkeypatch.delenv("DABENCH_EVAL_URL", raising=False)
    suite = load_suite("dabench-pg")
    assert suite.database is not None and suite.database.url_env == "DABENCH_EVAL_URL"
    from gitops_agent.eval.run import Runner

    with pytest.raises(ConfigError, match="set DABENCH_EVAL_URL=postgresql://"):
        Runner(suite).load_database()
    # a suite may not point its loader (which replaces tables) at a source's URL
    with pytest.raises(Exception, match="url_env"):
        type(suite.database).model_validate({"url_env": "SHOP_DB_URL"})
