"""The suite says loudly when the sandbox tests were skipped (a machine without user namespaces)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def _run(tmp_path, body: str) -> str:
    (tmp_path / "test_x.py").write_text("import pytest\n\n" + body)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            "-c",
            "/dev/null",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_x.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    return p.stdout + p.stderr


def test_skipped_sandbox_tests_are_announced(tmp_path):
    out = _run(
        tmp_path,
        "@pytest.mark.skipif(True, reason='bubblewrap is missing or cannot create namespaces here')\n"
        "def test_a(): pass\n\ndef test_b(): pass\n",
    )
    assert "WARNING: 1 sandbox and security tests did NOT run" in out and "UNTESTED" in out


def test_no_warning_when_they_ran(tmp_path):
    out = _run(tmp_path, "@pytest.mark.skipif(True, reason='zizmor is not installed')\ndef test_a(): pass\n")
    assert "1 skipped" in out and "did NOT run" not in out
