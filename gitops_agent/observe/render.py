"""Text renderings shared by prompts, the report, the trace, the progress comment and the PR:
the plan as a checklist or a Mermaid graph, token counts, the cost table, and untrusted text made
safe Markdown. What is posted on GitHub is built from these in gitops_agent/observe/surfaces.py."""

from __future__ import annotations

import re
from typing import Callable, Mapping

from gitops_agent.core.plan import Plan, PlanNode
from gitops_agent.core.state import NodeStatus, StepRecord, Usage
from gitops_agent.safety.chars import strip_invisible
from gitops_agent.safety.fences import code_lines
from gitops_agent.safety.text import DEFAULT_IMAGE_HOSTS, inline_text, outbound


def _tree_lines(plan: Plan, line: Callable[[PlanNode, NodeStatus], str]) -> str:
    """One line per node, depth-first, indented two spaces per level."""
    lines: list[str] = []

    def visit(n: PlanNode, depth: int) -> None:
        lines.append("  " * depth + line(n, plan.status_of(n)))
        for c in n.children:
            visit(c, depth + 1)

    for n in plan.nodes:
        visit(n, 0)
    return "\n".join(lines)


def _after(n: PlanNode) -> str:
    return f" (after {', '.join(n.depends_on)})" if n.depends_on else ""


def checklist(plan: Plan | None, here: str | None = None) -> str:
    """The plan as a Markdown checklist with status marks, e.g. `- [✓] n1 Load the data`."""
    if plan is None or not plan.nodes:
        return "(no plan yet)"

    def line(n: PlanNode, status: NodeStatus) -> str:
        agent = f" [{n.agent}]" if n.is_leaf and n.agent != "analyst" else ""
        you = "  ← you" if n.id == here else ""
        return f"- {status.mark} {n.id} {n.title}{agent}{_after(n)}{you}"

    return _tree_lines(plan, line)


_MERMAID_UNSAFE = re.compile(r"[^\w .,:;!?()%+=/'-]")


def mermaid(plan: Plan | None, changed: set[str] | frozenset[str] = frozenset()) -> str:
    """The plan as a Mermaid flowchart (for the PR body and the HTML trace); ``changed`` nodes
    (run in the latest round) get a thick border."""
    out = ["flowchart TD"]
    if plan is None:
        return "\n".join(out)
    classes = {s: s.value for s in NodeStatus}
    for n in plan.walk():
        # plain words only: a label is rendered as HTML by Mermaid, and a backtick run could close
        # the ```mermaid fence
        label = " ".join(_MERMAID_UNSAFE.sub(" ", strip_invisible(f"{n.id}: {n.title}")).split())[:120]
        out.append(f'  {n.id}["{status_label(plan.status_of(n))} {label}"]:::{classes[plan.status_of(n)]}')
        for c in n.children:
            out.append(f"  {n.id} --- {c.id}")
        for d in n.depends_on:
            out.append(f"  {d} --> {n.id}")
        if n.id in changed:
            out.append(f"  style {n.id} stroke-width:4px")
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
    rows = [
        "| step | role | node | model | turns | input | output | cache read | cost |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
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
            f"| {s.seq} | {s.role} | {md_text(s.node)} | {md_text(s.model)} | {s.turns} | {fmt_tokens(s.usage.total_input)} | "
            f"{fmt_tokens(s.usage.output_tokens)} | {cache_share(s.usage):.0%} | ${s.cost_usd:.4f} |"
        )
    rows.append(
        f"| **total** | | | | {turns} | {fmt_tokens(total.total_input)} | {fmt_tokens(total.output_tokens)} | "
        f"{cache_share(total):.0%} | **${cost:.4f}** |"
    )
    return "\n".join(rows)


# --------------------------------------------------------------------------- Markdown of model output
#
# Everything that comes from the branch is model output: inline text is escaped, block text (the
# answer) keeps its Markdown but can neither @mention anyone nor forge the task marker.


def md_text(text: str | None, limit: int | None = None) -> str:
    """Untrusted text as one line of inline Markdown: HTML and Markdown syntax escaped, no
    @mention, no invisible characters, whitespace folded (gitops_agent/safety/text.py)."""
    return inline_text(text, limit)


def md_block(text: str | None, image_hosts: tuple[str, ...] | list[str] = DEFAULT_IMAGE_HOSTS) -> str:
    """Untrusted Markdown kept as Markdown (tables, lists, code) but safe to post: raw HTML shown,
    not rendered; no remote image outside ``image_hosts``; no @mention; no forged marker."""
    return outbound(text or "", image_hosts)


def md_checklist(plan: Plan | None, links: Mapping[str, list[str]] | None = None, here: str | None = None) -> str:
    """Like :func:`checklist`, with every title escaped for Markdown and links to the steps."""
    if plan is None or not plan.nodes:
        return "_(no plan yet)_"

    def line(n: PlanNode, status: NodeStatus) -> str:
        steps = f" · {', '.join(links[n.id])}" if links and links.get(n.id) else ""
        you = " **← now**" if n.id == here else ""
        return f"- {status.mark} `{n.id}` {md_text(n.title, 120)}{_after(n)}{steps}{you}"

    return _tree_lines(plan, line)


# --------------------------------------------------------------------------- Markdown in a terminal
# every ASCII punctuation but "|": an escaped pipe keeps a table cell whole, in a terminal too
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{}~])")
_BACKTICKS = re.compile(r"`+")


def _unescape_line(line: str) -> str:
    """One line of Markdown text without its backslash escapes; code spans kept as written."""
    out, i = [], 0
    while i < len(line):
        m = _BACKTICKS.match(line, i)
        if m:  # a code span runs to the next backtick run of the same length (else it is text)
            close = re.compile(rf"(?<!`){m.group(0)}(?!`)").search(line, m.end())
            end = close.end() if close else m.end()
            out.append(line[i:end])
            i = end
            continue
        e = _ESCAPE.match(line, i)
        out.append(e.group(1) if e else line[i])
        i = e.end() if e else i + 1
    return "".join(out)


def without_escapes(md: str) -> str:
    """Markdown as a terminal shows it best: the backslash escapes a renderer would hide
    (``\\_plan``, ``\\`update_plan\\```) removed outside code; everything else as it is."""
    if "\\" not in md:
        return md
    lines, code = md.split("\n"), code_lines(md)
    return "\n".join(line if i in code else _unescape_line(line) for i, line in enumerate(lines))
