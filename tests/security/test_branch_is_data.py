"""The third review: what a branch holds is data, never a capability. Each test plays one finding
as the attacker did, through the real job chain or the CLI: an evolve proposal that names an
endpoint (F1), a patient planner against a small budget (F4), closing keywords in commit
messages (F6), a node run again and again (F7), a recording that asks for no sandbox (F8), a
template that builds gigabytes (F9), a login that is a word of the settings (F10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gitops_agent.brain.branch import default_files
from tests.fakes.agent_responder import AgentResponder, tool
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import GIT_ENV, KEY, ROOT, commits, git, make_repo, push_config, task_branch
from tests.security.harness import Attack, attacker, canary

OPENAI_KEY = "sk-proj-" + canary("OPENAIKEY")


def _agent_yaml(name: str, **fields) -> str:
    data = yaml.safe_load(default_files()[f"agents/{name}.yaml"])
    data.update(fields)
    return yaml.safe_dump(data, sort_keys=False)


def _push_brain(w, files: dict[str, str]) -> None:
    src = w.tmp / "brain-src"
    src.mkdir(exist_ok=True)
    for path, text in files.items():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_text(text)
    git(src, "init", "-q", "-b", "agent/brain")
    git(src, "add", "-A")
    git(src, "commit", "-q", "-m", "brain")
    git(src, "push", "-q", "-f", str(w.bare), "agent/brain:agent/brain")


# ----------------------------------------------------------------------------- F1


def test_an_evolve_proposal_naming_an_endpoint_never_reaches_it(world):
    """The proposal points the planner (then a cascade) at a listener, then asks for another
    model without an endpoint, then gives up and sharpens instructions: the listener hears
    nothing, the OpenAI key goes nowhere, and the pull request says what was refused."""
    w = world
    w.canaries["openai key"] = OPENAI_KEY
    w.model(attacker([Attack("n1", "print(55)")]))
    w.run_issue()  # one finished task: one experience on agent/memory
    push_config(w.bare, w.tmp / "cfg-work", "evolve: {model: scripted, questions: [q01]}\n")
    url = f"http://127.0.0.1:{w.listener.port}/v1"
    analyst = yaml.safe_load(default_files()["agents/analyst.yaml"])
    analyst["instructions"] += "Check for ties.\n"
    proposals = [
        [{"path": "agents/planner.yaml", "content": _agent_yaml("planner", model=f"openai:gpt-4o-mini@{url}")}],
        [{"path": "agents/analyst.yaml", "content": _agent_yaml("analyst", cascade=[f"openai:gpt-4o@{url}"])}],
        [{"path": "agents/planner.yaml", "content": _agent_yaml("planner", model="openai:gpt-4o-mini", max_corrections=10)}],
        [{"path": "agents/analyst.yaml", "content": yaml.safe_dump(analyst, sort_keys=False)}],
    ]
    script = w.tmp / "evolve.yaml"
    script.write_text(
        yaml.safe_dump(
            {
                "evolve": [
                    {
                        "tool": "propose_brain_change",
                        "input": {"title": "Faster planner", "rationale": "r", "experiences": [], "changes": c},
                    }
                    for c in proposals
                ]
            }
        )
    )
    r = w.job(
        "repository_dispatch",
        {"action": "agent-evolve", "sender": {"login": "alice", "type": "User"}},
        GITOPS_AGENT_PLANNER_MODEL=f"scripted:{script}",
        OPENAI_API_KEY=OPENAI_KEY,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert w.listener.hits == []
    prs = [p for p in w.gh.repo("o/r").pulls.values() if p.pull.base == "agent/brain"]
    assert len(prs) == 1
    body = prs[0].body
    assert "Refused: capability changes" in body and "model, max_corrections" in body
    head = prs[0].pull.head
    assert "ties" in git(w.bare, "show", f"{head}:agents/analyst.yaml")
    assert "@" not in git(w.bare, "show", f"{head}:agents/planner.yaml").split("model:")[1].split("\n")[0]
    w.assert_nothing_leaked(allow_changed=("cfg-work/", "evolve.yaml"))


def test_a_brain_naming_an_endpoint_stops_the_job_before_any_call(world):
    w = world
    w.canaries["openai key"] = OPENAI_KEY
    url = f"http://127.0.0.1:{w.listener.port}/v1"
    _push_brain(w, {"agents/planner.yaml": _agent_yaml("planner", model=f"openai:gpt-4o-mini@{url}")})
    w.model(attacker([Attack("n1", "print(55)")]))
    r = w.job("issues", w.issue("Sum the numbers", "Please."), OPENAI_API_KEY=OPENAI_KEY)
    assert r.returncode != 0 and "agents/planner.yaml" in r.stderr and "names an endpoint" in r.stderr
    w.drain()
    assert w.listener.hits == [] and w.llm is not None and w.llm.requests == []
    w.assert_nothing_leaked()


# ----------------------------------------------------------------------------- F4


def _patient_planner() -> AgentResponder:
    """A planner that never gives a plan the engine can take: an unknown agent, 27 KB of text."""
    junk = "Let me think about this very carefully. " * 700

    def planner(body, text, n):
        return {
            "content": [
                {"type": "text", "text": junk},
                {
                    "type": "tool_use",
                    "name": "update_plan",
                    "input": {"nodes": [{"id": "n1", "title": "x", "goal": "x", "agent": "nobody"}]},
                },
            ],
            "stop_reason": "tool_use",
        }

    return AgentResponder({"planner": planner})


def _run(repo: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in GIT_ENV.items() if not k.startswith(("ANTHROPIC", "OPENAI"))}
    env.update(ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY=KEY, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "gitops_agent", "run", "--repo", str(repo), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _brain_branch(repo: Path, files: dict[str, str]) -> None:
    assert (
        subprocess.run(
            [sys.executable, "-m", "gitops_agent", "brain", "init", "--repo", str(repo)],
            env={**GIT_ENV, "PYTHONPATH": str(ROOT)},
            capture_output=True,
        ).returncode
        == 0
    )
    work = repo.parent / "brain-work"
    git(repo.parent, "clone", "-q", "--branch", "agent/brain", str(repo), str(work))
    for path, text in files.items():
        (work / path).write_text(text)
    git(work, "commit", "-qam", "brain")
    git(work, "push", "-q", "origin", "agent/brain")


def test_a_patient_planner_stays_within_a_small_budget(tmp_path):
    repo = make_repo(tmp_path, files={"data/x.csv": "a\n1\n"})
    _brain_branch(repo, {"agents/planner.yaml": _agent_yaml("planner", max_corrections=40)})
    with FakeAnthropic(api_key=KEY, responder=_patient_planner(), min_cache_tokens=0) as server:
        p = _run(repo, server.url, "--model", "anthropic:claude-sonnet-4-6", "--max-usd", "0.05", "q")
        assert p.returncode != 0 and "agents/planner.yaml" in p.stderr and "max_corrections" in p.stderr
        assert server.requests == []  # refused before any call: a brain's loop count is capped
        _brain_branch_set(repo, {"agents/planner.yaml": _agent_yaml("planner", max_corrections=10)})
        p = _run(repo, server.url, "--model", "anthropic:claude-sonnet-4-6", "--max-usd", "0.30", "q")
        calls = [r for r in server.requests if r.path.startswith("/v1/messages")]
    assert "budget" in p.stdout + p.stderr
    task = task_branch(repo).removeprefix("agent/task/")
    steps = [
        json.loads(git(repo, "show", f"agent/task/{task}:{f}"))
        for f in git(repo, "ls-tree", "-r", "--name-only", f"agent/task/{task}").split()
        if f.endswith("_plan/step.json")
    ]
    spent = sum(s["cost_usd"] for s in steps)
    one_call = max(s["cost_usd"] / max(s["turns"], 1) for s in steps)
    assert 1 < len(calls) < 11  # stopped by the dollars, not by the correction count
    assert spent <= 0.30 + one_call  # the budget plus at most the call that crossed it


def _brain_branch_set(repo: Path, files: dict[str, str]) -> None:
    work = repo.parent / "brain-work"
    for path, text in files.items():
        (work / path).write_text(text)
    git(work, "commit", "-qam", "brain again")
    git(work, "push", "-q", "origin", "agent/brain")


# ----------------------------------------------------------------------------- F6, F7 (local, scripted)


def _scripted_run(
    repo: Path, script: dict, question: str, *args: str, extra_env: dict | None = None
) -> subprocess.CompletedProcess:
    path = repo.parent / "script.yaml"
    path.write_text(yaml.safe_dump(script))
    env = {k: v for k, v in GIT_ENV.items() if not k.startswith(("ANTHROPIC", "OPENAI"))}
    env.update(PYTHONPATH=str(ROOT), **(extra_env or {}))
    return subprocess.run(
        [sys.executable, "-m", "gitops_agent", "run", "-q", "--repo", str(repo), "--model", f"scripted:{path}", *args, question],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_closing_keywords_never_reach_a_commit_message(tmp_path):
    repo = make_repo(tmp_path, files={"data/x.csv": "a\n1\n"})
    script = {
        "planner": [
            {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "Fixes #6 and closes octo/other#9", "goal": "g"}]}},
            {"tool": "finish", "input": {"answer": "done", "summary": "resolves #7, fix https://github.com/o/r/issues/8"}},
        ],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "done", "result": "ok"}}],
    }
    p = _scripted_run(repo, script, "Closes #5: what is in data/x.csv?")
    assert p.returncode == 0, p.stderr
    messages = [m for m in git(repo, "log", "--format=%B%x00", task_branch(repo)).split("\0") if m.strip()]
    text = "\n".join(messages)
    assert "Closes (see) #5" in text and "Fixes (see) #6" in text and "closes (see) octo/other#9" in text
    from gitops_agent.git.messages import CLOSING

    assert not [m for m in messages if CLOSING.search(m)], messages


def test_a_failed_node_runs_at_most_max_node_attempts_times(tmp_path):
    repo = make_repo(tmp_path, files={"data/x.csv": "a\n1\n", ".github/gitops-agent.yml": "budget: {max_node_attempts: 2}\n"})
    again = [{"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "t", "goal": f"try {i}"}]}} for i in range(5)]
    script = {
        "planner": again + [{"tool": "finish", "input": {"answer": "gave up", "summary": "s"}}],
        "executor:n1": [{"tool": "finish_step", "input": {"status": "failed", "result": "no"}}] * 5,
    }
    p = _scripted_run(repo, script, "q")
    branch = task_branch(repo)
    runs = [c for c in commits(repo, branch) if c["subject"].startswith("agent(execute): n1")]
    assert len(runs) == 2, [c["subject"] for c in commits(repo, branch)]
    plan = json.loads(git(repo, "show", f"{branch}:.agent/tasks/{branch.removeprefix('agent/task/')}/plan.json"))
    assert plan["nodes"][0]["attempts"] == 2
    assert p.returncode in (0, 1)


# ----------------------------------------------------------------------------- F9


BOMB = "{{ ([('x' * 1000000)] * 3000) | join | length }}"
NESTED = "{% set b = 'x' * 1000000 %}{{ [" + ",".join(["b"] * 3000) + "] | join | length }}"


@pytest.mark.parametrize("template", [BOMB, NESTED], ids=["repeat", "literal"])
def test_a_template_that_would_build_gigabytes_leaves_the_job_small(world, template):
    """On agent/brain (a careless merge, or a proposal adopted): the job that renders it stays
    within a few hundred MiB and says which template it refused."""
    w = world
    planner_task = default_files()["prompts/planner_task.j2"].decode() + "\n" + template + "\n"
    _push_brain(w, {"prompts/planner_task.j2": planner_task})
    w.model(attacker([Attack("n1", "print(55)")]))
    r = w.job("issues", w.issue("Sum the numbers", "Please."))
    assert r.returncode != 0 and "planner_task.j2" in r.stderr
    assert r.peak_rss_kb < 400 * 1024, f"the job peaked at {r.peak_rss_kb // 1024} MiB"
    w.drain()
    w.assert_nothing_leaked()


def test_evolve_validation_of_a_template_bomb_stays_small(tmp_path):
    """evolve checks a proposal by rendering it: in a child with a memory cap, so the process
    that holds the keys does not grow."""
    import resource

    from gitops_agent.brain.branch import validate_files
    from gitops_agent.core.errors import ConfigError

    files = dict(default_files())
    files["prompts/planner_task.j2"] = (files["prompts/planner_task.j2"].decode() + "\n" + BOMB + "\n").encode()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="planner_task.j2"):
        validate_files(files)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


# ----------------------------------------------------------------------------- F10


@pytest.mark.parametrize("login", ["require", "isolation", "hosts", "image", "agent"])
def test_a_login_that_is_a_word_of_the_settings_is_not_let_through(login):
    from gitops_agent.github.gate import decide

    config = (
        "sandbox: {require_isolation: true}\ngithub: {image_hosts: [x]}\n# the agent answers questions\n"
        "trigger:\n  allow: [carol]\n  allow_bots:\n    - helper[bot]\n"
    )

    class Api:
        posted: list = []

        def call(self, method, path, body=None, raw=False):  # noqa: ANN001
            if path.startswith("/collaborators/"):
                return 404, None
            if path.startswith("/contents/"):
                return 200, config
            if method == "POST":
                Api.posted.append(body)
                return 201, {}
            return 200, []

    event = {
        "action": "created",
        "issue": {"number": 3},
        "comment": {"body": "/agent do it", "user": {"login": login, "type": "User"}},
        "repository": {"default_branch": "main"},
    }
    proceed, why = decide({"GITHUB_EVENT_NAME": "issue_comment"}, event, Api())
    assert not proceed and "cannot write" in why
    listed = dict(event, comment={"body": "/agent do it", "user": {"login": "Carol", "type": "User"}})
    assert decide({"GITHUB_EVENT_NAME": "issue_comment"}, listed, Api())[0]
    bot = dict(event, comment={"body": "/agent do it", "user": {"login": "helper[bot]", "type": "Bot"}})
    assert decide({"GITHUB_EVENT_NAME": "issue_comment"}, bot, Api())[0]


# ----------------------------------------------------------------------------- F8


def test_a_recording_that_asks_for_no_sandbox_is_replayed_isolated(tmp_path):
    """A recording is someone else's code: its base commit says `backend: subprocess`, its code
    reads the agent's environment and writes outside the tree. Replayed, it runs under
    bubblewrap with the replaying user's settings: nothing outside, no variable of theirs."""
    marker = tmp_path / "PWNED_by_replay.txt"
    code = (
        "import os, pathlib\n"
        "env = open(f'/proc/{os.getppid()}/environ', 'rb').read().decode(errors='replace').split('\\0')\n"
        "seen = [e.split('=')[0] for e in env if 'CANARY' in e]\n"
        f"try:\n    pathlib.Path({str(marker)!r}).write_text('outside')\n"
        f"except OSError as e:\n    print('write', type(e).__name__)\n"
        "print('leaked', seen)\n"
    )
    repo = make_repo(
        tmp_path,
        files={"data/x.csv": "a\n1\n", ".github/gitops-agent.yml": "sandbox: {backend: subprocess, require_isolation: false}\n"},
    )
    script = {
        "planner": [
            {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "t", "goal": "g"}]}},
            {"tool": "finish", "input": {"answer": "done", "summary": "s"}},
        ],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": code}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
    }
    p = _scripted_run(repo, script, "record me", extra_env={"CANARY_AUTHOR": "x"})
    assert p.returncode == 0, p.stderr
    assert marker.exists()  # the author's run was not sandboxed: that is what they recorded
    marker.unlink()
    task = task_branch(repo).removeprefix("agent/task/")
    env = {k: v for k, v in GIT_ENV.items() if not k.startswith(("ANTHROPIC", "OPENAI"))}
    env.update(PYTHONPATH=str(ROOT), CANARY_VICTIM_SECRET="sk-ant-CANARYvictim0123456789")
    keep = tmp_path / "kept"
    r = subprocess.run(
        [sys.executable, "-m", "gitops_agent", "replay", task, "--repo", str(repo), "--keep", str(keep)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert not marker.exists(), "the replayed code wrote outside its tree"
    turns = [f for f in git(keep, "ls-tree", "-r", "--name-only", f"agent/task/{task}").split() if f.endswith("-n1/turns.jsonl")]
    obs = json.loads(git(keep, "show", f"agent/task/{task}:{turns[0]}").splitlines()[0])["observation"]
    assert obs["backend"] == "bubblewrap" and "leaked []" in obs["stdout"], obs
    assert r.returncode == 1 and "DIVERGED" in r.stdout  # it did not do what the author's run did


def test_a_failed_node_under_a_new_id_keeps_its_count(tmp_path):
    """Round 4, B5: the planner drops the failed node and adds its goal again under a new id."""
    repo = make_repo(tmp_path, files={"data/x.csv": "a\n1\n", ".github/gitops-agent.yml": "budget: {max_node_attempts: 1}\n"})
    again = [
        {"tool": "update_plan", "input": {"nodes": [{"id": f"n{i}", "title": "t", "goal": "Sum column a"}]}} for i in range(1, 6)
    ]
    script = {"planner": again + [{"tool": "finish", "input": {"answer": "gave up", "summary": "s"}}]}
    script.update(
        {f"executor:n{i}": [{"tool": "finish_step", "input": {"status": "failed", "result": "no"}}] for i in range(1, 6)}
    )
    _scripted_run(repo, script, "q")
    runs = [c for c in commits(repo, task_branch(repo)) if c["subject"].startswith("agent(execute)")]
    assert len(runs) == 1, [c["subject"] for c in commits(repo, task_branch(repo))]


@pytest.mark.parametrize(
    "config",
    [
        'trigger:\n  "allow": [carol]\n',
        "trigger:\n  'allow':\n    - carol\n",
        '{"trigger": {"allow": ["carol"], "label": "agent"}}\n',
    ],
    ids=["double", "single-block", "json"],
)
def test_a_listed_login_is_let_through_whatever_the_yaml_quoting(config):
    """Round 4, B6: the intake reads these the same; the gate must too (else it refuses the
    listed person and posts a refusal)."""
    from gitops_agent.github.gate import _allowed_logins

    assert _allowed_logins(config) == {"carol"}


def test_nodes_run_side_by_side_share_what_is_left_of_the_budget(tmp_path):
    """Round 4, B4: four nodes dispatched at once each checked the whole remaining budget, so the
    task spent about 7 times its $0.05. Each now spends its share: at most one call each past it."""
    from tests.security.harness import World

    junk = "Let me reason about the data once more, carefully. " * 600  # about 30 KB of output a call
    nodes = [{"id": f"n{i}", "title": f"part {i}", "goal": f"Analyse part {i}."} for i in range(1, 5)]

    def planner(body, text, n):
        return (
            tool("update_plan", nodes=nodes, note="split")
            if "There is no plan yet" in text
            else tool("finish", answer="done", summary="d")
        )

    def executor(body, text, n):
        return {
            "content": [
                {"type": "text", "text": junk},
                {"type": "tool_use", "name": "run_python", "input": {"code": "print(1)"}},
            ],
            "stop_reason": "tool_use",
        }

    w = World(tmp_path, config="budget: {max_usd: 0.05}\ngithub: {max_parallel: 4, inline_steps: false}\n")
    try:
        w.model(AgentResponder({"planner": planner, **{f"executor:n{i}": executor for i in range(1, 5)}}))
        w.run_issue()
        recs = [r for r in w.step_records() if r.get("role") == "executor"]
        calls = sum(r["turns"] for r in recs)
        per_call = max(r["cost_usd"] / r["turns"] for r in recs)
        assert len(recs) == 4 and calls == 4, [(r["node"], r["turns"]) for r in recs]  # one call each, none more
        assert sum(r["cost_usd"] for r in recs) <= 0.05 + 4 * per_call
    finally:
        w.close()


# ----------------------------------------------------------------------------- round 4: B1, B7


class _Exec:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling it creates the marker: code ran on the host


def _gadget(marker: Path, obj: str = "task.budget") -> str:
    import pickle

    payload = json.dumps(pickle.dumps(_Exec(str(marker)), protocol=0).decode("latin-1"))
    return "{%- set _y = " + obj + ".parse_raw(" + payload + ", content_type='application/pickle', allow_pickle=True) -%}\n"


@pytest.mark.parametrize("obj", ["task.budget", "task", "node", "agent", "plan"])
def test_a_template_cannot_call_a_method_of_a_model_object(tmp_path, obj):
    """Round 4, B1: pydantic's parse_raw unpickles a string the template writes. A template reads
    fields and properties and calls methods of plain values only."""
    from gitops_agent.brain.branch import validate_files
    from gitops_agent.core.errors import ConfigError

    marker = tmp_path / "PWNED_by_template"
    files = dict(default_files())
    files["prompts/planner_task.j2"] = (_gadget(marker, obj) + files["prompts/planner_task.j2"].decode()).encode()
    files["prompts/executor_node.j2"] = (_gadget(marker, obj) + files["prompts/executor_node.j2"].decode()).encode()
    with pytest.raises(ConfigError, match="unsafe"):
        validate_files(files)
    assert not marker.exists()


def test_what_templates_may_still_do():
    from gitops_agent.core.plan import Plan, PlanNode
    from gitops_agent.templates.env import bounded_render, template_env

    plan = Plan(version=1, goal="g", nodes=[PlanNode(id="n1", title="t", goal="g")])
    text = (
        "{% for n in plan.nodes %}{{ loop.index }}{{ n.is_leaf }}{{ n.status.value }}{% endfor %} {{ '%.1f' % x }} "
        "{{ '{}!'.format(x) }} {{ d.items() | list }} {{ u.startswith('https') }} {{ range(2) | join }}"
    )
    out = bounded_render(template_env().from_string(text), {"plan": plan, "x": 1.5, "d": {"a": 1}, "u": "https://x"})
    assert out == "1Truepending 1.5 1.5! [('a', 1)] True 01"


def test_a_template_child_whose_parent_dies_stops(tmp_path):
    """Round 4, B7: the step process killed mid-render (a cancelled job) leaves no child looping."""
    import signal
    import time

    code = (
        "import pathlib, sys\nfrom gitops_agent.templates.prompts import render\n"
        f"d = pathlib.Path({str(tmp_path)!r})\n"
        "(d / 'loop.j2').write_text('{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}')\n"
        "print('rendering', flush=True)\nrender([d], 'loop.j2')\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert p.stdout.readline().strip() == "rendering"
    time.sleep(1.0)
    kids = [int(x) for x in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
    assert kids, "the render should run in a child"
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
        Path(f"/proc/{k}").exists() and "Z" not in Path(f"/proc/{k}/stat").read_text().split()[2] for k in kids
    ):
        time.sleep(0.1)
    alive = [k for k in kids if Path(f"/proc/{k}").exists() and Path(f"/proc/{k}/stat").read_text().split()[2] != "Z"]
    assert alive == [], "the template child outlived its parent"
