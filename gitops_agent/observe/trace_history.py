"""The history of a task branch for its trace: the agent's commits between the base and the tip,
read by their trailers (Agent-Task, Agent-Step, Agent-Cost-USD ...), indexed by step, and the
ledger that checks them against the step records (step.json).

Separate from gitops_agent/observe/trace_build.py, which builds the trace from the step files at the
tip and takes what it knows of the commits from here.
"""

from __future__ import annotations

from datetime import datetime, timezone

from gitops_agent.core.seams import GitStore
from gitops_agent.core.state import StepRecord, Usage
from gitops_agent.git.repo import parse_trailers
from gitops_agent.observe.trace import _COST_EPS, CommitInfo, Ledger

__all__ = ["branch_commits", "check_ledger", "commit_problems", "index_commits", "trailer_int"]


def branch_commits(
    git: GitStore, tip: str, base_sha: str | None, task_id: str, parent: tuple[str, int] | None = None
) -> tuple[list[CommitInfo], bool]:
    """Agent commits of this task between the base and ``tip``, oldest first; and whether the
    history reached the task's intake commit (False in a shallow clone cut above it)."""
    run = getattr(git, "git", None)
    raw: list[tuple[str, str, str, str]] = []  # sha, parents, date, message
    if run is not None:
        args = ["log", "-z", "--no-show-signature", "--format=%H%x00%P%x00%cI%x00%B", tip]
        if base_sha and run("rev-parse", "--verify", "--quiet", base_sha + "^{commit}", check=False).strip():
            args.append("^" + base_sha)
        fields = run(*args).split("\0")
        for i in range(0, len(fields) - 3, 4):
            sha = fields[i].strip()
            if sha:
                raw.append((sha, fields[i + 1], fields[i + 2], fields[i + 3]))
    else:  # any GitStore: log() without dates
        for c in git.log(tip):
            raw.append(
                (
                    c.sha,
                    " ".join(c.parents),
                    "",
                    c.subject + "\n\n" + c.body + "\n\n" + "\n".join(f"{k}: {v}" for k, v in c.trailers.items()),
                )
            )
    commits: list[CommitInfo] = []
    reached_intake = False
    for sha, _parents, date, message in raw:
        trailers = parse_trailers(message)
        if trailers.get("Agent-Task") != task_id:
            # a fork inherits the steps of its parent up to the step it was forked at
            inherited = (
                parent is not None
                and trailers.get("Agent-Task") == parent[0]
                and trailers.get("Agent-Role") != "intake"
                and (trailers.get("Agent-Step") or "").isdigit()
                and int(trailers["Agent-Step"]) <= parent[1]
            )
            if not inherited:
                continue
        if trailers.get("Agent-Role") == "intake" and trailers.get("Agent-Step") == "1":
            reached_intake = True
        subject = " ".join(message.strip().split("\n", 1)[0].split())
        commits.append(
            CommitInfo(
                sha=sha,
                subject=subject,
                committed_at=_parse_date(date),
                role=trailers.get("Agent-Role"),
                node=trailers.get("Agent-Node"),
                model=trailers.get("Agent-Model"),
                usage=Usage.from_trailer(trailers["Agent-Usage"]) if "Agent-Usage" in trailers else None,
                cost_usd=_float(trailers.get("Agent-Cost-USD")),
                duration_ms=trailer_int(trailers.get("Agent-Duration-Ms")),
                run_url=trailers.get("Agent-Run"),
                outcome=trailers.get("Agent-Outcome"),
                trailers=trailers,
            )
        )
    commits.reverse()
    return commits, reached_intake


def _parse_date(s: str) -> datetime | None:
    try:
        return datetime.fromisoformat(s.strip()).astimezone(timezone.utc) if s.strip() else None
    except ValueError:
        return None


def _float(s: str | None) -> float | None:
    try:
        return float(s) if s is not None else None
    except ValueError:
        return None


def trailer_int(s: str | None) -> int | None:
    try:
        return int(s) if s is not None else None
    except ValueError:
        return None


def index_commits(commits: list[CommitInfo]) -> tuple[dict[int, CommitInfo], list[CommitInfo], list[str]]:
    """The branch's commits by their Agent-Step, the other commits (events), and what is wrong with them."""
    by_seq: dict[int, CommitInfo] = {}
    events: list[CommitInfo] = []
    problems: list[str] = []
    for c in commits:
        seq = trailer_int(c.trailers.get("Agent-Step"))
        if seq is None:
            # not a step: e.g. reconcile's re-dispatch record; a cost on it would still count
            events.append(c)
            if c.cost_usd or c.usage:
                problems.append(f"commit {c.short} has a cost or usage but no Agent-Step trailer")
            continue
        if seq in by_seq:
            problems.append(f"step {seq} has two commits: {by_seq[seq].short} and {c.short}")
        by_seq[seq] = c
    return by_seq, events, problems


def commit_problems(rec: StepRecord, commit: CommitInfo | None) -> list[str]:
    if commit is None:
        return [f"step {rec.seq} ({rec.role} {rec.node}) has no commit with Agent-Step: {rec.seq} in the history"]
    out = []
    if commit.role and commit.role != rec.role:
        out.append(f"step {rec.seq}: commit {commit.short} says role {commit.role}, step.json says {rec.role}")
    if rec.role == "executor" and commit.node and commit.node != rec.node:
        out.append(f"step {rec.seq}: commit {commit.short} says node {commit.node}, step.json says {rec.node}")
    if commit.cost_usd is not None and abs(commit.cost_usd - rec.cost_usd) > _COST_EPS:
        out.append(f"step {rec.seq}: Agent-Cost-USD {commit.cost_usd} != step.json cost_usd {rec.cost_usd}")
    if commit.usage is not None and commit.usage != rec.usage:
        out.append(f"step {rec.seq}: Agent-Usage ({commit.usage.trailer()}) != step.json usage ({rec.usage.trailer()})")
    return out


def check_ledger(
    records: list[StepRecord], by_seq: dict[int, CommitInfo], events: list[CommitInfo], problems: list[str]
) -> Ledger:
    every = list(by_seq.values()) + events
    steps_cost = round(sum(r.cost_usd for r in records), 6)
    commits_cost = round(sum(c.cost_usd or 0.0 for c in every), 6)
    steps_usage = sum((r.usage for r in records), Usage())
    commits_usage = sum((c.usage for c in every if c.usage is not None), Usage())
    tolerance = _COST_EPS * max(1, len(records))
    consistent = abs(steps_cost - commits_cost) <= tolerance and steps_usage == commits_usage
    if abs(steps_cost - commits_cost) > tolerance:
        problems = problems + [
            f"the commits' Agent-Cost-USD add up to ${commits_cost:.6f}, the step records to ${steps_cost:.6f}"
        ]
    if steps_usage != commits_usage:
        problems = problems + [
            f"the commits' Agent-Usage add up to {commits_usage.trailer()}, the step records to {steps_usage.trailer()}"
        ]
    return Ledger(
        consistent=consistent,
        steps_cost_usd=steps_cost,
        commits_cost_usd=commits_cost,
        steps_usage=steps_usage,
        commits_usage=commits_usage,
        problems=problems,
    )
