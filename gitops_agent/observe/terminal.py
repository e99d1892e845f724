"""A trace (gitops_agent/observe/trace.py) in the terminal: the plan with marks, the timeline, totals."""

from __future__ import annotations

from dataclasses import dataclass, field

from gitops_agent.core.state import NodeStatus
from gitops_agent.observe.trace import Totals, Trace, TraceNode, TraceStep

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

    con = console or Console(highlight=False)
    _print_header(con, trace)
    _print_plan(con, trace)
    _print_timeline(con, trace)
    _print_queries(con, trace)
    _print_totals(con, trace)
    _print_ledger(con, trace)


def _print_queries(con, t: Trace) -> None:
    """The database queries of each step: source, rows, time and the SQL's first line (all of it
    is in the step's step.json and in `trace --html`)."""
    from rich.text import Text

    rows = [(s, q) for s in t.steps for q in s.queries]
    if not rows:
        return
    con.print(Text("Queries", style="bold"))
    for s, q in rows[:40]:
        sql = " ".join(q.sql.split())
        what = f"error: {' '.join(q.error.split())[:200]}" if q.error else f"{q.rows} row{'s' if q.rows != 1 else ''}"
        con.print(Text(f"  step {s.seq} ({s.label}) {q.source}: {what}, {q.ms} ms — {sql[:110]}{'…' if len(sql) > 110 else ''}"))
    if len(rows) > 40:
        con.print(Text(f"  and {len(rows) - 40} more: trace --html shows them all"))
    con.print()


def _print_header(con, t: Trace) -> None:
    """Task, outcome, the question and follow-ups, the summary, why it stopped, branch and models."""
    from rich.text import Text

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
    con.print(
        Text(
            f"Branch {t.branch} at {t.tip[:8]} · base {t.base_ref} ({t.base_sha[:8]}) · "
            f"models: planner {t.models.planner}, executor {t.models.executor}",
            style="dim",
        )
    )
    con.print()


_NODE_STYLE = {"done": "green", "failed": "red", "running": "yellow", "pending": "", "skipped": "dim"}


def _print_plan(con, t: Trace) -> None:
    """The plan as a tree, one line per node with its status mark."""
    from rich.text import Text
    from rich.tree import Tree

    legend = "  ".join(f"{s.mark} {s.value}" for s in NodeStatus)
    if t.plan is None:
        con.print(Text("Plan: (no plan yet)", style="bold"))
    else:
        tree = Tree(
            Text.assemble((f"Plan (version {t.plan.version})", "bold"), ("   marks: " + legend, "dim")), guide_style="dim"
        )
        for n in t.plan.nodes:
            _add_plan_node(tree, n)
        con.print(tree)
    con.print()


def _add_plan_node(parent, n: TraceNode) -> None:
    """Adds the node and, under it, its children to the tree."""
    from rich.text import Text

    label = Text.assemble((n.mark, _NODE_STYLE[n.status.value]), " ", (n.id, "bold"), " ", " ".join(n.title.split()))
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
        _add_plan_node(branch, c)


# ----------------------------------------------------------------------------- the timeline


