"""The Agent-* trailers every agent commit carries, in their order (docs/design.md, "Commits").
One place writes them: the steps through Runtime.trailers, evolve, the memory and brain branches."""

from __future__ import annotations

from gitops_agent.core.state import Usage


def agent_trailers(
    role: str,
    *,
    task_id: str | None = None,
    seq: int | None = None,
    node: str | None = None,
    model: str | None = None,
    usage: Usage | None = None,
    cost: float | None = None,
    duration_ms: int | None = None,
    run_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    t: dict[str, str] = {}
    if task_id is not None:
        t["Agent-Task"] = task_id
    if seq is not None:
        t["Agent-Step"] = str(seq)
    t["Agent-Role"] = role
    if node:
        t["Agent-Node"] = node
    if model:
        t["Agent-Model"] = model
    if usage is not None:
        t["Agent-Usage"] = usage.trailer()
    if cost is not None:
        t["Agent-Cost-USD"] = f"{cost:.6f}".rstrip("0").rstrip(".") if cost else "0"
    if duration_ms is not None:
        t["Agent-Duration-Ms"] = str(duration_ms)
    if run_url:
        t["Agent-Run"] = run_url
    if extra:
        t.update(extra)
    return t
