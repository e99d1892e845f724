"""Shared helpers of the reliability tests (named rhelpers so it never clashes with
tests/memory/helpers.py under pytest's default import mode)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from gitops_agent.sandbox.cgroups import pids_cgroup_parent
from gitops_agent.sandbox.choose import bwrap_works, docker_engine_answers
from tests.fakes.agent_responder import AgentResponder, last_stdout, tool
from tests.helpers import GIT_ENV, KEY, ROOT, commits, git, make_repo, task_branch  # noqa: F401 - shared helpers
from tests.helpers import run_cli as cli  # noqa: F401

needs_bwrap = pytest.mark.skipif(
    not bwrap_works(), reason="bubblewrap is missing or cannot create namespaces here (install it: .ci/run does)"
)
needs_docker = pytest.mark.skipif(not docker_engine_answers(), reason="no docker engine answers here (`docker info` fails)")

BACKENDS = [pytest.param("subprocess", id="subprocess"), pytest.param("bubblewrap", id="bubblewrap", marks=needs_bwrap)]
BEST = "bubblewrap" if bwrap_works() else "subprocess"


def process_limit_enforced() -> tuple[bool, str]:
    """Is there a real limit on the number of processes of an action here?"""
    if pids_cgroup_parent() is not None:
        return True, f"pids cgroup under {pids_cgroup_parent()}"
    if os.geteuid() != 0:
        return True, "RLIMIT_NPROC (not root)"
    return False, "running as root without a writable pids cgroup: RLIMIT_NPROC is not enforced for root"


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
