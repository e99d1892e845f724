"""The workbench on GitHub (issue 24): a repository's `sandbox.requirements` that is not a hashed
lock is refused at intake -- a reply on the issue naming the file and the line, no task branch,
no model call, no job dispatched; a hashed one lets the task run with its package."""

from __future__ import annotations

from pathlib import Path

from tests.github.test_github_flow import issue_event, world  # noqa: F401 - fixture
from tests.helpers import git, push_config

TOOLZ = Path(__file__).resolve().parents[1] / "data" / "requirements-toolz.txt"


def test_an_unhashed_requirements_file_is_refused_on_the_issue_before_anything_runs(world):
    h, _top, _value, llm = world
    push_config(h.bare, h.tmp / "cfg", "sandbox: {requirements: reqs/analysis.txt}\n", {"reqs/analysis.txt": "scipy==1.14.1\n"})
    ev = issue_event(h.gh, "alice")
    assert h.run("issues", ev) == 0
    said = " ".join(c.body for c in h.gh.comments("o/r", ev["issue"]["number"]))
    assert "Not started" in said and "reqs/analysis.txt, line 1: scipy==1.14.1 has no --hash" in said, said
    assert "uv pip compile --generate-hashes" in said
    assert git(h.bare, "for-each-ref", "refs/heads/agent/task/") == ""
    assert h.gh.dispatches == [] and llm.requests == []


def test_a_requirements_file_that_is_not_in_the_repository_is_named(world):
    h, _top, _value, llm = world
    push_config(h.bare, h.tmp / "cfg", "sandbox: {requirements: reqs/missing.txt}\n")
    ev = issue_event(h.gh, "alice")
    assert h.run("issues", ev) == 0
    said = " ".join(c.body for c in h.gh.comments("o/r", ev["issue"]["number"]))
    assert "Not started" in said and "reqs/missing.txt (sandbox.requirements" in said and "is not in the repository" in said
    assert llm.requests == []


def test_a_hashed_requirements_file_lets_the_task_run(world):
    h, top, value, _llm = world
    push_config(h.bare, h.tmp / "cfg", "sandbox: {requirements: reqs/analysis.txt}\n", {"reqs/analysis.txt": TOOLZ.read_text()})
    ev = issue_event(h.gh, "alice")
    assert h.run("issues", ev) == 0
    h.drain()
    pulls = list(h.gh.repo("o/r").pulls.values())
    assert len(pulls) == 1 and f"{value:.2f}" in pulls[0].body
