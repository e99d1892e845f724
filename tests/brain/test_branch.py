"""The brain branch: `brain init/diff/show`, overrides used at runtime, a custom executor agent
with its own prompt, model and limits, helper tools importable in the sandbox, and validation
errors that name the file and the field."""

from __future__ import annotations

import pytest

from gitops_agent.app.local import make_runtime
from gitops_agent.brain.branch import BRAIN_BRANCH, checkout_brain, default_files, list_tools, load_repo_brain
from gitops_agent.core.errors import ConfigError
from gitops_agent.git.repo import GitRepo
from gitops_agent.models.scripted import ScriptedModel
from gitops_agent.sandbox.choose import available_backends
from tests.memory.helpers import cli, config, finish, git, make_repo, node, plan, run_task, step_done

BACKEND = "bubblewrap" if "bubblewrap" in available_backends() else "subprocess"

STATISTICIAN = """\
name: statistician
role: executor
description: Tests hypotheses and reports confidence intervals.
model: scripted:stat
max_turns: 3
max_tokens: 2048
tools: [run_python, finish_step]
prompts:
  system: statistician_system.j2
  task: executor_node.j2
instructions: Always give a 95% confidence interval.
"""

STAT_SYSTEM = """\
You are `{{ agent.name }}`, the house statistician. {{ agent.instructions }}
{% for t in py_tools %}
- helper `{{ t.name }}`: {{ t.doc }}
{% endfor %}
"""

MYSTATS = '''"""Statistics helpers of this repository: means with confidence intervals."""


def mean_ci(values):
    """Mean and a 95% normal confidence interval (mean, low, high)."""
    import statistics
    m = statistics.fmean(values)
    h = 1.96 * statistics.stdev(values) / len(values) ** 0.5
    return m, m - h, m + h
'''


NODES = (node("n1", title="Mean with CI", agent="statistician"), node("n2", title="Count rows"))


def brain_commit(repo, files: dict[str, str | None]) -> str:
    g = GitRepo(repo)
    if g.tip(BRAIN_BRANCH) is None:
        g.create_branch(BRAIN_BRANCH, None)
    return g.commit_files(BRAIN_BRANCH, {p: (c.encode() if c is not None else None) for p, c in files.items()}, "brain: test", {})


