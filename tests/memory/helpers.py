"""Shared helpers of the memory/brain tests: repositories, runtimes with a scripted model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agent.config import AgentConfig
from agent.local import make_runtime, run_question
from agent.memory import Experience, OutlineItem
from agent.models.scripted import ScriptedModel
from agent.progress import RecordingReporter
from agent.state import utcnow

ROOT = Path(__file__).resolve().parents[2]
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@x", "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@x"}


def git(repo: Path, *args: str, check: bool = True) -> str:
    p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=GIT_ENV)
    if check and p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {p.stderr}")
    return p.stdout


def make_repo(tmp_path: Path, name: str = "repo", files: dict[str, str] | None = None) -> Path:
    repo = tmp_path / name
    repo.mkdir(parents=True)
    for rel, text in (files or {"README.md": "# shop\n", "data/orders.csv": "id,region,amount\n1,East,10\n2,West,20\n3,East,30\n"}).items():
        p = repo / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


def config(backend: str = "subprocess") -> AgentConfig:
    cfg = AgentConfig()
    cfg.sandbox.backend = backend  # type: ignore[assignment]
    cfg.sandbox.timeout_s = 30
    return cfg


def runtime(repo: Path, model: ScriptedModel, *, remote: str | None = None, backend: str = "subprocess", extra_models: dict | None = None):
    rep = RecordingReporter()
    rt = make_runtime(repo, config=config(backend), remote=remote, reporter=rep, models={"scripted:t": model, **(extra_models or {})})
    return rt, rep


def run_task(repo: Path, script: dict | ScriptedModel, question: str, *, task_id: str | None = None, **kw):
    model = script if isinstance(script, ScriptedModel) else ScriptedModel(script)
    rt, rep = runtime(repo, model, **kw)
    res = run_question(rt, question, planner_model="scripted:t", executor_model="scripted:t", task_id=task_id)
    return res, rt, model, rep


def plan(*nodes: dict, note: str = "plan") -> dict:
    return {"tool": "update_plan", "input": {"nodes": list(nodes), "note": note}}


def node(id: str, deps=(), goal: str | None = None, **kw) -> dict:
    return {"id": id, "title": kw.pop("title", id.upper()), "goal": goal or f"do {id}", "depends_on": list(deps), **kw}


def finish(answer: str = "done", summary: str = "done", lessons: list[str] | None = None) -> dict:
    inp = {"answer": answer, "summary": summary}
    if lessons is not None:
        inp["lessons"] = lessons
    return {"tool": "finish", "input": inp}


def step_done(result: str = "{{ last_output or 'ok' }}") -> dict:
    return {"tool": "finish_step", "input": {"status": "done", "result": result}}


def experience(task_id: str, question: str, outcome: str = "done", lessons: list[str] | None = None, **kw) -> Experience:
    return Experience(
        task_id=task_id, branch=f"agent/task/{task_id}", question=question, outcome=outcome,  # type: ignore[arg-type]
        outline=[OutlineItem(id="n1", title="Look at the data", status="done")], summary=kw.pop("summary", question[:50]),
        lessons=lessons or [], date=kw.pop("date", utcnow()), **kw,
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    """`gitops-agent ARGS` run in this process (the same main() as the command; much faster than
    a new interpreter per call): returncode, stdout, stderr."""
    import contextlib
    import io

    from agent.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(["gitops-agent", *args], code, out.getvalue(), err.getvalue())


def cli_process(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m agent ARGS` as a real process."""
    e = {**GIT_ENV, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True, env=e, timeout=timeout)
