"""The policy on what a step may change, file by file."""

from __future__ import annotations

from gitops_agent.git.checkout import Output
from gitops_agent.safety.policy import PolicyConfig, decide, matches

OWN = ".agent/tasks/t/steps/0003-n1"


def test_patterns_ignore_case_and_a_directory_pattern_covers_the_directory_itself():
    pats = PolicyConfig().refused_paths
    assert matches(".GitAttributes", pats) and matches("sub/.GITMODULES", pats)
    assert matches(".github", pats) and matches(".github/x/y.yml", pats)  # a file where .github/ was
    assert not matches("docs/github.md", pats)


def test_records_are_refused_anywhere_in_the_own_folder():
    changes = {
        f"{OWN}/0000-zz/step.json": Output("file", b"{}"),
        f"{OWN}/sub/result.md": Output("file", b"x"),
        f"{OWN}/memory.json": Output("file", b"{}"),
        f"{OWN}/0004-n2/data.csv": Output("file", b"1"),
        f"{OWN}/out.csv": Output("file", b"1"),
        f"{OWN}/step.json": Output("file", b"{}"),
    }
    d = decide(changes, PolicyConfig(), own_dir=OWN)
    assert list(d.kept) == [f"{OWN}/out.csv"]  # the top-level step.json is the engine's own: dropped quietly
    assert len(d.refused) == 4 and all("only the engine writes step records" in r for r in d.refused)


def test_workflows_are_refused_even_when_the_settings_allow_everything():
    """A repository may empty policy.refused_paths; a workflow the model wrote would still run on
    the next reviewer's event, with the repository's secrets: it is never committed."""
    wide_open = PolicyConfig(refused_paths=[], tool_files_action="allow", existing_files_action="allow")
    changes = {
        ".github/workflows/pwn.yml": Output("file", b"on: push"),
        ".GitHub/Workflows/x.yaml": Output("file", b"x"),
        ".github/ISSUE_TEMPLATE/q.md": Output("file", b"ok"),
        "report.csv": Output("file", b"1"),
    }
    d = decide(changes, wide_open, own_dir=OWN)
    assert sorted(d.kept) == [".github/ISSUE_TEMPLATE/q.md", "report.csv"]
    assert len(d.refused) == 2 and all("workflows are never written" in r for r in d.refused)


def test_the_settings_and_the_workbench_requirements_are_refused_even_when_the_policy_allows_everything():
    """Once merged with an answer, either would act on every later task: the settings steer the
    agent, `sandbox.requirements` is what the workbench installs."""
    wide_open = PolicyConfig(refused_paths=[], tool_files_action="allow", existing_files_action="allow")
    changes = {
        ".github/gitops-agent.yml": Output("file", b"policy: {}"),
        "Requirements/Workbench.TXT": Output("file", b"evil==1.0"),
        "requirements/other.txt": Output("file", b"fine==1.0"),
        f"{OWN}/requirements/workbench.txt": Output("file", b"a copy in the step's folder"),
    }
    steering = (".github/gitops-agent.yml", "./requirements//workbench.txt")
    d = decide(changes, wide_open, own_dir=OWN, settings_files=steering)
    assert sorted(d.kept) == [f"{OWN}/requirements/workbench.txt", "requirements/other.txt"]
    assert len(d.refused) == 2 and all("never the model's" in r for r in d.refused)


def test_a_file_or_directory_written_over_a_protected_file_is_refused_with_it():
    """Committing a file where a directory was drops the directory's files, and a file under where
    a file was drops that file: the write is judged as those removals too (a red team deleted the
    settings and the requirements this way while each deletion itself was refused)."""
    wide_open = PolicyConfig(refused_paths=[], tool_files_action="allow", existing_files_action="allow")
    existing = {"reqs/wb.txt", ".github/gitops-agent.yml", ".github/workflows/ci.yml", "data/a.csv", "notes"}
    changes = {
        "reqs": Output("file", b"x"),
        "reqs/wb.txt": Output("deleted"),
        ".github/gitops-agent.yml/x": Output("file", b"x"),
        ".github/gitops-agent.yml": Output("deleted"),
        "data": Output("file", b"a file where a folder of data was"),
        "data/a.csv": Output("deleted"),
        "notes/today.md": Output("file", b"under where a file was"),
        "notes": Output("deleted"),
    }
    d = decide(changes, wide_open, own_dir=OWN, existing=existing, settings_files=(".github/gitops-agent.yml", "reqs/wb.txt"))
    assert sorted(d.kept) == ["data", "data/a.csv", "notes", "notes/today.md"]
    assert any(
        r.startswith("reqs: refused (writing it would remove reqs/wb.txt, which is refused: the agent's settings")
        for r in d.refused
    )
    assert any(
        r.startswith(".github/gitops-agent.yml/x: refused (writing it would remove .github/gitops-agent.yml") for r in d.refused
    )
    # a workflow is removed by a file named .github just as well
    d = decide({".github": Output("file", b"x")}, wide_open, own_dir=OWN, existing=existing)
    assert not d.kept and "would remove .github/workflows/ci.yml, which is refused: workflows" in d.refused[0]
    # with the default policy, existing files whose change is refused stay too
    strict = PolicyConfig(existing_files_action="refuse")
    d = decide({"data": Output("file", b"x")}, strict, own_dir=OWN, existing=existing)
    assert not d.kept and "would remove data/a.csv" in d.refused[0]
