"""Running a suite: each question in its own throwaway task (a temporary repository holding the
suite's data, local mode, the real engine and sandbox), on a worker pool, for each
configuration (a model spec and a brain), ``repeat`` times; what each run cost, used and
answered, checked."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from gitops_agent.core.cancel import CANCEL
from gitops_agent.core.errors import ConfigError
from gitops_agent.core.state import Budget, utcnow
from gitops_agent.data.environ import source_environ
from gitops_agent.eval.database import load_tables
from gitops_agent.eval.suite import JudgeCheck, Question, Suite, check_answer
from gitops_agent.git import scratch
from gitops_agent.settings.config import AgentConfig
from gitops_agent.settings.data_sources import DataSource

SCRIPTED = "scripted"  # --model scripted: each question's own `solution`, run for real in the sandbox


class EvalConfig(BaseModel):
    """One column of the table: who answers."""

    model_config = ConfigDict(extra="forbid")
    label: str
    planner: str
    executor: str
    brain: str | None = Field(None, description="a commit of agent/brain (None: the packaged brain)")


class QuestionResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    config: str
    repeat: int = 0
    passed: bool
    why: str
    outcome: str
    answer: str = ""
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    turns: int = 0
    steps: int = 0
    wall_s: float = 0.0
    judge: dict[str, Any] | None = Field(None, description="the judge model's verdict, as it gave it")
    error: str | None = None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


class EvalRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suite: str
    started: datetime
    wall_s: float = 0.0
    repeat: int = 1
    configs: list[EvalConfig]
    results: list[QuestionResult] = Field(default_factory=list)


def scripted_script(q: Question) -> dict[str, Any]:
    """The scripted model's answer to ``q``: one node that runs the question's solution in the
    sandbox, then the planner finishes with what it printed."""
    if not q.solution:
        return {"planner": [{"tool": "finish", "input": {"answer": "(no scripted solution)", "summary": q.id}}]}
    return {
        "planner": [
            {
                "tool": "update_plan",
                "input": {"note": "one step", "nodes": [{"id": "n1", "title": "Compute it", "goal": q.question[:2000]}]},
            },
            {
                "tool": "finish",
                "input": {
                    "answer": "Computed from the data.\n\nAnswer: {{ results.n1 | default('(no result)') | trim }}",
                    "summary": q.id,
                },
            },
        ],
        "executor:n1": [
            {"text": "I will compute it from the file.", "tool": "run_python", "input": {"code": q.solution}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
    }


def _git(repo: Path, *args: str) -> None:
    env = {
        "GIT_AUTHOR_NAME": "eval",
        "GIT_AUTHOR_EMAIL": "eval@localhost",
        "GIT_COMMITTER_NAME": "eval",
        "GIT_COMMITTER_EMAIL": "eval@localhost",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "HOME": str(repo),
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def question_repo(suite: Suite, where: Path) -> Path:
    """A fresh repository with the suite's data under data/ (what the questions name)."""
    repo = where / "repo"
    repo.mkdir(parents=True)
    if suite.database is not None:  # the data lives only in the database: the repository has none
        (repo / "README.md").write_text(f"# {suite.name}\n\nThe data is in the database source `{suite.database.source}`.\n")
    elif suite.data_dir is not None:
        # regular files only: a link in the data folder would bring whatever it points at (on a
        # runner: its credentials) into a repository the model reads
        for f in sorted(suite.data_dir.rglob("*")):
            rel = f.relative_to(suite.data_dir)
            if (
                f.is_file()
                and not f.is_symlink()
                and not any((suite.data_dir / p).is_symlink() for p in rel.parents if str(p) != ".")
            ):
                dst = repo / "data" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst, follow_symlinks=False)
    if suite.database is None:
        (repo / "README.md").write_text(f"# {suite.name}\n\nThe data of the eval suite `{suite.name}`, under data/.\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"eval suite {suite.name}: data")
    return repo


class Runner:
    """Runs questions; ``brains`` maps a config's brain commit to the Brain object to use."""

    def __init__(
        self,
        suite: Suite,
        *,
        config: AgentConfig | None = None,
        budget: Budget | None = None,
        brains: dict[str, Any] | None = None,
        judge_model: str | None = None,
        models: dict[str, Any] | None = None,
        on_result: Callable[[QuestionResult], None] | None = None,
    ) -> None:
        self.suite = suite
        self.config = config or AgentConfig()
        if suite.database is not None:  # each question's runtime has the suite's database as its source
            self.config = self.config.model_copy(deep=True)
            self.config.data.sources[suite.database.source] = DataSource(url_env=suite.database.url_env)
        self.budget = budget or Budget(max_usd=1.0, max_steps=20)
        self.brains = brains or {}
        self.judge_model = judge_model
        self.models = models or {}  # injected models by spec (tests)
        self.on_result = on_result
        self._lock = threading.Lock()

    def run(self, configs: list[EvalConfig], repeat: int = 1, workers: int = 4, only: list[str] | None = None) -> EvalRun:
        t0 = time.monotonic()
        self.load_database()
        run = EvalRun(suite=self.suite.name, started=utcnow(), repeat=repeat, configs=configs)
        questions = [q for q in self.suite.questions if not only or q.id in only]
        jobs = [(c, q, k) for c in configs for q in questions for k in range(repeat)]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(self.one, *j) for j in jobs]
            try:
                for f in futures:
                    run.results.append(f.result())
            except BaseException:  # Ctrl-C: the questions not started are dropped, those running stop
                for f in futures:
                    f.cancel()
                raise
        run.wall_s = round(time.monotonic() - t0, 2)
        return run

    def load_database(self) -> None:
        """A suite with ``database:``: its tables, loaded once before any question runs."""
        db = self.suite.database
        if db is None:
            return
        url = source_environ().get(db.url_env, "")  # the environment, or on GitHub the data-sources-env secret
        if not url:
            raise ConfigError(
                f"the suite {self.suite.name} loads its data into the PostgreSQL database named by {db.url_env}: "
                f"set {db.url_env}=postgresql://USER:PASSWORD@HOST/DB to a scratch database "
                "(its tables of the suite's names are replaced)"
            )
        if self.suite.data_dir is None:
            raise ConfigError(f"the suite {self.suite.name} has a database but no data folder to load into it")
        load_tables(self.suite.data_dir, url)

    def one(self, cfg: EvalConfig, q: Question, k: int) -> QuestionResult:
        from gitops_agent.app.local import make_runtime, run_question
        from gitops_agent.core.snapshot import load_snapshot
        from gitops_agent.models.scripted import ScriptedModel
        from gitops_agent.observe.progress import Reporter

        CANCEL.check()  # Ctrl-C: a question not started yet is not started
        t0 = time.monotonic()
        td = scratch.make(prefix="gitops-agent-eval-")  # removed after, on a hard quit, or by the next eval
        try:
            repo = question_repo(self.suite, td)
            models = dict(self.models)
            planner, executor = cfg.planner, cfg.executor
            if SCRIPTED in (planner, executor):
                scripted = ScriptedModel(scripted_script(q), name="scripted")
                models["scripted:eval"] = scripted
                planner = "scripted:eval" if planner == SCRIPTED else planner
                executor = "scripted:eval" if executor == SCRIPTED else executor
            rt = make_runtime(repo, config=self.config.model_copy(deep=True), reporter=Reporter(), models=models)
            if cfg.brain is not None:
                rt.brain = self.brains[cfg.brain]
            res = run_question(
                rt, q.question, planner_model=planner, executor_model=executor, budget=self.budget.model_copy(), workers=1
            )
            snap = load_snapshot(rt.git, res.task_id)
            u = snap.usage
            judged: list = []
            passed, why, verdict = (
                self.check(q, res.answer, rt, snap.cost_usd, judged)
                if res.outcome == "done"
                else (False, f"outcome {res.outcome}: {res.reason or ''}"[:300], None)
            )
            judge_cost = sum(rt.cost(str((verdict or {}).get("model") or "judge"), u) for u in judged)
            out = QuestionResult(
                id=q.id,
                config=cfg.label,
                repeat=k,
                passed=passed,
                why=why,
                outcome=res.outcome,
                answer=res.answer[:4000],
                cost_usd=round(snap.cost_usd + judge_cost, 6),
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_tokens=u.cache_write_tokens,
                turns=sum(s.turns for s in snap.steps),
                steps=snap.model_steps,
                wall_s=round(time.monotonic() - t0, 2),
                judge=verdict,
            )
        except Exception as e:  # noqa: BLE001 - one question's failure is a row, not the end of the run
            out = QuestionResult(
                id=q.id,
                config=cfg.label,
                repeat=k,
                passed=False,
                why="the run failed",
                outcome="error",
                error=f"{type(e).__name__}: {e}"[:1000],
                wall_s=round(time.monotonic() - t0, 2),
            )
        finally:
            scratch.remove(td)
        if self.on_result:
            with self._lock:
                self.on_result(out)
        return out

    def check(
        self, q: Question, answer: str, rt: Any, spent: float = 0.0, usage: list | None = None
    ) -> tuple[bool, str, dict[str, Any] | None]:
        if isinstance(q.check, JudgeCheck):
            from gitops_agent.eval.judge import judge

            spec = q.check.model or self.judge_model
            if spec is None:
                return False, "a judge check needs a judge model (--judge-model SPEC, or `model:` in the check)", None
            if spent >= self.budget.max_usd:  # the judge is a paid call too: not past the question's budget
                return False, f"not judged: the question spent its budget (${spent:.4f} of ${self.budget.max_usd:g})", None
            return judge(rt.model(spec), q.question, answer, q.check.rubric, usage)
        ok, why = check_answer(q.check, answer)
        return ok, why, None
