"""`evolve`: recent experiences (failures and lessons first) go to the model, its proposed brain
changes are validated (bad ones go back to it) and committed on agent/brain-proposal/<date>,
based on agent/brain, never merged."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from gitops_agent.brain.branch import BRAIN_BRANCH, default_files
from gitops_agent.core.errors import AgentError
from gitops_agent.core.messages import ToolResultBlock
from gitops_agent.evolve.propose import gather, pull_request_for, run_evolve
from gitops_agent.git.repo import GitRepo
from gitops_agent.memory.store import MemoryStore
from gitops_agent.models.scripted import ScriptedModel
from tests.memory.helpers import cli, experience, git, make_repo

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def analyst_with(extra: str) -> str:
    data = yaml.safe_load(default_files()["agents/analyst.yaml"])
    data["instructions"] += extra + "\n"
    return yaml.safe_dump(data, sort_keys=False)


def seeded(tmp_path):
    repo = make_repo(tmp_path)
    store = MemoryStore.open(GitRepo(repo))
    t0 = NOW - timedelta(days=10)
    store.add_experience(experience("1-ok", "Average order value per region?", date=t0))
    store.add_experience(
        experience(
            "2-fail",
            "Total revenue per month?",
            outcome="failed",
            date=t0 + timedelta(days=1),
            failures=["n1 (Load) failed: ValueError: could not convert string to float: 'n/a'"],
        )
    )
    store.add_experience(
        experience(
            "3-lesson",
            "Median delivery time per carrier?",
            date=t0 + timedelta(days=2),
            lessons=["Amounts and durations can be 'n/a'; parse numbers with a fallback."],
        )
    )
    return repo, store


GOOD = {
    "tool": "propose_brain_change",
    "input": {
        "title": "Parse numbers defensively",
        "rationale": "Tasks {{ experiences[0] }} and 3-lesson failed or struggled on 'n/a' values.",
        "experiences": ["2-fail", "3-lesson"],
        "changes": [
            {
                "path": "agents/analyst.yaml",
                "content": analyst_with("Parse numeric columns with tabular.to_number; 'n/a' happens."),
            }
        ],
    },
}


def test_evolve_proposes_validated_changes_on_a_new_branch_based_on_agent_brain(tmp_path):
    repo, store = seeded(tmp_path)
    assert [e.task_id for e in gather(store, 3)] == ["2-fail", "3-lesson", "1-ok"]  # failures, then lessons
    model = ScriptedModel({"evolve": [GOOD]})
    g = GitRepo(repo)
    p = run_evolve(g, model, last=10, now=NOW)
    assert p.branch == "agent/brain-proposal/20261126-120000"
    assert p.title == "Parse numbers defensively" and p.experiences == ["2-fail", "3-lesson"]
    assert "2-fail" in p.rationale and list(p.changes) == ["agents/analyst.yaml"]
    # agent/brain was created from the defaults (there was none) and is untouched by the proposal
    base = git(repo, "rev-parse", BRAIN_BRANCH).strip()
    assert p.base == base and git(repo, "rev-parse", f"{p.branch}~1").strip() == base
    assert "tabular.to_number" not in git(repo, "show", f"{BRAIN_BRANCH}:agents/analyst.yaml")
    assert "tabular.to_number" in git(repo, "show", f"{p.branch}:agents/analyst.yaml")
    msg = git(repo, "log", "-1", "--format=%B", p.branch)
    assert msg.startswith("evolve: Parse numbers defensively\n\nTasks 2-fail and 3-lesson") and "Agent-Role: evolve" in msg
    assert "+  Parse numeric columns with tabular.to_number" in p.diff
    # what the model saw: the failure first, with its problem, and the current brain
    req = model.calls[0]
    text = req.messages[0].content[0].text
    assert text.index("`2-fail`") < text.index("`3-lesson`") < text.index("`1-ok`")
    assert "Problem: n1 (Load) failed: ValueError" in text and "--- agents/analyst.yaml" in text
    assert [t.name for t in req.tools] == ["propose_brain_change"]
    branch, title, body = pull_request_for(p)
    assert branch == p.branch and title == "brain: Parse numbers defensively"
    assert "`agents/analyst.yaml`" in body and "`2-fail`" in body and "Merge into `agent/brain`" in body
    # a second proposal the same second gets its own branch
    p2 = run_evolve(g, ScriptedModel({"evolve": [GOOD]}), now=NOW)
    assert p2.branch == "agent/brain-proposal/20261126-120000-2"


def test_bad_proposals_go_back_to_the_model_until_one_is_valid(tmp_path):
    repo, _ = seeded(tmp_path)
    bad_path = {
        "tool": "propose_brain_change",
        "input": {"rationale": "r", "experiences": [], "changes": [{"path": "../etc/passwd", "content": "x"}]},
    }
    bad_yaml = {
        "tool": "propose_brain_change",
        "input": {
            "rationale": "r",
            "experiences": [],
            "changes": [{"path": "agents/analyst.yaml", "content": "name: analyst\nrole: boss\n"}],
        },
    }
    bad_tpl = {
        "tool": "propose_brain_change",
        "input": {
            "rationale": "r",
            "experiences": [],
            "changes": [{"path": "prompts/executor_system.j2", "content": "{% raw %}{{ agent.nope }}{% endraw %}"}],
        },
    }
    model = ScriptedModel({"evolve": [bad_path, bad_yaml, bad_tpl, GOOD]})
    p = run_evolve(GitRepo(repo), model, now=NOW)
    assert p.title == "Parse numbers defensively" and len(model.calls) == 4
    errors = [b.content for c in model.calls[1:] for b in c.messages[-1].content if isinstance(b, ToolResultBlock)]
    assert "is not a brain file" in errors[0]
    assert "agent/brain:agents/analyst.yaml: field role" in errors[1]
    assert "agent/brain:prompts/executor_system.j2: does not render" in errors[2]
    # never valid: a clear error, and no branch
    with pytest.raises(AgentError, match="rejected 4 times"):
        run_evolve(GitRepo(repo), ScriptedModel({"evolve": [bad_path] * 4}), now=NOW + timedelta(hours=1))
    assert git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/brain-proposal/").split() == [p.branch]


def test_evolve_cli_and_its_errors(tmp_path):
    repo = make_repo(tmp_path)
    script = tmp_path / "evolve.yaml"
    script.write_text(yaml.safe_dump({"evolve": [GOOD]}))
    r = cli("evolve", "--repo", str(repo), "--model", f"scripted:{script}")
    assert r.returncode == 1 and "no memory yet" in r.stderr
    MemoryStore.open(GitRepo(repo)).add_experience(experience("2-fail", "Total revenue per month?", outcome="failed"))
    r = cli("evolve", "--repo", str(repo), "--model", f"scripted:{script}", "--last", "5", "--no-eval")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("proposal: agent/brain-proposal/") and "Tasks 2-fail and 3-lesson" in r.stdout
    assert "git -C" in r.stdout and "diff agent/brain agent/brain-proposal/" in r.stdout and "measured" not in r.stdout


def test_evolve_measures_the_proposal_on_the_suite_and_says_so(tmp_path, monkeypatch):
    repo = make_repo(tmp_path)
    (repo / ".github").mkdir()
    (repo / ".github" / "gitops-agent.yml").write_text("evolve: {questions: [q01, q04]}\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "config")
    MemoryStore.open(GitRepo(repo)).add_experience(experience("2-fail", "Total revenue per month?", outcome="failed"))
    script = tmp_path / "evolve.yaml"
    script.write_text(yaml.safe_dump({"evolve": [GOOD]}))
    r = cli("evolve", "--repo", str(repo), "--model", f"scripted:{script}", "--eval-model", "scripted")
    assert r.returncode == 0, r.stderr
    assert "measured: SAME" in r.stdout and "current brain: pass" in r.stdout and "| q01 | ✓" in r.stdout
    assert "eval(dabench)" in git(repo, "log", "-1", "--format=%s", "agent/eval")  # the numbers are in the history too
    # a model the suite cannot reach is named before anything runs
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    r = cli("evolve", "--repo", str(repo), "--model", f"scripted:{script}", "--eval-model", "anthropic:claude-haiku-4-5")
    assert r.returncode != 0 and "ANTHROPIC_API_KEY" in r.stderr


def _usage_model(proposals: list[dict], output_tokens: int = 20_000) -> ScriptedModel:
    """A scripted proposer whose every answer costs like a long one (the price is list price)."""
    m = ScriptedModel({"evolve": proposals}, name="claude-sonnet-4-6")
    orig = m.query

    def query(req):  # noqa: ANN001
        resp = orig(req)
        resp.usage.output_tokens = output_tokens
        return resp

    m.query = query  # type: ignore[method-assign]
    return m


def test_evolve_stops_at_its_budget(tmp_path):
    """Every correction is a paid call: once evolve.max_usd is spent, no further one is made."""
    repo, _ = seeded(tmp_path)
    bad = {
        "tool": "propose_brain_change",
        "input": {"title": "t", "rationale": "r", "changes": [{"path": "nope.txt", "content": "x"}]},
    }
    model = _usage_model([bad] * 4)  # 20,000 output tokens at $15/Mtok: $0.30 a call
    with pytest.raises(AgentError, match=r"evolve.max_usd"):
        run_evolve(GitRepo(repo), model, last=10, now=NOW, max_usd=0.5)
    assert len(model.calls) == 2  # $0.30, then $0.60 > $0.50: stopped before a third


@pytest.mark.parametrize(
    "field,value",
    [
        ("model", "anthropic:claude-opus-4-1"),
        ("cascade", ["anthropic:claude-sonnet-4-6"]),
        ("max_turns", 50),
        ("max_tokens", 64000),
        ("max_corrections", 10),
    ],
)
def test_a_proposal_that_changes_a_capability_is_refused_and_shown(tmp_path, field, value):
    repo, _ = seeded(tmp_path)
    data = yaml.safe_load(default_files()["agents/analyst.yaml"])
    data[field] = value
    grab = {
        "tool": "propose_brain_change",
        "input": {
            "title": "More power",
            "rationale": "r",
            "experiences": ["2-fail"],
            "changes": [{"path": "agents/analyst.yaml", "content": yaml.safe_dump(data)}],
        },
    }
    model = ScriptedModel({"evolve": [grab, GOOD]})
    p = run_evolve(GitRepo(repo), model, last=10, now=NOW)
    assert len(model.calls) == 2 and field in p.refused[0]
    assert p.usage.total > 0 and "Agent-Usage: in=0 out=0" not in git(repo, "log", "-1", "--format=%B", p.branch)
    back = [b for b in model.calls[1].messages[-1].content if isinstance(b, ToolResultBlock)]
    assert back and "trusted settings" in back[0].content and field in back[0].content
    assert (
        f"{field}:" not in git(repo, "show", f"{p.branch}:agents/analyst.yaml")
        or yaml.safe_load(git(repo, "show", f"{p.branch}:agents/analyst.yaml")).get(field) != value
    )
    body = pull_request_for(p)[2]
    assert "Refused: capability changes" in body and field in body


def test_a_new_agent_may_not_bring_its_own_model(tmp_path):
    repo, _ = seeded(tmp_path)
    data = yaml.safe_load(default_files()["agents/analyst.yaml"])
    data.update(name="oracle", model="openai:gpt-4o")
    grab = {
        "tool": "propose_brain_change",
        "input": {
            "title": "An oracle",
            "rationale": "r",
            "experiences": [],
            "changes": [{"path": "agents/oracle.yaml", "content": yaml.safe_dump(data)}],
        },
    }
    model = ScriptedModel({"evolve": [grab] * 4})
    with pytest.raises(AgentError, match="rejected"):
        run_evolve(GitRepo(repo), model, last=10, now=NOW)
    assert "model" in model.calls[-1].messages[-1].content[0].content


def test_a_tool_the_compiler_cannot_take_goes_back_to_the_model(tmp_path):
    """A 200 KB tool of nested subscripts makes compile() raise RecursionError, not SyntaxError:
    the model is told, evolve does not crash."""
    repo, _ = seeded(tmp_path)
    deep = {
        "tool": "propose_brain_change",
        "input": {
            "title": "t",
            "rationale": "r",
            "experiences": [],
            "changes": [{"path": "tools/deep.py", "content": '"""d"""\nx = a' + "[0]" * 60000 + "\n"}],
        },
    }
    model = ScriptedModel({"evolve": [deep, GOOD]})
    p = run_evolve(GitRepo(repo), model, last=10, now=NOW)
    assert list(p.changes) == ["agents/analyst.yaml"]
    assert "cannot be compiled" in model.calls[1].messages[-1].content[0].content
    # and this process compiles as before (a RecursionError inside compile() once broke it: the
    # next compile failed with "AST constructor recursion depth mismatch")
    compile("x = " + "(" * 30 + "1" + ")" * 30 + "\n" + "def f(a):\n    return [a[0] for _ in a]\n", "after", "exec")
