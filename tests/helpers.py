"""Helpers shared by every test folder: plain git, small repositories, commits and trailers as
a user reads them, the `gitops-agent` command as a process, and the sales scenario (a CSV, a
planner and two executors played on the wire) that the end-to-end tests run."""

from __future__ import annotations

import csv
import os
import random
import re
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.fakes.agent_responder import AgentResponder, last_stdout, text_and_tool, tool

ROOT = Path(__file__).resolve().parents[1]
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "u",
    "GIT_AUTHOR_EMAIL": "u@x",
    "GIT_COMMITTER_NAME": "u",
    "GIT_COMMITTER_EMAIL": "u@x",
}
KEY = "sk-ant-test-key-123456"


def git(repo: Path, *args: str, check: bool = True, input: bytes | None = None) -> str:
    """`git -C repo ARGS` as a user runs it (fixed identity); stdout as text."""
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env=GIT_ENV, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {p.stderr.decode(errors='replace')}")
    return p.stdout.decode("utf-8", "replace")


def make_repo(tmp_path: Path, name: str = "repo", files: dict[str, str] | None = None) -> Path:
    """A repository on `main` with ``files`` (default: numbers.txt) in one commit."""
    repo = tmp_path / name
    repo.mkdir(parents=True)
    for rel, text in (files or {"numbers.txt": "\n".join(str(i) for i in range(1, 11)) + "\n"}).items():
        p = repo / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


def commits(repo: Path, ref: str) -> list[dict[str, Any]]:
    """Every commit of ``ref``, newest first: sha, subject and trailers (read with plain git)."""
    out = git(repo, "log", "--format=%H%x00%s%x00%(trailers:only,unfold)%x01", ref)
    res = []
    for chunk in out.split("\x01"):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        sha, subject, trailers = chunk.split("\x00")
        t = dict(line.split(": ", 1) for line in trailers.strip().splitlines() if ": " in line)
        res.append({"sha": sha, "subject": subject, "trailers": t})
    return res


def one_node_script(path: Path, code: str, title: str = "Top product", goal: str = "Find it.") -> Path:
    """A scripted model's file (docs/scripted.md): one node n1 that runs ``code`` and answers
    with its output, then the finish."""
    import yaml

    plan = {"nodes": [{"id": "n1", "title": title, "goal": goal}]}
    path.write_text(
        yaml.safe_dump(
            {
                "planner": [
                    {"tool": "update_plan", "input": plan},
                    {"when": "'n1' in results", "tool": "finish", "input": {"summary": "s", "answer": "{{ results.n1 }}"}},
                ],
                "executor:n1": [
                    {"tool": "run_python", "input": {"code": code}},
                    {"tool": "finish_step", "input": {"result": "{{ last_output }}", "status": "done"}},
                ],
            }
        )
    )
    return path


def task_branch(repo: Path) -> str:
    """The one task branch of ``repo``."""
    refs = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split()
    assert len(refs) == 1, refs
    return refs[0]


