"""The eval table: per question and configuration, pass rate, cost, tokens (and the cached
share), turns and wall time; totals; with two configurations (or a baseline run), the
differences side by side."""

from __future__ import annotations

from gitops_agent.eval.run import EvalRun, QuestionResult


def _cell(rs: list[QuestionResult]) -> dict[str, float]:
    n = len(rs) or 1
    tokens = sum(r.tokens for r in rs)
    return {
        "pass": sum(r.passed for r in rs) / n,
        "runs": len(rs),
        "passed": sum(r.passed for r in rs),
        "cost": sum(r.cost_usd for r in rs) / n,
        "tokens": tokens / n,
        "cache": (sum(r.cache_read_tokens for r in rs) / tokens) if tokens else 0.0,
        "turns": sum(r.turns for r in rs) / n,
        "wall": sum(r.wall_s for r in rs) / n,
    }


def summary(run: EvalRun) -> dict[str, dict[str, float]]:
    """Per configuration label: pass rate, mean cost per question, … over every result."""
    return {c.label: _cell([r for r in run.results if r.config == c.label]) for c in run.configs}


def _fmt(c: dict[str, float]) -> str:
    mark = "✓" if c["pass"] == 1 else ("✗" if c["pass"] == 0 else f"{c['passed']:.0f}/{c['runs']:.0f}")
    return f"{mark} | ${c['cost']:.4f} | {c['tokens'] / 1000:.1f}k ({c['cache']:.0%}) | {c['turns']:.1f} | {c['wall']:.1f} s"


def table(run: EvalRun, baseline: EvalRun | None = None) -> str:
    """Markdown: one row per question, one group of columns per configuration (a baseline run's
    configurations first, named as in it), then the totals and, for two, the difference."""
    runs = ([baseline] if baseline else []) + [run]
    cols = [(r, c.label, f"{c.label} (baseline)" if r is baseline else c.label) for r in runs for c in r.configs]
    head = "| question | " + " | ".join(f"{name}: pass | cost | tokens (cached) | turns | wall" for _, _, name in cols) + " |"
    sep = "|---|" + "---|---|---|---|---|" * len(cols)
    ids = list(dict.fromkeys(x.id for r in runs for x in r.results))
    lines = [f"### eval `{run.suite}`", "", head, sep]
    for qid in ids:
        cells = []
        for r, label, _ in cols:
            rs = [x for x in r.results if x.config == label and x.id == qid]
            cells.append(_fmt(_cell(rs)) if rs else "— | | | |")
        lines.append(f"| {qid} | " + " | ".join(cells) + " |")
    totals = []
    for r, label, _ in cols:
        rs = [x for x in r.results if x.config == label]
        c = _cell(rs)
        totals.append(
            f"**{c['pass']:.0%}** ({c['passed']:.0f}/{c['runs']:.0f}) | ${sum(x.cost_usd for x in rs):.4f} | "
            f"{sum(x.tokens for x in rs) / 1000:.1f}k ({c['cache']:.0%}) | {sum(x.turns for x in rs)} | "
            f"{sum(x.wall_s for x in rs):.0f} s"
        )
    lines.append("| **total** | " + " | ".join(totals) + " |")
    if len(cols) == 2:
        (ra, la, na), (rb, lb, nb) = cols
        a, b = _cell([x for x in ra.results if x.config == la]), _cell([x for x in rb.results if x.config == lb])
        ca, cb = sum(x.cost_usd for x in ra.results if x.config == la), sum(x.cost_usd for x in rb.results if x.config == lb)
        lines += [
            "",
            f"**{nb}** against **{na}**: pass rate {b['pass'] - a['pass']:+.0%} "
            f"({a['pass']:.0%} → {b['pass']:.0%}), cost {cb - ca:+.4f} USD ({_ratio(cb, ca)}), "
            f"tokens per question {b['tokens'] - a['tokens']:+,.0f}, turns per question {b['turns'] - a['turns']:+.1f}.",
        ]
        changed = [qid for qid in ids if _passes(ra, la, qid) != _passes(rb, lb, qid)]
        if changed:
            lines.append(
                "Questions whose result changed: "
                + ", ".join(f"{qid} ({'fails now' if _passes(ra, la, qid) else 'passes now'})" for qid in changed)
                + "."
            )
    failed = [x for x in run.results if not x.passed]
    if failed:
        lines += ["", "Why the failures failed:", ""]
        lines += [
            f"- {x.id} ({x.config}{f', run {x.repeat + 1}' if run.repeat > 1 else ''}): {_line(x.error or x.why)}"
            for x in failed[:60]
        ]
    lines += ["", f"{len(run.results)} runs in {run.wall_s:.0f} s, started {run.started:%Y-%m-%d %H:%M} UTC."]
    return "\n".join(lines) + "\n"


def _line(text: str, limit: int = 300) -> str:
    """Model-written text (a failure's reason, a judge's why) as one inert line of the table's
    notes: no new heading, row or list item can start inside it."""
    return " ".join(str(text).split())[:limit].replace("|", "\\|").replace("#", "\\#")


def _passes(run: EvalRun, label: str, qid: str) -> bool:
    rs = [x for x in run.results if x.config == label and x.id == qid]
    return bool(rs) and all(x.passed for x in rs)


def _ratio(new: float, old: float) -> str:
    return f"×{new / old:.2f}" if old else "n/a"
