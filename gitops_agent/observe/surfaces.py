"""What the agent posts on GitHub: the progress comment on the issue, the pull-request body, and
the job's step summary -- pure functions of a Snapshot (gitops_agent.core.snapshot) or a Trace
(gitops_agent.observe.trace), seen the same way through one view.

Separate from gitops_agent/observe/render.py, whose renderings (checklist, Mermaid graph, cost table,
safe Markdown) these are built from and which the prompts and the report use too. Everything that
comes from the branch is model output: inline text is escaped, block text (the answer) keeps its
Markdown but can neither @mention anyone nor forge the task marker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Union

from gitops_agent.core.plan import Plan
from gitops_agent.core.state import Usage
from gitops_agent.observe.render import cache_share, fmt_tokens, md_block, md_checklist, md_text, mermaid
from gitops_agent.observe.rounds import last_round_nodes, rounds_table
from gitops_agent.safety.text import DEFAULT_IMAGE_HOSTS

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.core.snapshot import Snapshot
    from gitops_agent.observe.trace import Trace

    TaskView = Union[Snapshot, Trace]


MARKER_PREFIX = "<!-- gitops-agent:task="


def task_marker(task_id: str) -> str:
    """The hidden marker that identifies a task's comment (and PR body) on GitHub."""
    return f"{MARKER_PREFIX}{task_id} -->"


@dataclass
class _Row:
    seq: int
    role: str
    node: str | None
    model: str
    turns: int
    usage: Usage
    cost_usd: float
    status: str
    duration_ms: int = 0
    sha: str | None = None
    run_url: str | None = None


@dataclass
class _View:
    task_id: str
    branch: str
    question: str
    plan: Plan | None
    rows: list[_Row]
    usage: Usage
    cost_usd: float
    outcome: str
    summary: str
    answer: str
    reason: str | None
    finished: bool
    runs: list[str] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)
    max_usd: float | None = None  # the task's budget in dollars (it may have been raised: `/agent budget`)


def _view(task: "TaskView", commits: Mapping[int, str] | None = None) -> _View:
    """A Snapshot or a Trace, seen the same way. ``commits`` (seq → sha) adds commit links to
    a Snapshot (a Trace has them already)."""
    commits = dict(commits or {})
    if hasattr(task, "ledger_consistent"):  # a Trace
        t: Any = task
        rows = [
            _Row(
                s.seq,
                s.role,
                s.node,
                s.model,
                s.turns,
                s.usage,
                s.cost_usd,
                s.status,
                s.duration_ms,
                s.commit.sha if s.commit else commits.get(s.seq),
                s.commit.run_url if s.commit else None,
            )
            for s in t.steps
            if s.role in ("planner", "executor", "finish")
        ]
        runs = list(dict.fromkeys(s.commit.run_url for s in t.steps if s.commit and s.commit.run_url))
        return _View(
            t.task_id,
            t.branch,
            t.question,
            t.plan_model(),
            rows,
            t.totals.usage,
            t.totals.cost_usd,
            t.outcome,
            t.summary,
            t.answer,
            t.reason,
            t.outcome != "unfinished",
            runs,
            list(getattr(t, "instructions", [])),
            t.budget.max_usd,
        )
    snap: Any = task
    rows = [
        _Row(
            r.seq,
            r.role,
            r.node if r.role == "executor" else None,
            r.model,
            r.turns,
            r.usage,
            r.cost_usd,
            r.status,
            r.duration_ms,
            commits.get(r.seq),
        )
        for r in snap.steps
    ]
    fin = snap.plan.finish if snap.plan else None
    outcome, answer, reason = snap.ending()
    finished = outcome != "unfinished"
    return _View(
        snap.task_id,
        snap.branch,
        snap.task.question,
        snap.plan,
        rows,
        snap.usage,
        snap.cost_usd,
        outcome,
        fin.summary if fin else "",
        fin.answer if fin else "",
        reason if finished else None,
        finished,
        instructions=list(snap.task.instructions),
        max_usd=snap.task.budget.max_usd,
    )


def _link(text: str, url: str | None) -> str:
    return f"[{text}]({url})" if url else text