def _timeline_columns(tot: Totals) -> list[tuple[str, str, str]]:
    """(header, justify, footer) per column of the timeline; the footers are the totals."""
    return [
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


_STEP_STATUS_STYLE = {"done": "green", "failed": "bold red", "running": "yellow"}


def _timeline_row(s: TraceStep) -> list:
    """One step's cells, in the order of _timeline_columns; text from the branch as Text, not markup."""
    from rich.text import Text

    what = s.commit.subject.split(": ", 1)[-1] if s.commit else ("(not reported yet)" if s.status == "running" else "")
    return [
        str(s.seq),
        s.role,
        Text(s.node or "—"),
        Text(what),
        Text(s.model or "—"),
        str(s.turns) if s.has_record else "—",
        s.started_at.strftime("%H:%M:%S") if s.started_at else "—",
        _secs(s.duration_ms),
        f"{s.usage.input_tokens:,}",
        f"{s.usage.output_tokens:,}",
        f"{s.usage.cache_read_tokens:,}",
        f"{s.usage.cache_write_tokens:,}",
        f"{s.cache_share:.0%}",
        f"${s.cost_usd:.4f}",
        Text(s.status, style=_STEP_STATUS_STYLE.get(s.status, "")),
        Text(s.commit.short if s.commit else "—", style="cyan" if s.commit else "dim"),
    ]


# The columns left out, in this order, while the table is wider than the terminal.
_DROP_ORDER = ["Started", "Cache write", "What", "Commit", "Cache share", "Model", "Cache read", "Turns", "Role"]


@dataclass
class _Timeline:
    """The timeline table. Every column keeps its natural width; the commit subject shrinks first,
    then the least needed columns are left out until the table fits the terminal."""

    cols: list[tuple[str, str, str]]
    rows: list[list]
    natural: list[int] = field(init=False)
    what: int = field(init=False)  # the index of the commit subject column, the one that shrinks
    what_width: int = field(init=False)
    shown: list[int] = field(init=False)
    hidden: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.natural = [
            max([len(x) for x in name.split("\n")] + [len(footer)] + [len(str(r[i])) for r in self.rows])
            for i, (name, _, footer) in enumerate(self.cols)
        ]
        self.what = next(i for i, c in enumerate(self.cols) if c[0].startswith("What"))
        self.shown = list(range(len(self.cols)))
        self.what_width = min(self.natural[self.what], 48)

    def build(self, narrowest: bool = False):
        from rich import box
        from rich.table import Table

        table = Table(
            title="Timeline: one row per step, in step order",
            title_justify="left",
            title_style="bold",
            show_footer=True,
            header_style="bold",
            footer_style="bold",
            box=box.SIMPLE_HEAD,
            collapse_padding=True,
        )
        for i in self.shown:
            name, justify, footer = self.cols[i]
            flexible = i == self.what
            width = min(12, self.natural[i]) if narrowest else self.what_width
            table.add_column(
                name,
                justify=justify,
                footer=footer,
                no_wrap=True,
                overflow="ellipsis",
                min_width=width if flexible else self.natural[i],
                max_width=width if flexible else None,
            )
        for r in self.rows:
            table.add_row(*(r[i] for i in self.shown))
        return table

    def min_width(self) -> int:
        """The width the table needs with the commit subject at its narrowest (printed off screen)."""
        from io import StringIO

        from rich.cells import cell_len
        from rich.console import Console

        probe = Console(file=StringIO(), width=1000, color_system=None)
        probe.print(self.build(narrowest=True))
        return max(cell_len(line.rstrip()) for line in probe.file.getvalue().splitlines() if line.strip())

    def fit(self, width: int) -> None:
        """Leaves out columns in _DROP_ORDER until the table fits, then widens the subject into what is left."""
        for prefix in _DROP_ORDER:
            needed = self.min_width()
            if needed <= width:
                if self.what in self.shown:
                    narrowest = min(12, self.natural[self.what])
                    self.what_width = max(narrowest, min(self.what_width, width - needed + narrowest))
                break
            i = next(i for i, c in enumerate(self.cols) if c[0].replace("\n", " ").startswith(prefix))
            self.shown.remove(i)
            self.hidden.append(self.cols[i][0].replace("\n", " "))


def _print_timeline(con, t: Trace) -> None:
    """The timeline table, as wide as the terminal allows, and which columns it left out."""
    from rich.text import Text

    timeline = _Timeline(_timeline_columns(t.totals), [_timeline_row(s) for s in t.steps])
    timeline.fit(con.width)
    con.print(timeline.build())
    if timeline.hidden:
        con.print(
            Text(
                f"(narrow terminal: {', '.join(timeline.hidden)} not shown; --json or a wider terminal shows every column)",
                style="dim",
            )
        )


# ----------------------------------------------------------------------------- totals, breakdowns, ledger


def _print_totals(con, t: Trace) -> None:
    """The totals line and the cost by model and by role."""
    from rich.text import Text

    tot = t.totals
    u = tot.usage
    con.print(
        Text.assemble(
            ("Totals: ", "bold"),
            f"{tot.steps} steps ({tot.model_steps} with model calls), {tot.turns} turns · "
            f"{tot.tokens:,} tokens ({u.input_tokens:,} input, {u.output_tokens:,} output, {u.cache_read_tokens:,} cache read, "
            f"{u.cache_write_tokens:,} cache write; {tot.cache_share:.0%} of the prompt read from cache) · "
            f"cost ${tot.cost_usd:.4f} · {tot.step_duration_ms / 1000:.1f} s of step time, {_wall(tot.wall_seconds)} wall time",
        )
    )
    for title, rows in (("Cost by model", t.by_model), ("Cost by role", t.by_role)):
        if rows:
            con.print(
                Text.assemble(
                    (f"{title}: ", "bold"),
                    " · ".join(
                        f"{r.key} ${r.cost_usd:.4f} ({r.steps} step{'' if r.steps == 1 else 's'}, {r.usage.total:,} tokens)"
                        for r in rows
                    ),
                )
            )


def _print_ledger(con, t: Trace) -> None:
    """The ledger check, its problems, other commits, a shallow-clone warning and the steps' errors."""
    from rich.text import Text

    lg = t.ledger
    if t.ledger_consistent:
        con.print(
            Text.assemble(
                ("Ledger: ", "bold"),
                (
                    f"consistent ✓ — the commits' Agent-Cost-USD trailers add up to ${lg.commits_cost_usd:.4f}, "
                    "the same as the step records",
                    "green",
                ),
            )
        )
    else:
        con.print(
            Text.assemble(
                ("Ledger: ", "bold"),
                (f"INCONSISTENT ✗ — commits ${lg.commits_cost_usd:.6f}, step records ${lg.steps_cost_usd:.6f}", "bold red"),
            )
        )
    for p in lg.problems:
        con.print(Text("  ! " + p, style="yellow"))
    if t.events:
        con.print(
            Text.assemble(
                ("Other commits: ", "bold"),
                " · ".join(f"{c.short} {c.subject}" for c in t.events[-5:])
                + (f" (and {len(t.events) - 5} more)" if len(t.events) > 5 else ""),
            )
        )
    if not t.history_complete:
        con.print(
            Text("  ! shallow clone: the history does not reach the task's first commit (git fetch --unshallow)", style="yellow")
        )
    errors = [s for s in t.steps if s.error]
    for s in errors:
        con.print(Text.assemble((f"Step {s.seq} ({s.label}) {s.status}: ", "bold red"), " ".join(s.error.split())[:500]))
