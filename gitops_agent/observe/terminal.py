"""A trace (gitops_agent/observe/trace.py) in the terminal: the plan with marks, the timeline, totals."""

from __future__ import annotations

from gitops_agent.core.state import NodeStatus
from gitops_agent.observe.trace import Trace, TraceNode

# ----------------------------------------------------------------------------- terminal view


def _wall(seconds: float) -> str:
    # step.json and commit times have whole seconds
    if seconds < 1:
        return "< 1 s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _secs(ms: int) -> str:
    return f"{ms / 1000:.1f}"


def render_terminal(trace: Trace, console=None) -> None:
    """The trace for a terminal (rich): header, the plan tree with status marks, the timeline
    table with totals, the cost breakdown and the ledger check. Text from the branch is
    printed as plain text, never as rich markup."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    con = console or Console(highlight=False)
    t = trace
    outcome_style = {"done": "bold green", "unfinished": "bold yellow"}.get(t.outcome, "bold red")
    head = Text.assemble(("Task ", "bold"), t.task_id, "   ", ("outcome: ", "bold"), (t.outcome, outcome_style))
    con.print(head)
    con.print(Text.assemble(("Question: ", "bold"), " ".join(t.question.split())))
    for i, ins in enumerate(t.instructions, 1):
        con.print(Text.assemble((f"Follow-up {i}: ", "bold"), " ".join(ins.split())))
    if t.summary:
        con.print(Text.assemble(("Summary: ", "bold"), " ".join(t.summary.split())))
    if t.reason and t.outcome != "done":
        con.print(Text.assemble(("Why it stopped: ", "bold"), " ".join(t.reason.split())))
    con.print(Text(f"Branch {t.branch} at {t.tip[:8]} · base {t.base_ref} ({t.base_sha[:8]}) · "
                   f"models: planner {t.models.planner}, executor {t.models.executor}", style="dim"))
    con.print()

    # the plan
    legend = "  ".join(f"{s.mark} {s.value}" for s in NodeStatus)
    if t.plan is None:
        con.print(Text("Plan: (no plan yet)", style="bold"))
    else:
        style = {"done": "green", "failed": "red", "running": "yellow", "pending": "", "skipped": "dim"}
        tree = Tree(Text.assemble((f"Plan (version {t.plan.version})", "bold"), ("   marks: " + legend, "dim")), guide_style="dim")

        def add(parent, n: TraceNode) -> None:
            label = Text.assemble((n.mark, style[n.status.value]), " ", (n.id, "bold"), " ", " ".join(n.title.split()))
            extra = []
            if n.depends_on:
                extra.append("after " + ", ".join(n.depends_on))
            if not n.children:
                extra.append(n.agent)
            if n.steps:
                extra.append(("step " if len(n.steps) == 1 else "steps ") + ", ".join(map(str, n.steps)))
            if n.status == NodeStatus.running:
                extra.append("running")
            elif n.steps or n.children:
                extra.append(f"{_secs(n.duration_ms)} s, ${n.cost_usd:.4f}")
            if extra:
                label.append("  · " + " · ".join(extra), style="dim")
            branch = parent.add(label)
            for c in n.children:
                add(branch, c)

        for n in t.plan.nodes:
            add(tree, n)
        con.print(tree)
    con.print()

    # the timeline
    from rich import box

    tot = t.totals
    cols = [
        ("Step", "right", "Total"),
        ("Role", "left", ""),
        ("Node", "left", ""),
        ("What\n(commit subject)", "left", ""),
        ("Model", "left", ""),
        ("Turns", "right", str(tot.turns)),
        ("Started\n(UTC)", "left", ""),
        ("Duration\n(s)", "right", _secs(tot.step_duration_ms)),
        ("Input\ntokens", "right", f"{tot.usage.input_tokens:,}"),
        ("Output\ntokens", "right", f"{tot.usage.output_tokens:,}"),
        ("Cache read\ntokens", "right", f"{tot.usage.cache_read_tokens:,}"),
        ("Cache write\ntokens", "right", f"{tot.usage.cache_write_tokens:,}"),
        ("Cache\nshare", "right", f"{tot.cache_share:.0%}"),
        ("Cost\n(USD)", "right", f"${tot.cost_usd:.4f}"),
        ("Status", "left", ""),
        ("Commit", "left", ""),
    ]
    status_style = {"done": "green", "failed": "bold red", "running": "yellow"}
    rows = []
    for s in t.steps:
        what = s.commit.subject.split(": ", 1)[-1] if s.commit else ("(not reported yet)" if s.status == "running" else "")
        rows.append([
            str(s.seq), s.role, Text(s.node or "—"), Text(what), Text(s.model or "—"), str(s.turns) if s.has_record else "—",
            s.started_at.strftime("%H:%M:%S") if s.started_at else "—",
            _secs(s.duration_ms), f"{s.usage.input_tokens:,}", f"{s.usage.output_tokens:,}",
            f"{s.usage.cache_read_tokens:,}", f"{s.usage.cache_write_tokens:,}", f"{s.cache_share:.0%}",
            f"${s.cost_usd:.4f}", Text(s.status, style=status_style.get(s.status, "")),
            Text(s.commit.short if s.commit else "—", style="cyan" if s.commit else "dim"),
        ])
    # Every column keeps its natural width; the commit subject shrinks first, then the least
    # needed columns are left out until the table fits the terminal.
    natural = [max([len(x) for x in name.split("\n")] + [len(footer)] + [len(str(r[i])) for r in rows]) for i, (name, _, footer) in enumerate(cols)]
    what = next(i for i, c in enumerate(cols) if c[0].startswith("What"))
    drop_order = ["Started", "Cache write", "What", "Commit", "Cache share", "Model", "Cache read", "Turns", "Role"]
    shown = list(range(len(cols)))
    hidden: list[str] = []

    what_width = min(natural[what], 48)

    def build(narrowest: bool = False) -> Table:
        table = Table(title="Timeline: one row per step, in step order", title_justify="left", title_style="bold",
                      show_footer=True, header_style="bold", footer_style="bold", box=box.SIMPLE_HEAD, collapse_padding=True)
        for i in shown:
            name, justify, footer = cols[i]
            flexible = i == what
            table.add_column(name, justify=justify, footer=footer, no_wrap=True, overflow="ellipsis",
                             min_width=(min(12, natural[i]) if narrowest else what_width) if flexible else natural[i],
                             max_width=(min(12, natural[i]) if narrowest else what_width) if flexible else None)
        for r in rows:
            table.add_row(*(r[i] for i in shown))
        return table

    def min_width() -> int:
        from io import StringIO

        from rich.cells import cell_len

        probe = Console(file=StringIO(), width=1000, color_system=None)
        probe.print(build(narrowest=True))
        return max(cell_len(line.rstrip()) for line in probe.file.getvalue().splitlines() if line.strip())

    for prefix in drop_order:
        needed = min_width()
        if needed <= con.width:
            if what in shown:
                what_width = max(min(12, natural[what]), min(what_width, con.width - needed + min(12, natural[what])))
            break
        i = next(i for i, c in enumerate(cols) if c[0].replace("\n", " ").startswith(prefix))
        shown.remove(i)
        hidden.append(cols[i][0].replace("\n", " "))
    table = build()
    con.print(table)
    if hidden:
        con.print(Text(f"(narrow terminal: {', '.join(hidden)} not shown; --json or a wider terminal shows every column)", style="dim"))

    # totals, breakdowns, ledger
    u = tot.usage
    con.print(Text.assemble(
        ("Totals: ", "bold"),
        f"{tot.steps} steps ({tot.model_steps} with model calls), {tot.turns} turns · "
        f"{tot.tokens:,} tokens ({u.input_tokens:,} input, {u.output_tokens:,} output, {u.cache_read_tokens:,} cache read, "
        f"{u.cache_write_tokens:,} cache write; {tot.cache_share:.0%} of the prompt read from cache) · "
        f"cost ${tot.cost_usd:.4f} · {tot.step_duration_ms / 1000:.1f} s of step time, {_wall(tot.wall_seconds)} wall time",
    ))
    for title, rows in (("Cost by model", t.by_model), ("Cost by role", t.by_role)):
        if rows:
            con.print(Text.assemble((f"{title}: ", "bold"), " · ".join(
                f"{r.key} ${r.cost_usd:.4f} ({r.steps} step{'' if r.steps == 1 else 's'}, {r.usage.total:,} tokens)" for r in rows)))
    lg = t.ledger
    if t.ledger_consistent:
        con.print(Text.assemble(("Ledger: ", "bold"), (f"consistent ✓ — the commits' Agent-Cost-USD trailers add up to ${lg.commits_cost_usd:.4f}, "
                                                         "the same as the step records", "green")))
    else:
        con.print(Text.assemble(("Ledger: ", "bold"), (f"INCONSISTENT ✗ — commits ${lg.commits_cost_usd:.6f}, step records ${lg.steps_cost_usd:.6f}", "bold red")))
    for p in lg.problems:
        con.print(Text("  ! " + p, style="yellow"))
    if t.events:
        con.print(Text.assemble(("Other commits: ", "bold"), " · ".join(f"{c.short} {c.subject}" for c in t.events[-5:])
                                + (f" (and {len(t.events) - 5} more)" if len(t.events) > 5 else "")))
    if not t.history_complete:
        con.print(Text("  ! shallow clone: the history does not reach the task's first commit (git fetch --unshallow)", style="yellow"))
    errors = [s for s in t.steps if s.error]
    for s in errors:
        con.print(Text.assemble((f"Step {s.seq} ({s.label}) {s.status}: ", "bold red"), " ".join(s.error.split())[:500]))