def test_brain_init_diff_and_show(tmp_path):
    repo = make_repo(tmp_path)
    r = cli("brain", "diff", "--repo", str(repo))
    assert r.returncode == 1 and "brain init" in r.stderr
    r = cli("brain", "init", "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    files = git(repo, "ls-tree", "-r", "--name-only", BRAIN_BRANCH).split()
    assert (
        "agents/planner.yaml" in files
        and "prompts/planner_system.j2" in files
        and "tools/tabular.py" in files
        and "README.md" in files
    )
    assert set(default_files()) <= set(files)
    assert cli("brain", "init", "--repo", str(repo)).returncode == 1
    r = cli("brain", "diff", "--repo", str(repo))
    assert r.returncode == 0 and "same as the packaged defaults" in r.stdout

    analyst = git(repo, "show", f"{BRAIN_BRANCH}:agents/analyst.yaml").replace(
        "Compute figures with code", "Always report the row count first.\n  Compute figures with code"
    )
    brain_commit(repo, {"agents/analyst.yaml": analyst, "tools/mystats.py": MYSTATS, "notes/todo.txt": "x"})
    r = cli("brain", "diff", "--repo", str(repo))
    assert r.returncode == 0
    assert "--- default/agents/analyst.yaml\n+++ agent/brain/agents/analyst.yaml\n" in r.stdout
    assert "+  Always report the row count first.\n" in r.stdout
    assert "--- /dev/null\n+++ agent/brain/tools/mystats.py\n" in r.stdout and "planner.yaml" not in r.stdout
    r = cli("brain", "show", "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    assert "analyst" in r.stdout and "[branch, changed]" in r.stdout and "[branch, same as default]" in r.stdout
    assert "mystats" in r.stdout and "[branch, new]" in r.stdout and "ignored files on the branch: notes/todo.txt" in r.stdout


def test_a_custom_agent_from_the_brain_branch_runs_with_its_prompt_model_limits_and_tools(tmp_path):
    repo = make_repo(tmp_path)
    analyst = (default_files()["agents/analyst.yaml"]).decode().replace("Compute figures", "BRAIN-OVERRIDE. Compute figures")
    brain_commit(
        repo,
        {
            "agents/statistician.yaml": STATISTICIAN,
            "prompts/statistician_system.j2": STAT_SYSTEM,
            "agents/analyst.yaml": analyst,
            "tools/mystats.py": MYSTATS,
        },
    )
    main = ScriptedModel(
        {
            "planner": [
                plan(*NODES),
                {**plan(*NODES, note="wait"), "when": "running"},
                {**plan(*NODES, note="wait"), "when": "running"},
                {**finish("n1: {{ results.n1 }} / n2: {{ results.n2 }}", "stats"), "when": "'n1' in results and 'n2' in results"},
            ],
            "executor:n2": [step_done("3 rows")],
        }
    )
    stat = ScriptedModel(
        {
            "executor:n1": [
                {
                    "tool": "run_python",
                    "input": {
                        "code": (
                            "import tabular, mystats\n"
                            "rows, bad = tabular.load_csv('data/orders.csv', numeric=['amount'])\n"
                            "m, lo, hi = mystats.mean_ci([r['amount'] for r in rows])\n"
                            "print(f'MEAN {m:.1f} CI [{lo:.1f}, {hi:.1f}]')\n"
                            "print('TOOLS', tabular.__file__.startswith('/'), mystats.__file__.rsplit('/', 2)[-2])\n"
                        )
                    },
                },
                step_done(),
            ]
        }
    )
    res, rt, _, _ = run_task(
        repo, main, "Average order amount with a confidence interval?", backend=BACKEND, extra_models={"scripted:stat": stat}
    )
    assert res.outcome == "done", res.reason
    assert "MEAN 20.0 CI [" in res.answer and "TOOLS True tools" in res.answer
    # the statistician's node went to its own model, with its own system prompt and limits
    assert [c.meta["node"] for c in stat.calls] == ["n1", "n1"]
    assert all(c.meta.get("node") != "n1" for c in main.calls)
    sys_prompt = stat.calls[0].system
    assert sys_prompt.startswith("You are `statistician`, the house statistician. Always give a 95% confidence interval.")
    assert "- helper `mystats`: Statistics helpers of this repository" in sys_prompt and "- helper `tabular`:" in sys_prompt
    assert stat.calls[0].max_tokens == 2048 and "max_turns" not in sys_prompt
    assert "at most 3 turns" in stat.calls[0].messages[0].content[0].text
    # the analyst (n2) has the overridden instructions and sees the tools in the packaged prompt
    n2_system = next(c.system for c in main.calls if c.meta.get("node") == "n2")
    assert "BRAIN-OVERRIDE" in n2_system and "`import mystats`: Statistics helpers" in n2_system
    assert "`tabular.load_csv(path: str" in n2_system
    # the planner was told about the custom agent
    planner_system = next(c.system for c in main.calls if c.meta["role"] == "planner")
    assert "`statistician`: Tests hypotheses" in planner_system
    # the brain was checked out once per commit, keyed by its sha
    tip = git(repo, "rev-parse", BRAIN_BRANCH).strip()
    assert (repo / ".git" / "gitops-agent" / "brain" / tip / "agents" / "statistician.yaml").exists()


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {
                "agents/analyst.yaml": "name: analyst\nrole: executor\ndescription: d\nmax_turns: 0\ntools: [run_python]\n"
                "prompts: {system: executor_system.j2, task: executor_node.j2}\n"
            },
            "agent/brain:agents/analyst.yaml: field max_turns: Input should be greater than or equal to 1",
        ),
        (
            {
                "agents/analyst.yaml": "name: analyst\nrole: executor\ndescription: d\ntools: [finish]\n"
                "prompts: {system: executor_system.j2, task: executor_node.j2}\n"
            },
            "agent/brain:agents/analyst.yaml: ",
        ),
        (
            {
                "agents/helper.yaml": "name: other\nrole: executor\ndescription: d\ntools: [run_python]\n"
                "prompts: {system: executor_system.j2, task: executor_node.j2}\n"
            },
            "agent/brain:agents/helper.yaml: field name: 'other' must match the file name ('helper')",
        ),
        (
            {
                "agents/helper.yaml": "name: helper\nrole: executor\ndescription: d\ntools: [run_python]\n"
                "prompts: {system: nope.j2, task: executor_node.j2}\n"
            },
            "agent/brain:agents/helper.yaml: field prompts.system: template 'nope.j2' not found",
        ),
        ({"prompts/executor_system.j2": "Hello {% if agent %}\n"}, "agent/brain:prompts/executor_system.j2: line 1: "),
        (
            {"prompts/executor_system.j2": "You are {{ agent.nmae }}.\n"},
            "agent/brain:prompts/executor_system.j2: does not render for agent",
        ),
        ({"tools/bad.py": "def f(:\n"}, "agent/brain:tools/bad.py: line 1: "),
        ({"tools/json.py": '"""x"""\n'}, "agent/brain:tools/json.py: the module name 'json' would hide a standard module"),
        ({"agents/planner.yaml": "{not: yaml: at all"}, "agent/brain:agents/planner.yaml: not valid YAML"),
    ],
)
def test_a_broken_brain_branch_is_a_clear_error_naming_file_and_field(tmp_path, files, message):
    repo = make_repo(tmp_path)
    brain_commit(repo, files)
    with pytest.raises(ConfigError) as e:
        make_runtime(repo, config=config())
    assert message in str(e.value), str(e.value)
    r = cli("run", "--repo", str(repo), "--model", "scripted:demo", "question")
    assert r.returncode == 1 and message in r.stderr


def test_the_packaged_brain_without_a_branch_and_the_checkout_cache(tmp_path):
    repo = make_repo(tmp_path)
    g = GitRepo(repo)
    assert checkout_brain(g) is None
    brain = load_repo_brain(g)
    assert [t["name"] for t in list_tools(brain)] == ["tabular", "warehouse"]
    brain_commit(repo, {"tools/mystats.py": MYSTATS})
    d1 = checkout_brain(g)
    assert d1 is not None and d1 == checkout_brain(g) and (d1 / ".complete").exists()
    assert [t["name"] for t in list_tools(load_repo_brain(g))] == ["mystats", "tabular", "warehouse"]
    brain_commit(repo, {"tools/mystats.py": None})
    assert checkout_brain(g) != d1