def run_cli(repo: Path, server_url: str, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m gitops_agent run --repo REPO ARGS…` against a Messages API at ``server_url``, in its own
    session (so os.killpg reaches all of it)."""
    env = {k: v for k, v in GIT_ENV.items() if not k.startswith("ANTHROPIC")}
    env.update(ANTHROPIC_BASE_URL=server_url, ANTHROPIC_API_KEY=KEY, PYTHONPATH=str(ROOT))
    env.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "gitops_agent", "run", "--repo", str(repo), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def agent_command(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`python -m gitops_agent ARGS` as a real process, without the caller's model credentials."""
    e = {k: v for k, v in GIT_ENV.items() if not k.startswith(("ANTHROPIC", "OPENAI", "OTEL_")) and k not in ("COLUMNS", "LINES")}
    e["PYTHONPATH"] = str(ROOT)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gitops_agent", *args], cwd=cwd, env=e, capture_output=True, text=True, timeout=timeout
    )


# ------------------------------------------------------------------------ the sales scenario

N1_CODE = """
import csv, glob, os
from collections import defaultdict
rev = defaultdict(float)
for r in csv.DictReader(open("data/sales.csv")):
    rev[r["customer"]] += float(r["qty"]) * float(r["price"])
out = glob.glob(".agent/tasks/*/steps/*-n1")[0]
with open(os.path.join(out, "revenue.csv"), "w") as f:
    f.write("customer,revenue\\n")
    for c, v in sorted(rev.items()):
        f.write(f"{c},{v:.2f}\\n")
print(f"{len(rev)} customers written to {out}/revenue.csv")
"""

N2_CODE = """
import csv, glob
path = glob.glob(".agent/tasks/*/steps/*-n1/revenue.csv")[0]
rows = list(csv.DictReader(open(path)))
top = max(rows, key=lambda r: float(r["revenue"]))
print(f"TOP={top['customer']} {float(top['revenue']):.2f}")
"""

NODES = [
    {
        "id": "n1",
        "title": "Revenue per customer",
        "goal": "Sum qty*price per customer from data/sales.csv; save revenue.csv in your step folder.",
    },
    {
        "id": "n2",
        "title": "Top customer",
        "goal": "From n1's revenue.csv, find the customer with the highest revenue.",
        "depends_on": ["n1"],
    },
]


def make_sales_repo(tmp_path: Path) -> tuple[Path, str, float]:
    """A shop repository with data/sales.csv (300 orders); (repo, top customer, their revenue)."""
    repo = tmp_path / "shop"
    (repo / "data").mkdir(parents=True)
    rnd = random.Random(42)
    rev: dict[str, float] = defaultdict(float)
    with open(repo / "data" / "sales.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["order", "customer", "qty", "price"])
        for i in range(300):
            c, q, p = f"cust{rnd.randrange(25):02d}", rnd.randrange(1, 6), round(rnd.uniform(2, 90), 2)
            rev[c] += q * p
            w.writerow([i, c, q, p])
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "data"]):
        git(repo, *cmd)
    top = max(rev, key=rev.get)
    return repo, top, round(rev[top], 2)


# n1 also draws its table as a bar chart (matplotlib, in the workbench)
CHART_CODE = """
import matplotlib.pyplot as plt
plt.bar(sorted(rev), [rev[c] for c in sorted(rev)])
plt.savefig(os.path.join(out, "revenue.png"), dpi=60)
"""


def make_sales_responder(
    hold_n2: threading.Event | None = None, n2_seen: threading.Event | None = None, chart: bool = False
) -> AgentResponder:
    """The planner plans n1 (revenue per customer) and n2 (the top one), then finishes with n2's
    number; the executors run N1_CODE (and CHART_CODE with ``chart``) and N2_CODE."""

    def planner(body, text, n):
        if "There is no plan yet" in text:
            return text_and_tool(
                "Two steps: per-customer revenue, then the top one.", "update_plan", nodes=NODES, note="first plan"
            )
        m = re.search(r"TOP=(\S+) ([\d.]+)", text)
        if m and "## n2 (done)" in text:
            return tool(
                "finish",
                answer=f"The top customer is **{m.group(1)}** with revenue **{m.group(2)}** (node n2).",
                summary=f"top customer {m.group(1)}",
            )
        return tool("update_plan", nodes=NODES, note="n1 done; n2 next")

    def n1(body, text, n):
        if n == 0:
            return text_and_tool("Computing revenue.", "run_python", code=N1_CODE + (CHART_CODE if chart else ""))
        return tool("finish_step", status="done", result=last_stdout(body))

    def n2(body, text, n):
        if n == 0:
            if n2_seen is not None:
                n2_seen.set()
            if hold_n2 is not None:
                hold_n2.wait(30)
            return tool("run_python", code=N2_CODE)
        return tool("finish_step", status="done", result=last_stdout(body))

    return AgentResponder({"planner": planner, "executor:n1": n1, "executor:n2": n2})


def make_fanout_responder(leaves: int = 4) -> AgentResponder:
    """The planner plans ``leaves`` independent nodes (revenue of one quarter of the customers
    each), then finishes with their sum; every executor runs one snippet and reports it."""
    ids = [f"q{i + 1}" for i in range(leaves)]
    nodes = [
        {
            "id": i,
            "title": f"Revenue of part {k + 1}",
            "goal": f"Sum qty*price of the orders whose number modulo {leaves} is {k}.",
        }
        for k, i in enumerate(ids)
    ]

    def planner(body, text, n):
        if "There is no plan yet" in text:
            return text_and_tool("Independent parts, in parallel.", "update_plan", nodes=nodes, note="fan-out")
        parts = re.findall(r"PART=([\d.]+)", text)
        if len(parts) == leaves:
            return tool(
                "finish", answer=f"Total revenue **{sum(map(float, parts)):.2f}** from {leaves} parts.", summary="total revenue"
            )
        return tool("update_plan", nodes=nodes, note="waiting for the parts")

    def leaf(k: int):
        code = (
            "import csv\nprint('PART=%.2f' % sum(float(r['qty']) * float(r['price']) for r in "
            f"csv.DictReader(open('data/sales.csv')) if int(r['order']) % {leaves} == {k}))\n"
        )

        def run(body, text, n):
            if n == 0:
                return tool("run_python", code=code)
            return tool("finish_step", status="done", result=last_stdout(body))

        return run

    return AgentResponder({"planner": planner, **{f"executor:{i}": leaf(k) for k, i in enumerate(ids)}})


def push_config(bare: Path, work: Path, text: str, files: dict[str, str] | None = None) -> None:
    """Commit .github/gitops-agent.yml (and ``files``) to ``bare``'s main through a clone in
    ``work``, as a writer would."""
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True)
    (work / ".github").mkdir(exist_ok=True)
    (work / ".github" / "gitops-agent.yml").write_text(text)
    for name, content in (files or {}).items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(content)
    git(work, "add", "-A")
    git(work, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "config")
    git(work, "push", "-q", "origin", "main")
