"""Eval results are part of the history: each run is committed to the orphan branch `agent/eval`
(`runs/<time>-<suite>/results.json` and `table.md`), and can be read back as a baseline."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from gitops_agent.core.errors import ConfigError
from gitops_agent.eval.run import EvalRun

EVAL_BRANCH = "agent/eval"


def run_dir(run: EvalRun) -> str:
    return f"runs/{run.started:%Y%m%d-%H%M%S}-{run.suite}"


def commit_run(git, run: EvalRun, table_md: str) -> str:
    """Commit the run to agent/eval (created on first use); returns the commit."""
    if git.tip(EVAL_BRANCH, fetch=False) is None:
        git.create_branch(EVAL_BRANCH, None, trailers={"Agent-Role": "eval"})
    d = run_dir(run)
    files = {f"{d}/results.json": (run.model_dump_json(indent=2) + "\n").encode(), f"{d}/table.md": table_md.encode()}
    passed = sum(r.passed for r in run.results)
    return git.commit_files(
        EVAL_BRANCH,
        files,
        f"eval({run.suite}): {passed}/{len(run.results)} passed, {', '.join(c.label for c in run.configs)}"[:200],
        {"Agent-Role": "eval"},
    )


def load_run(path: Path) -> EvalRun:
    """A results.json written by `gitops-agent eval` (a file, or a run's folder)."""
    p = path / "results.json" if path.is_dir() else path
    try:
        return EvalRun.model_validate(json.loads(p.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"no eval results at {p}") from None
    except (json.JSONDecodeError, ValidationError) as e:
        raise ConfigError(f"{p} is not the results of `gitops-agent eval`: {str(e)[:300]}") from None
