"""Shared helpers of the reliability tests (named rhelpers so it never clashes with
tests/memory/helpers.py under pytest's default import mode)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from agent.sandbox import bwrap_works, docker_engine_answers, pids_cgroup_parent
from tests.fakes.agent_responder import AgentResponder, last_stdout, tool

ROOT = Path(__file__).resolve().parents[2]
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x", "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@x"}
KEY = "sk-ant-test-key-123456"

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is missing or cannot create namespaces here (install it: .ci/run does)")
needs_docker = pytest.mark.skipif(not docker_engine_answers(), reason="no docker engine answers here (`docker info` fails)")

BACKENDS = [
    pytest.param("subprocess", id="subprocess"),
    pytest.param("bubblewrap", id="bubblewrap", marks=needs_bwrap),
]
BEST = "bubblewrap" if bwrap_works() else "subprocess"


def process_limit_enforced() -> tuple[bool, str]:
    """Is there a real limit on the number of processes of an action here?"""
    if pids_cgroup_parent() is not None:
        return True, f"pids cgroup under {pids_cgroup_parent()}"
    if os.geteuid() != 0:
        return True, "RLIMIT_NPROC (not root)"
    return False, "running as root without a writable pids cgroup: RLIMIT_NPROC is not enforced for root"


def git(repo: Path, *args: str, check: bool = True) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=GIT_ENV)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {p.stderr}")
    return p.stdout


def make_repo(tmp_path: Path, name: str = "repo", files: dict[str, str] | None = None) -> Path:
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


def task_branch(repo: Path) -> str:
    refs = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split()
    assert len(refs) == 1, refs
    return refs[0]


N1 = {"id": "n1", "title": "Sum", "goal": "Sum the numbers in numbers.txt."}


def one_node_responder(n1: Callable[[dict, str, int], dict], node: dict | None = None) -> AgentResponder:
    """A planner that plans one node, then finishes with that node's result; ``n1`` plays the
    executor (body, prompt text, calls so far) -> reply."""
    node = node or N1

    def planner(body, text, n):
        if "There is no plan yet" in text:
            return tool("update_plan", nodes=[node], note="one step")
        m = re.search(rf"## {node['id']} \((done|failed)[^)]*\) — [^\n]*\n(.*?)(?:\n## |\nStill running|\Z)", text, re.S)
        if m:
            return tool("finish", answer=f"Result of {node['id']}: {m.group(2).strip()[:500]}", summary="done")
        return tool("update_plan", nodes=[node], note="waiting")

    return AgentResponder({"planner": planner, f"executor:{node['id']}": n1})


def sum_node(body, text, n):
    if n == 0:
        return tool("run_python", code="print('SUM=%d' % sum(int(x) for x in open('numbers.txt').read().split()))")
    return tool("finish_step", status="done", result=last_stdout(body))


def cli(repo: Path, server_url: str, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m agent run --repo REPO ARGS…` in its own session (so os.killpg reaches it all)."""
    env = {k: v for k, v in GIT_ENV.items() if not k.startswith("ANTHROPIC")}
    env.update(ANTHROPIC_BASE_URL=server_url, ANTHROPIC_API_KEY=KEY, PYTHONPATH=str(ROOT))
    env.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--repo", str(repo), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def kill9(p: subprocess.Popen) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(15)
    p.stdout.close()
    p.stderr.close()


def wait_for(pred: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def processes_under(path: Path) -> list[int]:
    """Pids (other than ours) whose working directory is under ``path``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(path)):
            out.append(int(d.name))
    return out


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
