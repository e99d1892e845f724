"""Text renderings shared by prompts, the report, the trace, the progress comment and the PR."""

from __future__ import annotations

from .state import NodeStatus, Plan, PlanNode, StepRecord, Usage


def checklist(plan: Plan | None, here: str | None = None) -> str:
    """The plan as a Markdown checklist with status marks, e.g. `- [✓] n1 Load the data`."""
    if plan is None or not plan.nodes:
        return "(no plan yet)"
    lines: list[str] = []

    def visit(n: PlanNode, depth: int) -> None:
        status = plan.status_of(n)
        deps = f" (after {', '.join(n.depends_on)})" if n.depends_on else ""
        agent = f" [{n.agent}]" if n.is_leaf and n.agent != "analyst" else ""
        you = "  ← you" if n.id == here else ""
        lines.append(f"{'  ' * depth}- {status.mark} {n.id} {n.title}{agent}{deps}{you}")
        for c in n.children:
            visit(c, depth + 1)

    for n in plan.nodes:
        visit(n, 0)
    return "\n".join(lines)


def mermaid(plan: Plan | None) -> str:
    """The plan as a Mermaid flowchart (for the PR body and the HTML trace)."""
    out = ["flowchart TD"]
    if plan is None:
        return "\n".join(out)
    classes = {s: s.value for s in NodeStatus}
    for n in plan.walk():
        label = f"{n.id}: {n.title}".replace('"', "'")
        out.append(f'  {n.id}["{status_label(plan.status_of(n))} {label}"]:::{classes[plan.status_of(n)]}')
        for c in n.children:
            out.append(f"  {n.id} --- {c.id}")
        for d in n.depends_on:
            out.append(f"  {d} --> {n.id}")
    out += [
        "  classDef done fill:#d4f7d4,stroke:#2a2;",
        "  classDef failed fill:#f9d0d0,stroke:#c22;",
        "  classDef running fill:#fff3c4,stroke:#b80;",
        "  classDef pending fill:#eee,stroke:#999;",
        "  classDef skipped fill:#f4f4f4,stroke:#bbb,color:#999;",
    ]
    return "\n".join(out)


def status_label(s: NodeStatus) -> str:
    return {"pending": "○", "running": "◐", "done": "✓", "failed": "✗", "skipped": "–"}[s.value]


def fmt_tokens(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def cache_share(u: Usage) -> float:
    return u.cache_read_tokens / u.total_input if u.total_input else 0.0


def cost_table(steps: list[StepRecord]) -> str:
    """A Markdown table of every step's model, turns, tokens, cache share and cost, with totals."""
    rows = ["| step | role | node | model | turns | input | output | cache read | cost |", "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    total = Usage()
    cost = 0.0
    turns = 0
    for s in steps:
        if s.role == "finish":
            continue
        total = total + s.usage
        cost += s.cost_usd
        turns += s.turns
        rows.append(
            f"| {s.seq} | {s.role} | {s.node} | {s.model} | {s.turns} | {fmt_tokens(s.usage.total_input)} | "
            f"{fmt_tokens(s.usage.output_tokens)} | {cache_share(s.usage):.0%} | ${s.cost_usd:.4f} |"
        )
    rows.append(
        f"| **total** | | | | {turns} | {fmt_tokens(total.total_input)} | {fmt_tokens(total.output_tokens)} | "
        f"{cache_share(total):.0%} | **${cost:.4f}** |"
    )
    return "\n".join(rows)
