"""Suite-wide: one workbench cache for every test and process, built once at the start; and say
loudly when the sandbox tests could not run here."""

from __future__ import annotations

import os
from pathlib import Path

from tests.fakes.postgres import pg  # noqa: F401 - the fixture: a real PostgreSQL server, one per worker

# Tests that give a process its own HOME (the GitHub harness) would otherwise build the workbench
# again in it, and download it again into a new uv cache: one cache for the whole suite.
os.environ.setdefault("GITOPS_AGENT_CACHE", str(Path.home() / ".cache" / "gitops-agent"))
os.environ.setdefault("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))


def pytest_sessionstart(session):  # noqa: ARG001 - pytest's hook signature
    """The workbench, built before any test runs (under its lock: xdist workers build it once)."""
    from gitops_agent.sandbox.workbench import WorkbenchError, ensure_workbench

    try:
        ensure_workbench()
    except WorkbenchError as e:  # the tests that need it fail, each saying so
        print(f"warning: the workbench could not be built: {e}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest's hook signature
    skipped = terminalreporter.stats.get("skipped", [])
    why = [r for r in skipped if "bubblewrap" in str(r.longrepr) or "bwrap" in str(r.longrepr)]
    if why:
        bar = "!" * 78
        terminalreporter.write_line(bar, red=True, bold=True)
        terminalreporter.write_line(
            f"WARNING: {len(why)} sandbox and security tests did NOT run: bubblewrap is missing or cannot create "
            "namespaces on this machine. The isolation of the model's code is UNTESTED here.",
            red=True,
            bold=True,
        )
        terminalreporter.write_line(
            "(install bubblewrap and allow unprivileged user namespaces, e.g. "
            "sysctl kernel.unprivileged_userns_clone=1 / kernel.apparmor_restrict_unprivileged_userns=0)",
            red=True,
        )
        terminalreporter.write_line(bar, red=True, bold=True)


# The fast subset (`-m "not slow"`) leaves out these: the hostile-model suite, the fault and attack
# matrix, the act run and the CLI tests that run whole tasks as processes. CI runs everything.
SLOW = (
    "tests/security/",
    "tests/reliability/",
    "tests/github/test_act_e2e.py",
    "tests/cli/test_interrupts.py",
    "tests/cli/test_push.py",
    "tests/cli/test_preflight.py",
    "tests/cli/test_dirty_tree.py",
    "tests/bench/",
)


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    import pytest

    for item in items:
        rel = item.nodeid.replace("\\", "/")
        if rel.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
