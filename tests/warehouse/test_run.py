"""Through `gitops-agent run` with bubblewrap: a repository whose data lives only in PostgreSQL
gets a correct answer; step.json lists the queries; report.md shows the SQL behind the answer;
the password is in no commit, report or output."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from gitops_agent.sandbox.bubblewrap import bwrap_works
from tests.helpers import agent_command, git, one_node_script, task_branch

pytestmark = pytest.mark.skipif(not bwrap_works(), reason="bwrap is missing or cannot create namespaces here")

SQL = "select customer, sum(amount) as total from orders group by customer order by total desc, customer limit 1 -- <b>top</b>"
COUNT = "select count(*) as n from orders where amount > %s"
CODE = f"""
import warehouse
df = warehouse.query("shop", {SQL!r})
print(f"TOP={{df.customer[0]}} {{float(df.total[0]):.2f}}")
print("OVER100=" + str(warehouse.query("shop", {COUNT!r}, [100]).n[0]))
"""


def test_an_answer_from_postgresql_with_the_sql_behind_it_and_no_password_anywhere(pg, tmp_path):
    repo = tmp_path / "shop"
    (repo / ".github").mkdir(parents=True)
    (repo / ".github" / "gitops-agent.yml").write_text(
        "sandbox: {backend: bubblewrap}\ndata: {sources: {shop: {url_env: SHOP_DB_URL, description: the shop's orders}}}\n"
    )
    (repo / "README.md").write_text("Our orders are in the shop database.\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "settings")
    script = one_node_script(tmp_path / "s.yaml", CODE, "Top customer", "Query it.")
    r = agent_command(
        "run", "--repo", str(repo), "--model", f"scripted:{script}", "Who is the top customer?", env={"SHOP_DB_URL": pg.url}
    )
    assert r.returncode == 0, r.stderr
    # the right answer, computed by the server
    rows = pg.psql(SQL).split("|")
    assert f"TOP={rows[0]} {Decimal(rows[1]):.2f}" in r.stdout
    branch = task_branch(repo)
    tid = branch.removeprefix("agent/task/")
    step = next(f for f in git(repo, "ls-tree", "-r", "--name-only", branch).split() if f.endswith("-n1/step.json"))
    record = json.loads(git(repo, "show", f"{branch}:{step}"))
    queries = record["queries"]
    assert record["sandbox"] == "bubblewrap"  # the step says where its code ran
    assert [(q["source"], q["sql"], q["params"], q["rows"], q["error"]) for q in queries] == [
        ("shop", SQL, None, 1, None),
        ("shop", COUNT, [100], 1, None),
    ]
    report = git(repo, "show", f"{branch}:.agent/tasks/{tid}/report.md")
    section = report.split("## The SQL behind the answer", 1)[1].split("\n## ", 1)[0]
    assert f"```sql\n{SQL}\n```" in section and "`shop` · 1 row" in section
    assert f"```sql\n{COUNT}\n```\n\nwith the parameters\n\n```json\n[100]\n```" in section
    # every fence closes: the sections after this one are not swallowed into a code block
    assert sum(line.startswith("```") for line in report.splitlines()) % 2 == 0 and "\\`" not in report
    # the experience on the memory branch says which source the task used (later planners see it)
    experience = json.loads(git(repo, "show", f"agent/memory:experiences/{tid}.json"))
    assert experience["sources"] == ["shop"]
    # the terminal trace lists the queries with their steps
    plain = agent_command("trace", tid, "--repo", str(repo))
    assert plain.returncode == 0, plain.stderr
    assert (
        "Queries" in plain.stdout and "(n1) shop: 1 row, " in plain.stdout and "select count(*) as n from orders" in plain.stdout
    )
    # the HTML trace shows the query with its step
    page = tmp_path / "trace.html"
    t = agent_command("trace", tid, "--repo", str(repo), "--html", str(page))
    assert t.returncode == 0, t.stderr
    html = page.read_text()
    assert "<h3>Queries</h3>" in html and "<code>shop</code> · 1 row · " in html
    assert "select customer, sum(amount) as total from orders group by customer" in html
    assert "-- &lt;b&gt;top&lt;/b&gt;" in html and "<b>top" not in html  # the SQL is text, never markup
    # the password: in no commit of any branch, not in the output
    everything = git(repo, "log", "-p", "--all") + r.stdout + r.stderr + html
    assert pg.password not in everything and pg.url not in everything


GONE = """
import warehouse
try:
    warehouse.query("gone", "select count(*) from orders")
except warehouse.WarehouseError as e:
    print("REFUSED", e)
"""


def test_doctor_and_run_tell_the_person_when_a_data_source_cannot_be_read(pg, tmp_path):
    repo = tmp_path / "shop"
    (repo / ".github").mkdir(parents=True)
    (repo / ".github" / "gitops-agent.yml").write_text(
        "sandbox: {backend: bubblewrap}\ndata: {sources: {shop: {url_env: SHOP_DB_URL}, gone: {url_env: GONE_DB_URL}}}\n"
    )
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "settings")
    quick = {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "SHOP_DB_URL": pg.url}
    d = agent_command("doctor", "--repo", str(repo), env=quick)
    found = [ln for ln in d.stdout.splitlines() if " data source " in ln]
    assert found[0].startswith("✓") and "shop: connects read-only; 1 table(s): orders" in found[0], d.stdout
    assert found[1].startswith("✗") and "gone: source 'gone': GONE_DB_URL is not set" in found[1], d.stdout
    assert d.returncode == 1 and pg.password not in d.stdout + d.stderr
    # a table named to speak to the terminal or the job log is shown as text
    odd = '"x' + "\n" + "::warning title=pwned::owned" + "\x1b" + '[2J"'
    pg.psql(f"create table {odd} (id int); grant select on {odd} to analyst")
    try:
        d = agent_command("doctor", "--repo", str(repo), env=quick)
    finally:
        pg.psql(f"drop table {odd}")
    assert "2 table(s): orders, x\\n: :warning title=pwned: :owned" in d.stdout, d.stdout
    assert not any(ln.startswith("::") for ln in d.stdout.splitlines()) and "\x1b" not in d.stdout
    script = one_node_script(tmp_path / "s.yaml", GONE, "Count", "Count.")
    r = agent_command(
        "run", "--repo", str(repo), "--model", f"scripted:{script}", "How many orders?", env={"SHOP_DB_URL": pg.url}
    )
    assert r.returncode == 0, r.stderr
    said = r.stdout + r.stderr
    assert said.count("data source 'gone' cannot be read: source 'gone': GONE_DB_URL is not set") == 1, said
    assert "data source 'shop'" not in said
    # the query the code tried is on the record with its reason, for the report and the trace
    branch = task_branch(repo)
    step = next(f for f in git(repo, "ls-tree", "-r", "--name-only", branch).split() if f.endswith("-n1/step.json"))
    [q] = json.loads(git(repo, "show", f"{branch}:{step}"))["queries"]
    assert (q["source"], q["sql"], q["rows"]) == ("gone", "select count(*) from orders", 0)
    assert q["error"].startswith("source 'gone': GONE_DB_URL is not set") and "REFUSED source 'gone'" in r.stdout
