"""Suite-wide: say loudly when the sandbox tests could not run here."""

from __future__ import annotations


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
