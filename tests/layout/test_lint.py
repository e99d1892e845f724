"""The habits that stop the drift: ruff (lint, import order, format; configured in
pyproject.toml) finds nothing, so a change that adds a finding fails here as well as in CI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

TREES = ["gitops_agent", "tests", "bench", "tools"]


def _ruff() -> list[str]:
    exe = Path(sys.executable).parent / "ruff"
    found = str(exe) if exe.exists() else shutil.which("ruff")
    if not found:
        pytest.skip("ruff is not installed (it is in the test extra)")
    return [found]


def test_ruff_finds_nothing():
    p = subprocess.run([*_ruff(), "check", "--no-cache", *TREES], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]


def test_every_file_is_formatted():
    p = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", *TREES], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]
