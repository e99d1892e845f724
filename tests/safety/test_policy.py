"""The policy on what a step may change, file by file."""

from __future__ import annotations

from agent.core.config import PolicyConfig
from agent.git.checkout import Output
from agent.safety.policy import decide, matches

OWN = ".agent/tasks/t/steps/0003-n1"


def test_patterns_ignore_case_and_a_directory_pattern_covers_the_directory_itself():
    pats = PolicyConfig().refused_paths
    assert matches(".GitAttributes", pats) and matches("sub/.GITMODULES", pats)
    assert matches(".github", pats) and matches(".github/x/y.yml", pats)  # a file where .github/ was
    assert not matches("docs/github.md", pats)


def test_records_are_refused_anywhere_in_the_own_folder():
    changes = {f"{OWN}/0000-zz/step.json": Output("file", b"{}"), f"{OWN}/sub/result.md": Output("file", b"x"),
               f"{OWN}/memory.json": Output("file", b"{}"), f"{OWN}/0004-n2/data.csv": Output("file", b"1"),
               f"{OWN}/out.csv": Output("file", b"1"), f"{OWN}/step.json": Output("file", b"{}")}
    d = decide(changes, PolicyConfig(), own_dir=OWN)
    assert list(d.kept) == [f"{OWN}/out.csv"]  # the top-level step.json is the engine's own: dropped quietly
    assert len(d.refused) == 4 and all("only the engine writes step records" in r for r in d.refused)
