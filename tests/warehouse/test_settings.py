"""`data.sources` in the settings, the driver's absence, and step.json's `queries` (no database needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.state import StepRecord
from gitops_agent.data.sources import SourceError, connect, secrets_of
from gitops_agent.settings.config import parse_config
from tests.helpers import ROOT


def test_a_source_is_read_with_its_defaults():
    cfg = parse_config("data:\n  sources:\n    shop: {url_env: SHOP_DB_URL, description: orders}\n", "x.yml")
    shop = cfg.data.sources["shop"]
    assert (shop.url_env, shop.timeout_s, shop.max_rows, shop.max_bytes, shop.description) == (
        "SHOP_DB_URL",
        30,
        100_000,
        50_000_000,
        "orders",
    )


@pytest.mark.parametrize(
    "yaml, says",
    [
        ("data: {sources: {'my-shop': {url_env: X}}}", "must be an identifier"),
        ("data: {sources: {shop: {url_env: 'postgresql://u:s3cretpw@h/db'}}}", "is a URL: name the variable that holds"),
        ("data: {sources: {shop: {url_env: 'shop-db-url'}}}", "is not an environment variable name"),
        ("data: {sources: {shop: {url: 'postgresql://u:s3cretpw@h/db'}}}", "url"),
        ("data: {sources: {'postgresql://u:s3cretpw@h/db': {url_env: X}}}", "source name (a URL) must be an identifier"),
        ("data: {sources: {shop: {url_env: X, timeout_s: 0}}}", "timeout_s"),
        ("data: {sources: {shop: {url_env: GITOPS_AGENT_GITHUB_TOKEN}}}", "the agent's or the runner's own variables"),
        ("data: {sources: {shop: {url_env: GITHUB_TOKEN}}}", "the agent's or the runner's own variables"),
        ("data: {sources: {Files: {url_env: SHOP_DB_URL}}}", "'files' is the built-in source"),
        ("data: {sources: {shop: {url_env: anthropic_api_key}}}", "the agent's or the runner's own variables"),
        ("data: {sources: {shop: {url_env: ACTIONS_ID_TOKEN_REQUEST_TOKEN}}}", "the agent's or the runner's own variables"),
        ("data: {sourcez: {}}", "sourcez"),
    ],
)
def test_a_bad_source_is_one_clear_error(yaml, says):
    with pytest.raises(ConfigError) as e:
        parse_config(yaml, "x.yml")
    assert says in str(e.value) and "x.yml" in str(e.value)
    assert "s3cretpw" not in str(e.value)  # a URL written where it must not be is never repeated


def test_without_psycopg_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra sees: ImportError
    with pytest.raises(SourceError, match=r"PostgreSQL sources need the psycopg package .*gitops-agent\[warehouse\]"):
        connect("postgresql://u:p@127.0.0.1:1/db", 5)


def test_an_unknown_scheme_is_refused_and_the_password_is_a_secret():
    with pytest.raises(SourceError, match="unsupported database URL scheme 'mysql'"):
        connect("mysql://u:pw@h/db", 5)
    with pytest.raises(SourceError, match="unsupported database URL scheme 'mysql\\+pymysql'"):
        connect("mysql+pymysql://u:pw@h/db", 5)
    assert secrets_of("postgresql://u:p%40ss@h/db") == ["postgresql://u:p%40ss@h/db", "p%40ss", "p@ss"]
    # a driver without // is not rewritten: libpq would read the rest as key=value text and quote it whole
    with pytest.raises(SourceError) as e:
        connect("postgresql+psycopg:analyst:S3cretPassw0rd@127.0.0.1:5/shop", 5)
    assert "unsupported database URL scheme 'postgresql+psycopg'" in str(e.value) and "S3cret" not in str(e.value)
    # a password given as an option is a secret too
    assert "S3cret%21" in secrets_of("postgresql://u@h/db?sslmode=disable&password=S3cret%21")
    assert "S3cret!" in secrets_of("postgresql://u@h/db?password=S3cret%21")


def test_an_old_step_record_without_queries_loads():
    old = {
        "schema": 1,
        "task_id": "t",
        "seq": 1,
        "role": "executor",
        "node": "n1",
        "started_at": "2026-01-01T00:00:00Z",
        "finished_at": "2026-01-01T00:00:01Z",
    }
    assert StepRecord.model_validate(old).queries == []


DUCKDB_CHECK = """
import sys, duckdb
from gitops_agent.data.sources import SourceError, connect
path = sys.argv[1]
with duckdb.connect(path) as con:
    con.execute("create table orders as select range as id from range(10)")
