"""The `agent-eval` job: a repository_dispatch runs an eval suite on the runner and posts the
table as the job summary; the results are committed to agent/eval.

    gh api repos/OWNER/REPO/dispatches -f event_type=agent-eval \\
       -F 'client_payload[suite]=dabench' -F 'client_payload[model]=anthropic:claude-haiku-4-5'
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gitops_agent.core.errors import ConfigError
from gitops_agent.core.state import format_validation_error


class EvalPayload(BaseModel):
    """`client_payload` of agent-eval: every field optional (defaults: evolve.suite, evolve.model)."""

    model_config = ConfigDict(extra="forbid")
    suite: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,199}$")
    # a provider and a model name, or `scripted`; never an endpoint (`@URL` would send the
    # provider's key there) nor a file (`scripted:PATH`): endpoints come from the workflow inputs
    model: str | None = Field(None, max_length=200, pattern=r"^(scripted|(anthropic|openai):[A-Za-z0-9][A-Za-z0-9_.:/+-]*)$")
    questions: str | None = Field(None, max_length=2000, pattern=r"^[A-Za-z0-9_.,-]+$")
    repeat: int = Field(1, ge=1, le=5)

    @classmethod
    def parse(cls, raw: Any) -> "EvalPayload":
        try:
            p = cls.model_validate(raw or {})
        except ValidationError as e:
            raise ConfigError(f"agent-eval client_payload: {format_validation_error(e)}") from None
        if p.suite and ".." in p.suite.split("/"):
            raise ConfigError("agent-eval client_payload: suite must be a shipped suite or a path inside the repository")
        return p


def run_eval_job(runner: Any, event: dict[str, Any]) -> int:
    """``runner``: the job's StepRunner (clone, config, summary, outputs)."""
    from gitops_agent.eval.report import table
    from gitops_agent.eval.run import EvalConfig, Runner
    from gitops_agent.eval.store import commit_run
    from gitops_agent.eval.suite import load_suite
    from gitops_agent.evolve.gate import suite_path
    from gitops_agent.observe.render import md_block

    payload = EvalPayload.parse(event.get("client_payload"))
    git = runner.clone(None)
    head = git.git("rev-parse", "HEAD").strip()
    cfg = runner.config(git, head)
    spec_name = payload.suite or cfg.evolve.suite or "dabench"
    suite = load_suite(suite_path(spec_name, git.repo), inside=git.repo)
    model = payload.model or cfg.evolve.model or runner.s.executor_model or cfg.models.executor
    only = [x for x in (payload.questions or "").split(",") if x] or cfg.evolve.questions or None
    run = Runner(suite, config=cfg).run(
        [EvalConfig(label=model, planner=model, executor=model)],
        repeat=payload.repeat,
        workers=cfg.github.max_parallel,
        only=only,
    )
    md = table(run)
    sha = commit_run(git, run, md)
    if runner.s.summary_path:
        with open(runner.s.summary_path, "a") as f:
            f.write(md_block(md) + f"\nCommitted to `agent/eval` ({sha[:12]}).\n")
    passed = sum(r.passed for r in run.results)
    print(f"gitops-agent: eval {suite.name}: {passed}/{len(run.results)} passed; results on agent/eval ({sha[:12]})")
    runner.outputs["branch"] = "agent/eval"
    return 0
