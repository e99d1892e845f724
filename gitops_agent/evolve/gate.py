"""Evolve, gated by the numbers: the suite run on the current brain and on a proposal, side by
side, and a verdict a reviewer can trust more than a rationale: better, same, worse, or
costlier (the same pass rate for more than `evolve.cost_margin` more dollars)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gitops_agent.eval.report import summary, table
from gitops_agent.eval.run import EvalConfig, EvalRun, Runner
from gitops_agent.eval.suite import load_suite
from gitops_agent.settings.config import AgentConfig

VERDICTS = ("better", "same", "worse", "costlier", "unmeasured")


class Gate(BaseModel):
    verdict: str
    why: str
    table: str
    run: EvalRun

    @property
    def blocks(self) -> bool:
        return self.verdict in ("worse", "costlier", "unmeasured")


def suite_path(spec: str, repo: Path | None) -> str | Path:
    """A shipped suite's name, or a path in the repository (load_suite(inside=repo) checks it
    stays there)."""
    if repo is None or "/" not in spec and not spec.endswith((".yaml", ".yml")):
        return spec
    return Path(spec)


def verdict_of(run: EvalRun, current: str, proposed: str, margin: float) -> tuple[str, str]:
    s = summary(run)
    a, b = s[current], s[proposed]
    ca, cb = a["cost"] * a["runs"], b["cost"] * b["runs"]
    # the current brain failing most runs means nothing could be measured (a provider down, a key
    # missing); the proposal failing them while the current brain does not is simply worse
    if sum(r.outcome == "error" for r in run.results if r.config == current) * 2 > a["runs"]:
        first = next((r.error or r.why for r in run.results if r.config == current and r.outcome == "error"), "")
        return "unmeasured", f"most runs of the {current} ended in an error ({' '.join(first.split())[:200]})"
    if b["pass"] < a["pass"]:
        return "worse", f"pass rate {a['pass']:.0%} → {b['pass']:.0%}"
    if b["pass"] > a["pass"]:
        return "better", f"pass rate {a['pass']:.0%} → {b['pass']:.0%}, cost ${ca:.4f} → ${cb:.4f}"
    if cb > ca * (1 + margin) and cb > 0:
        return "costlier", f"the same pass rate ({b['pass']:.0%}) for ${cb:.4f} instead of ${ca:.4f} (more than +{margin:.0%})"
    return "same", f"the same pass rate ({b['pass']:.0%}), cost ${ca:.4f} → ${cb:.4f}"


def _on_gate_models(brain: Any) -> Any:
    brain.agents = {k: a.model_copy(update={"model": None, "cascade": []}) for k, a in brain.agents.items()}
    return brain


def compare_brains(
    git: Any,
    base: str,
    proposal: str,
    cfg: AgentConfig,
    *,
    repo: Path | None = None,
    workers: int = 4,
    models: dict[str, Any] | None = None,
) -> Gate | None:
    """Run ``cfg.evolve.suite`` with the brain at ``base`` and at ``proposal`` (commits of
    agent/brain's history); None when no suite is configured."""
    from gitops_agent.brain.branch import load_repo_brain

    ev = cfg.evolve
    if not ev.suite:
        return None
    suite = load_suite(suite_path(ev.suite, repo), inside=repo)
    # by default the cheap executor model answers for both roles: a comparison, not a showcase
    spec_p = spec_e = ev.model or cfg.models.executor
    # both brains answer with the gate's own models: a brain's model and cascade fields are not
    # measured here (a proposal may not change them, and the gate builds no model a branch named)
    brains = {ref: _on_gate_models(load_repo_brain(git, fetch=False, at=ref)) for ref in (base, proposal)}
    configs = [
        EvalConfig(label="current brain", planner=spec_p, executor=spec_e, brain=base),
        EvalConfig(label="proposed brain", planner=spec_p, executor=spec_e, brain=proposal),
    ]
    run = Runner(suite, config=cfg, brains=brains, models=models).run(configs, workers=workers, only=ev.questions or None)
    verdict, why = verdict_of(run, "current brain", "proposed brain", ev.cost_margin)
    return Gate(verdict=verdict, why=why, table=table(run), run=run)