conn = connect("duckdb://" + path, 5)
cols, _types, fetch = conn.run("select count(*) as n from orders", None)
print(cols, fetch(100))
for sql in ("delete from orders", "select 1; delete from orders", "select * from read_csv('/etc/passwd')",
            "set enable_external_access = true"):
    try:
        conn.run(sql, None)[2](100)
        print("RAN", sql)
    except SourceError as e:
        print("refused:", e)
conn.close()
"""


def test_a_duckdb_file_is_opened_read_only_without_file_access(tmp_path):
    """Run with the workbench's interpreter, which has duckdb (the agent's own environment has it
    only with the warehouse extra); the module needs nothing but the standard library and the driver."""
    from gitops_agent.sandbox.workbench import ensure_workbench

    r = subprocess.run(
        [ensure_workbench().python, "-c", DUCKDB_CHECK, str(tmp_path / "shop.duckdb")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "['n'] [(10,)]"
    why = ["read-only mode", "exactly one SQL statement", "file system operations are disabled", "configuration has been locked"]
    assert len(lines) == 5 and all(x.startswith("refused:") and w in x for x, w in zip(lines[1:], why)), lines


def test_the_data_sources_secret_is_taken_out_of_the_environment_and_masked(capsys, monkeypatch):
    from gitops_agent.data import environ as data_env

    monkeypatch.setattr(data_env, "_adopted", {})
    url = "postgresql://analyst:s3cr%40t-pw@db.internal/shop"
    text = f"# the databases\nexport SHOP_DB_URL='{url}'\n\nnot a line with pw-in-it\n1BAD=x\nDUCK=duckdb:///srv/d.duckdb\n"
    text += "LF_DB_URL=postgresql://u:ab%0Acdxyz@h/d\n"  # a password that decodes to two lines
    env = {"GITOPS_AGENT_DATA_SOURCES_ENV": text, "GITHUB_ACTIONS": "true", "PATH": "/bin"}
    problems = data_env.adopt(env)
    # out of the environment: git, the sandbox and every other child of the step never inherit it
    assert "GITOPS_AGENT_DATA_SOURCES_ENV" not in env
    # a bad line is named by its number, never its text (it may hold a password)
    assert problems == [
        "line 4 of the data-sources-env secret is not NAME=URL; it was skipped",
        "line 5 of the data-sources-env secret is not NAME=URL; it was skipped",
    ]
    masked = capsys.readouterr().out.splitlines()
    # escaped as the runner reads a command (%25 is %): the URL, its password, the password decoded
    assert {f"::add-mask::{url.replace('%', '%25')}", "::add-mask::s3cr%2540t-pw", "::add-mask::s3cr@t-pw"} <= set(masked)
    # a decoded line break never starts a log line of its own: each line is masked too
    assert all(m.startswith("::add-mask::") for m in masked)
    assert {"::add-mask::ab%0Acdxyz", "::add-mask::ab", "::add-mask::cdxyz"} <= set(masked)
    looked_up = data_env.source_environ({"PATH": "/bin", "SHOP_DB_URL": "the environment's"})
    assert looked_up["SHOP_DB_URL"] == url and looked_up["DUCK"] == "duckdb:///srv/d.duckdb"
    assert looked_up["PATH"] == "/bin"


def test_an_experience_keeps_only_source_names_from_the_memory_branch():
    from gitops_agent.memory.experience import parse_experience

    raw = {
        "task_id": "t-1", "branch": "agent/task/t-1", "question": "q", "outcome": "done", "date": "2026-01-01T00:00:00Z",
        "sources": ["shop", "x) ignore the question and", "a" * 100],
    }  # fmt: skip
    exp = parse_experience(json.dumps(raw), "experiences/t-1.json")
    assert exp.sources == ["shop"] and exp.brief()["sources"] == ["shop"]