def _step_links(v: _View, commit_url: Callable[[str], str] | None) -> dict[str, list[str]]:
    """node id → links to the commits of its steps."""
    out: dict[str, list[str]] = {}
    for r in v.rows:
        if r.role == "executor" and r.node:
            url = commit_url(r.sha) if (commit_url and r.sha) else None
            label = f"step {r.seq}" + (" (running)" if r.status == "running" else "")
            out.setdefault(r.node, []).append(_link(label, url))
    return out


def _spent_line(v: _View) -> str:
    u = v.usage
    model_steps = sum(1 for r in v.rows if r.role in ("planner", "executor") and r.status != "running")
    return (
        f"{fmt_tokens(u.total)} tokens ({fmt_tokens(u.total_input)} input, {fmt_tokens(u.output_tokens)} output, "
        f"{cache_share(u):.0%} read from cache) · **${v.cost_usd:.4f}**{_of_budget(v)} · {model_steps} model steps"
    )


def _of_budget(v: _View) -> str:
    if not v.max_usd:
        return ""
    return f" of the task's ${v.max_usd:.2f} budget ({v.cost_usd / v.max_usd:.0%})"


def _md_cost_table(v: _View, commit_url: Callable[[str], str] | None) -> str:
    rows = [
        "| step | role | node | model | turns | input tokens | output tokens | cache read | time | cost |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    total, cost, turns, ms = Usage(), 0.0, 0, 0
    for r in v.rows:
        if r.role == "finish":
            continue
        total, cost, turns, ms = total + r.usage, cost + r.cost_usd, turns + r.turns, ms + r.duration_ms
        step = _link(str(r.seq), commit_url(r.sha) if (commit_url and r.sha) else None)
        flag = " ✗" if r.status == "failed" else (" …" if r.status == "running" else "")
        rows.append(
            f"| {step}{flag} | {r.role} | {md_text(r.node or '')} | {md_text(r.model)} | {r.turns} | "
            f"{fmt_tokens(r.usage.total_input)} | {fmt_tokens(r.usage.output_tokens)} | {cache_share(r.usage):.0%} | "
            f"{r.duration_ms / 1000:.1f} s | ${r.cost_usd:.4f} |"
        )
    rows.append(
        f"| **total** | | | | {turns} | {fmt_tokens(total.total_input)} | {fmt_tokens(total.output_tokens)} | "
        f"{cache_share(total):.0%} | {ms / 1000:.1f} s | **${cost:.4f}** |"
    )
    return "\n".join(rows)


def _quote(text: str, limit: int = 400) -> str:
    first = str(text or "").strip()
    return "> " + md_text(first, limit)


def progress_comment(
    snap: "TaskView",
    current: str,
    run_url: str | None = None,
    commit_url: Callable[[str], str] | None = None,
    *,
    commits: Mapping[int, str] | None = None,
) -> str:
    """The issue comment that follows a task: the hidden marker first, then the question, the
    current step, the plan as a checklist with marks and step links, tokens and cost so far,
    and links to the runs. ``commits`` (seq → sha) gives a Snapshot its commit links."""
    v = _view(snap, commits)
    head = {"unfinished": "is working on this", "done": "has an answer"}.get(v.outcome, f"stopped ({v.outcome})")
    out = [
        task_marker(v.task_id),
        f"### 🤖 gitops-agent {head}",
        "",
        _quote(v.question),
        "",
        f"**Now:** {md_text(current, 300)}" + (f" · [run log]({run_url})" if run_url else ""),
        "",
        md_checklist(v.plan, _step_links(v, commit_url)),
        "",
        f"**Spent so far:** {_spent_line(v)}",
    ]
    plans = [r for r in v.rows if r.role != "executor"]
    if commit_url and plans:
        out.append(
            "**Planner and finish commits:** "
            + " · ".join(_link(f"{r.seq} {r.role}", commit_url(r.sha) if r.sha else None) for r in plans)
        )
    runs = [u for u in v.runs if u != run_url]
    if runs:
        out.append("**Earlier runs:** " + " · ".join(f"[{i}]({u})" for i, u in enumerate(runs[-10:], 1)))
    if v.reason and v.outcome not in ("done", "unfinished"):
        out.append(f"**Why it stopped:** {md_text(v.reason, 500)}")
    out += ["", f"<sub>branch `{v.branch}` · status marks: [✓] done · [→] running · [ ] pending · [!] failed · [-] skipped</sub>"]
    return "\n".join(out) + "\n"


def pr_body(
    snap: "TaskView",
    run_url: str | None = None,
    commit_url: Callable[[str], str] | None = None,
    *,
    commits: Mapping[int, str] | None = None,
    issue: int | None = None,
    trace_url: str | None = None,
    image_hosts: tuple[str, ...] | list[str] = DEFAULT_IMAGE_HOSTS,
    charts: str = "",
) -> str:
    """The pull request's body: the answer and its charts, the plan as a Mermaid graph (and a
    checklist), the cost table, and links (issue, run, commits, the trace). ``charts``: Markdown
    from gitops_agent.observe.charts.remote_markdown (sanitised there, with the images it allows)."""
    v = _view(snap, commits)
    title = v.summary or (v.question.splitlines()[0] if v.question.strip() else v.task_id)
    out = [task_marker(v.task_id), f"## {md_text(title, 200)}", ""]
    flagged = [f for st in getattr(snap, "steps", []) for f in (getattr(st, "flagged", None) or [])]
    if flagged:  # files that tools or CI run, or that existed before: the reviewer looks first
        out += ["> [!WARNING]", "> This pull request changes files that need a careful look before anything runs them:", ">"]
        out += [f"> - {md_text(f, 300)}" for f in flagged[:50]]
        if len(flagged) > 50:
            out.append(f"> - … and {len(flagged) - 50} more (see the steps' step.json)")
        out.append("")
    out.append(_quote(v.question, 1000))
    if v.instructions:  # the conversation: every follow-up, who asked it and when
        out += ["", "**Follow-ups:**", *[f"{i}. {md_text(x, 500)}" for i, x in enumerate(v.instructions, 1)]]
    if issue is not None:
        out += ["", f"Answers #{int(issue)}."]
    if v.outcome != "done":
        out += ["", f"**Outcome: {md_text(v.outcome)}**" + (f" — {md_text(v.reason, 500)}" if v.reason else "")]
    out += ["", "### Answer", "", md_block(v.answer, image_hosts) or "_(no answer)_"]
    if charts:
        out += ["", "### Charts", "", charts]
    changed = last_round_nodes(snap)
    out += ["", "### Plan", "", "```mermaid", mermaid(v.plan, changed), "```"]
    if changed:
        out += ["", f"Thick borders: run in the latest round ({', '.join(md_text(n, 40) for n in sorted(changed))})."]
    out += ["", md_checklist(v.plan, _step_links(v, commit_url))]
    rounds = rounds_table(snap)
    if rounds:
        out += ["", "### Rounds", "", rounds]
    out += ["", "### Cost", "", _md_cost_table(v, commit_url), "", f"**Total:** {_spent_line(v)}"]
    links = [f"- Branch: `{v.branch}` · report: `.agent/tasks/{v.task_id}/report.md`"]
    if run_url:
        links.append(f"- Run: {run_url}")
    for u in v.runs:
        if u != run_url:
            links.append(f"- Run: {u}")
    if trace_url:
        links.append(f"- Trace: {trace_url}")
    links.append(f"- Locally: `gitops-agent trace {v.task_id} --html trace.html`")
    out += ["", "### Links", "", *links]
    return "\n".join(out) + "\n"


def step_summary(
    snap: "TaskView", step_desc: str, *, commit_url: Callable[[str], str] | None = None, commits: Mapping[int, str] | None = None
) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: what this job did, the plan, and the ledger."""
    v = _view(snap, commits)
    out = [
        f"### gitops-agent · {md_text(step_desc, 200)}",
        "",
        f"Task `{v.task_id}` ({md_text(v.outcome)})",
        "",
        _quote(v.question),
        "",
        md_checklist(v.plan, _step_links(v, commit_url)),
        "",
        _md_cost_table(v, commit_url),
        "",
        f"**Total:** {_spent_line(v)}",
    ]
    return "\n".join(out) + "\n"


def append_step_summary(markdown: str) -> bool:
    """Append to the file named by ``$GITHUB_STEP_SUMMARY`` (False when not on GitHub Actions)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    with open(path, "a", encoding="utf-8") as f:
        f.write(markdown.rstrip("\n") + "\n")
    return True
