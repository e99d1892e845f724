"""Rounds of a task steered by people: the question, each follow-up, each edit of the plan --
what ran in each and what it cost (the PR body and report.md show them)."""

from __future__ import annotations

from gitops_agent.safety.text import inline_text as md_text


def round_starts(steps: list) -> list[int]:
    """The first step number of each round: the question, each follow-up (its intake records a
    step) and each plan step that took up a person's edit of the plan (unless a follow-up just
    started the round)."""
    starts, busy = [0], False
    for s in sorted(steps, key=lambda s: s.seq):
        if s.role == "intake" or (s.role == "planner" and getattr(s, "steered", None) and busy):
            starts.append(s.seq)
            busy = False
        elif s.role in ("planner", "executor"):
            busy = True
    return starts


def last_round_nodes(snap) -> set[str]:
    """The nodes run in the latest round of a task with several rounds (empty otherwise)."""
    steps = list(getattr(snap, "steps", []) or [])
    starts = round_starts(steps)
    return {s.node for s in steps if s.role == "executor" and s.seq >= starts[-1]} if len(starts) > 1 else set()


def rounds_table(snap) -> str:
    """One row per round of a task with follow-ups: what started it (the question, or follow-up N
    and who asked), the nodes that ran in it and what it cost. Empty for a one-round task."""
    steps = sorted(getattr(snap, "steps", []) or [], key=lambda s: s.seq)
    starts = round_starts(steps)
    if len(starts) < 2:
        return ""
    task = getattr(snap, "task", None)
    fus = list(getattr(task, "follow_ups", []) or [])
    rows = ["| round | asked | nodes run | model steps | cost |", "| --: | --- | --- | --: | --: |"]
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else None
        part = [s for s in steps if s.seq >= start and (end is None or s.seq < end)]
        nodes = list(dict.fromkeys(s.node for s in part if s.role == "executor"))
        first = next((s for s in part if s.seq == start), None)
        if k == 0:
            asked = "the question"
        elif first is not None and first.role == "planner":
            asked = "a person's edit of plan.json"
        else:
            n = sum(1 for s in steps if s.role == "intake" and s.seq <= start)
            fu = fus[n - 1] if 0 < n <= len(fus) else None
            asked = f"follow-up {n}" + (f" by {md_text('@' + fu.by, 40)}" if fu is not None and fu.by else "")
            if fu is not None and fu.command:
                asked += f" (`{md_text(fu.command, 60)}`)"
        cost = sum(s.cost_usd for s in part)
        model_steps = sum(1 for s in part if s.role in ("planner", "executor") and (s.usage.total or s.cost_usd))
        rows.append(f"| {k} | {asked} | {', '.join(md_text(n, 40) for n in nodes) or '—'} | {model_steps} | ${cost:.4f} |")
    return "\n".join(rows)
