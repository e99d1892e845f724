"""Each job imports only what its step needs (a job pays for every import, every time): no model
SDK for intake or finish, no retrieval stack for execute. Each step runs as a runner runs it, a
process of its own with `-X importtime`, and what it imported is read from that output."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.github.test_github_flow import _write_config, issue_event, world  # noqa: F401 - fixture
from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def imported(h, event_name: str, event: dict) -> set[str]:
    env = {**os.environ, **h.env(event_name, event), "PYTHONPATH": str(ROOT), "PYTHONSAFEPATH": "1"}
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gitops_agent", "step", "auto"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return {m.group(1).strip() for m in re.finditer(r"(?m)^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", p.stderr)}


def test_each_step_imports_only_what_it_needs(world):
    h, *_ = world
    _write_config(h, "github: {inline_steps: false}\n")  # one step per process
    seen: dict[str, set[str]] = {"intake": imported(h, "issues", issue_event(h.gh, "alice"))}
    done = 0
    while done < len(h.gh.dispatches):
        d = h.gh.dispatches[done]
        done += 1
        step = d["event_type"].removeprefix("agent-")
        seen.setdefault(step, set()).update(
            imported(h, "repository_dispatch", {"action": d["event_type"], "client_payload": d["client_payload"]})
        )
    assert set(seen) == {"intake", "plan", "execute", "finish"} and list(h.gh.repo("o/r").pulls.values())
    sdk = {"anthropic", "openai"}
    assert seen["intake"] & sdk == set() and seen["finish"] & sdk == set()
    assert "gitops_agent.memory.retrieval" not in seen["execute"] and "gitops_agent.memory.retrieval" not in seen["finish"]
    assert "numpy" not in set().union(*seen.values()) and "bm25s" not in set().union(*seen.values())
    # and the check sees imports: the planner and the executor did load the SDK
    assert "anthropic" in seen["plan"] and "anthropic" in seen["execute"]
