"""`gitops-agent replay`: recorded tasks (tests/data/recordings/, Git bundles) run again through
today's engine, the model answered from the recording, the code run for real. They reproduce;
a deliberate engine change makes a replay fail, naming the first divergence."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gitops_agent.cli.main import main
from gitops_agent.eval.replay import replay
from tests.helpers import ROOT, git

RECORDINGS = ROOT / "tests" / "data" / "recordings"
NAMES = sorted(p.stem for p in RECORDINGS.glob("*.bundle"))


def unbundle(name: str, tmp: Path) -> tuple[Path, dict]:
    repo = tmp / name
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "fetch", "-q", "--update-head-ok", str(RECORDINGS / f"{name}.bundle"), "+refs/heads/*:refs/heads/*")
    git(repo, "checkout", "-q", "main")
    return repo, json.loads((RECORDINGS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_a_recorded_task_replays_to_its_outcome_and_answer(tmp_path, name):
    repo, meta = unbundle(name, tmp_path)
    before = git(repo, "for-each-ref")
    res = replay(repo, meta["task_id"])
    assert res.reproduced, res.divergences
    assert res.outcome == meta["outcome"] and res.answer_same and res.requests > 0
    assert res.cost_usd == pytest.approx(res.recorded_cost_usd)
    assert git(repo, "for-each-ref") == before  # the repository replayed from is not changed


def test_a_changed_observation_is_the_first_divergence(tmp_path, monkeypatch):
    """An engine change that alters what the code prints (here: the sandbox appends a line)."""
    from gitops_agent.sandbox.base import ProcessSandbox

    orig = ProcessSandbox.run_python

    def changed(self, code, cwd, timeout=None):  # noqa: ANN001
        obs = orig(self, code, cwd, timeout=timeout)
        return obs.model_copy(update={"stdout": obs.stdout + "one more line\n"})

    monkeypatch.setattr(ProcessSandbox, "run_python", changed)
    repo, meta = unbundle("two-nodes-with-a-fix", tmp_path)
    res = replay(repo, meta["task_id"])
    assert not res.reproduced
    first = res.first()
    assert first.where == "executor:n1 turn 1" and "the observation differs" in first.what and "one more line" in first.what


def test_a_plan_the_engine_now_cuts_short_names_the_answers_never_asked_for(tmp_path, monkeypatch, capsys):
    from gitops_agent.steps import plan as plan_mod

    orig = plan_mod.merge_plan

    def drop_last(old, raw_nodes, agents, goal, note="", **kw):  # noqa: ANN001
        return orig(
            old, raw_nodes[:-1] if isinstance(raw_nodes, list) and len(raw_nodes) > 1 else raw_nodes, agents, goal, note, **kw
        )

    monkeypatch.setattr(plan_mod, "merge_plan", drop_last)
    repo, meta = unbundle("two-nodes-with-a-fix", tmp_path)
    rc = main(["replay", meta["task_id"], "--repo", str(repo)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "DIVERGED: executor:n2: 2 recorded answer(s) were never asked for" in out


def test_replay_of_an_unknown_task_says_so(tmp_path, capsys):
    repo, _ = unbundle("demo", tmp_path)
    assert main(["replay", "no-such-task", "--repo", str(repo)]) == 1
    assert "no-such-task" in capsys.readouterr().err


def test_what_differs_between_any_two_runs_is_no_divergence(tmp_path):
    """The checkout's path, the sandbox's temporary folder in a traceback, and a set's order do not
    make a replay diverge; a changed figure does."""
    from gitops_agent.app.local import make_runtime, run_question
    from gitops_agent.models.scripted import ScriptedModel
    from gitops_agent.settings.config import AgentConfig
    from tests.helpers import make_repo

    repo = make_repo(tmp_path, "r", files={"a.txt": "1\n"})
    code = "import os\nprint(os.getcwd())\nprint({'north', 'south', 'east', 'west', 'x', 'y'})\nraise SystemExit(open('nope'))"
    script = {
        "planner": [
            {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "T", "goal": "g"}]}},
            {"tool": "finish", "input": {"answer": "A: {{ results.n1 | trim }}", "summary": "s"}},
        ],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": code}},
            {"tool": "finish_step", "input": {"status": "done", "result": "ran"}},
        ],
    }
    rt = make_runtime(repo, config=AgentConfig(), models={"scripted:r": ScriptedModel(script, name="claude-haiku-4-5")})
    res = run_question(rt, "Where?", planner_model="scripted:r", executor_model="scripted:r", task_id="rec-paths")
    assert res.outcome == "done"
    r = replay(repo, "rec-paths")
    assert r.reproduced, r.divergences
