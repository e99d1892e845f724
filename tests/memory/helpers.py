"""Shared helpers of the memory/brain tests: repositories, runtimes with a scripted model."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gitops_agent.app.local import make_runtime, run_question
from gitops_agent.core.state import utcnow
from gitops_agent.memory.experience import Experience, OutlineItem
from gitops_agent.models.scripted import ScriptedModel
from gitops_agent.observe.progress import RecordingReporter
from gitops_agent.settings.config import AgentConfig
from tests.helpers import GIT_ENV, ROOT, git  # noqa: F401 - shared helpers
from tests.helpers import make_repo as _make_repo

SHOP = {"README.md": "# shop\n", "data/orders.csv": "id,region,amount\n1,East,10\n2,West,20\n3,East,30\n"}


def make_repo(tmp_path: Path, name: str = "repo", files: dict[str, str] | None = None) -> Path:
    """A small shop repository (README, data/orders.csv) unless ``files`` says otherwise."""
    return _make_repo(tmp_path, name, files or SHOP)


def config(backend: str = "subprocess") -> AgentConfig:
    cfg = AgentConfig()
    cfg.sandbox.backend = backend  # type: ignore[assignment]
    cfg.sandbox.timeout_s = 30
    return cfg


def runtime(
    repo: Path, model: ScriptedModel, *, remote: str | None = None, backend: str = "subprocess", extra_models: dict | None = None
):
    rep = RecordingReporter()
    rt = make_runtime(
        repo, config=config(backend), remote=remote, reporter=rep, models={"scripted:t": model, **(extra_models or {})}
    )
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
        task_id=task_id,
        branch=f"agent/task/{task_id}",
        question=question,
        outcome=outcome,  # type: ignore[arg-type]
        outline=[OutlineItem(id="n1", title="Look at the data", status="done")],
        summary=kw.pop("summary", question[:50]),
        lessons=lessons or [],
        date=kw.pop("date", utcnow()),
        **kw,
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    """`gitops-agent ARGS` run in this process (the same main() as the command; much faster than
    a new interpreter per call): returncode, stdout, stderr."""
    import contextlib
    import io

    from gitops_agent.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(["gitops-agent", *args], code, out.getvalue(), err.getvalue())
