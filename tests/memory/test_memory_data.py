"""Shared data sets: `memory add-data` commits a CSV under data/ on agent/memory; a task's code
reads it in the sandbox at data_dir (also $AGENT_DATA_DIR), and cannot write there."""

from __future__ import annotations

import pytest

from gitops_agent.memory.experience import MEMORY_BRANCH
from gitops_agent.sandbox.choose import available_backends
from tests.memory.helpers import cli, finish, git, make_repo, node, plan, run_task

HAS_BWRAP = "bubblewrap" in available_backends()

READ = """
import csv, os
d = {data_dir!r}
assert os.environ["AGENT_DATA_DIR"] == d
rows = list(csv.DictReader(open(os.path.join(d, "prices", "prices.csv"))))
print("ROWS", len(rows), "SUM", sum(float(r["price"]) for r in rows))
try:
    open(os.path.join(d, "prices", "prices.csv"), "a").write("x")
    print("WRITE ok")
except OSError as e:
    print("WRITE refused", type(e).__name__)
"""


def script() -> dict:
    return {
        "planner": [plan(node("n1", title="Read the shared prices")), finish("{{ results.n1 }}", "prices read")],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": READ.replace("{data_dir!r}", "'{{ data_dir }}'")}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
    }


@pytest.mark.parametrize("backend", ["bubblewrap"] if HAS_BWRAP else ["subprocess"])
def test_a_data_set_added_to_memory_is_readable_read_only_in_the_sandbox(tmp_path, backend):
    repo = make_repo(tmp_path)
    src = tmp_path / "prices"
    src.mkdir()
    (src / "prices.csv").write_text("sku,price\na,1.5\nb,2.5\nc,4\n")
    (src / "README.md").write_text("Prices from the supplier.\n")
    r = cli("memory", "add-data", str(src), "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    assert "data/prices/prices.csv" in r.stdout
    assert git(repo, "ls-tree", "-r", "--name-only", MEMORY_BRANCH).split() == ["data/prices/README.md", "data/prices/prices.csv"]

    res, rt, model, _ = run_task(repo, script(), "What do the shared prices add up to?", backend=backend)
    assert res.outcome == "done", res.reason
    assert "ROWS 3 SUM 8.0" in res.answer
    data_dir = rt.data_dir
    assert data_dir and data_dir.startswith(str(repo / ".git" / "gitops-agent" / "memory-data"))
    executor_prompt = next(c for c in model.calls if c.meta["role"] == "executor").messages[0].content[0].text
    assert f"Shared data sets (read-only): {data_dir}" in executor_prompt
    if backend == "bubblewrap":
        assert "WRITE refused" in res.answer  # read-only files on a read-only bind mount, capabilities dropped
    # nothing of the data set was committed on the task branch
    assert not any("prices.csv" in f for f in git(repo, "ls-tree", "-r", "--name-only", res.branch).split())


def test_add_data_errors_are_clear(tmp_path):
    repo = make_repo(tmp_path)
    r = cli("memory", "add-data", str(tmp_path / "nope.csv"), "--repo", str(repo))
    assert r.returncode == 1 and "does not exist" in r.stderr
    f = tmp_path / "a.csv"
    f.write_text("x\n1\n")
    r = cli("memory", "add-data", str(f), "--name", "../evil", "--repo", str(repo))
    assert r.returncode == 1 and "bad data set name" in r.stderr
    r = cli("memory", "add-data", str(f), "--name", "sales/2026.csv", "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    assert git(repo, "show", f"{MEMORY_BRANCH}:data/sales/2026.csv") == "x\n1\n"
    r = cli("memory", "list", "--repo", str(repo))
    assert "0 experience(s)" in r.stdout and "data/sales/2026.csv" in r.stdout
    r = cli("memory", "list", "--repo", str(tmp_path))
    assert r.returncode == 1 and "not inside a Git repository" in r.stderr
