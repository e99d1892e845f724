"""What a person meets when a model endpoint hangs or they press Ctrl-C (issue 12.1, 12.2): the
task's wall budget bounds a silent endpoint, progress says what it waits for, the message names
the endpoint; the first Ctrl-C stops the model call and the sandbox in a second or two, prints the
real resume command, and leaves nothing behind; a second Ctrl-C quits at once and the next run
cleans up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from tests.fakes.agent_responder import AgentResponder, tool
from tests.fakes.anthropic_server import FakeAnthropic, Fault
from tests.helpers import GIT_ENV, KEY, ROOT, agent_command, make_repo, run_cli, task_branch

SPEC = "anthropic:claude-haiku-4-5"


def _leftovers(repo: Path, pid: int) -> list[str]:
    out = (
        [str(p) for p in (repo / ".git" / "gitops-agent" / "checkouts").glob("*")]
        if (repo / ".git" / "gitops-agent" / "checkouts").exists()
        else []
    )
    out += [str(p) for p in Path(tempfile.gettempdir()).glob(f"agent-sandbox-{pid}-*")]
    return out


def test_a_silent_endpoint_is_bounded_by_the_wall_budget_and_named(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(api_key=KEY, faults=[Fault(delay=600, times=None)]) as srv:  # accepts, never answers
        url = srv.url
        t0 = time.monotonic()
        cfg = _config(tmp_path, "model_timeout: {heartbeat_s: 2}\n")
        p = run_cli(repo, srv.url, "--model", SPEC, "--config", str(cfg), "--max-minutes", "0.15", "What is the sum?")
        out, err = p.communicate(timeout=120)
        took = time.monotonic() - t0
    assert took < 60, took  # not 50 minutes: the 9 s wall budget bounds the calls in flight
    assert p.returncode != 0
    assert "waiting for claude-haiku-4-5 at http://127.0.0.1" in err  # progress says what it waits for
    assert f"no answer from the Anthropic API at {url}" in err, err[-2000:]  # the endpoint, named
    assert "model_timeout" in err and "wall budget" in err  # and what to change


def test_the_first_ctrl_c_stops_the_sandbox_and_the_model_call_at_once(tmp_path):
    repo = make_repo(tmp_path)
    started = tmp_path / "started"
    marker = f"gitops-sleeper-{os.getpid()}-{time.time_ns()}"
    state = {"calls_after": 0, "signalled": False}

    def planner(body, text, n):
        if state["signalled"]:
            state["calls_after"] += 1
        if "There is no plan yet" in text:
            return tool("update_plan", nodes=[{"id": "n1", "title": "Sum", "goal": "Sum."}], note="one")
        return tool("update_plan", nodes=[{"id": "n1", "title": "Sum", "goal": "Sum."}], note="wait")

    def n1(body, text, n):
        if state["signalled"]:
            state["calls_after"] += 1
        return tool("run_shell", command=f"touch {started}; exec -a {marker} sleep 300")

    with FakeAnthropic(api_key=KEY, responder=AgentResponder({"planner": planner, "executor:n1": n1}), min_cache_tokens=0) as srv:
        p = run_cli(
            repo,
            srv.url,
            "--model",
            SPEC,
            "--config",
            str(_config(tmp_path, "sandbox: {backend: subprocess, timeout_s: 300}\n")),
            "What is the sum?",
        )
        for _ in range(600):
            if started.exists():
                break
            time.sleep(0.05)
        assert started.exists(), p.communicate(timeout=5)
        state["signalled"] = True
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    assert p.returncode == 130, err
    assert took < 10, took  # not another 300 s of the sleep, nor more model turns
    assert state["calls_after"] == 0  # no model call was billed after the Ctrl-C
    task_id = task_branch(repo).removeprefix("agent/task/")
    assert f"gitops-agent run --repo {repo} --resume {task_id}" in err and "<task-id>" not in err
    assert _leftovers(repo, p.pid) == []
    assert not [
        d for d in Path("/proc").iterdir() if d.name.isdigit() and _cmd(d).startswith(marker.encode())
    ]  # the code is dead


def test_a_model_call_in_flight_is_cut_by_the_first_ctrl_c(tmp_path):
    repo = make_repo(tmp_path)
    asked, hold = threading.Event(), threading.Event()

    def planner(body, text, n):
        asked.set()
        hold.wait(120)  # the call hangs until the test ends
        return tool("finish", answer="x", summary="x")

    with FakeAnthropic(api_key=KEY, responder=AgentResponder({"planner": planner}), min_cache_tokens=0) as srv:
        p = run_cli(repo, srv.url, "--model", SPEC, "What is the sum?")
        assert asked.wait(60)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
        hold.set()
        calls = len([r for r in srv.requests if r.path.startswith("/v1/messages")])
    assert p.returncode == 130 and took < 10, (took, err)
    assert calls == 1  # the SDK did not retry the cut call
    assert "--resume" in err and task_branch(repo).removeprefix("agent/task/") in err


def test_a_second_ctrl_c_quits_and_the_next_run_cleans_up(tmp_path):
    repo = make_repo(tmp_path)
    started = tmp_path / "started"

    def planner(body, text, n):
        return tool("update_plan", nodes=[{"id": "n1", "title": "Sum", "goal": "Sum."}], note="one")

    resumed = {"on": False}

    def n1(body, text, n):
        if resumed["on"]:
            return tool("finish_step", status="done", result="55")
        return tool("run_shell", command=f"touch {started}; trap '' INT TERM; sleep 300")

    with FakeAnthropic(api_key=KEY, responder=AgentResponder({"planner": planner, "executor:n1": n1}), min_cache_tokens=0) as srv:
        cfg = _config(tmp_path, "sandbox: {backend: subprocess, timeout_s: 300}\n")
        p = run_cli(repo, srv.url, "--model", SPEC, "--config", str(cfg), "What is the sum?")
        for _ in range(600):
            if started.exists():
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 130
        # whatever the quit left behind, the next run of gitops-agent in this repository removes
        resumed["on"] = True
        r = run_cli(
            repo, srv.url, "--model", SPEC, "--config", str(cfg), "--resume", task_branch(repo).removeprefix("agent/task/")
        )
        r.communicate(timeout=120)
    assert _leftovers(repo, p.pid) == []


def _config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yml"
    p.write_text(text)
    return p


def _cmd(d: Path) -> bytes:
    try:
        return (d / "cmdline").read_bytes()
    except OSError:
        return b""


def _interrupt_when_code_runs(args: list[str], cwd: Path, tmp: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`gitops-agent ARGS` with its own temp directory; one Ctrl-C once the model's code runs.
    (what it printed, what is left in its temp directory)"""
    tmp.mkdir()
    env = {k: v for k, v in GIT_ENV.items() if not k.startswith(("ANTHROPIC", "OPENAI"))}
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    p = subprocess.Popen(
        [sys.executable, "-m", "gitops_agent", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for _ in range(1200):
        if any(tmp.glob("agent-sandbox-*")) or p.poll() is not None:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), sorted(d.name for d in tmp.iterdir())


def test_ctrl_c_in_eval_or_replay_cancels_with_nothing_to_resume_and_nothing_left(tmp_path):
    """Issue 23: a Ctrl-C in `eval` left its throwaway repositories in the temp directory and, in
    `eval` and `replay`, told the person to resume a task that does not exist."""
    repo = make_repo(tmp_path)
    r, left = _interrupt_when_code_runs(["eval", "dabench", "--model", "scripted", "--no-commit"], repo, tmp_path / "t1")
    assert r.returncode == 130, r.stderr
    assert "eval cancelled" in r.stderr and "nothing to resume" in r.stderr and "--resume" not in r.stderr, r.stderr
    assert left == [], "no throwaway repository, no sandbox directory left"

    slow = {
        "planner": [
            {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "Wait", "goal": "wait"}]}},
            {"when": "'n1' in results", "tool": "finish", "input": {"answer": "waited", "summary": "w"}},
        ],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": "import time; time.sleep(4); print('ok')"}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
    }
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(slow))
    spec = f"scripted:{tmp_path / 'slow.yaml'}"
    assert agent_command("run", "-q", "--task-id", "slow1", "--model", spec, "Wait?", cwd=repo).returncode == 0
    r, left = _interrupt_when_code_runs(["replay", "slow1"], repo, tmp_path / "t2")
    assert r.returncode == 130, r.stderr
    assert "replay cancelled" in r.stderr and "nothing to resume" in r.stderr and "--resume" not in r.stderr, r.stderr
    assert left == []
