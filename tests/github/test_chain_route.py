"""The rule of github.inline_steps (gitops_agent/github/chain.py), case by case: what a job carries on
with, what it dispatches, and what it leaves to the last node to end."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gitops_agent.core.plan import Plan, PlanNode
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import Snapshot
from gitops_agent.core.state import NodeStatus, StepRecord, utcnow
from gitops_agent.github.chain import route
from gitops_agent.settings.config import GitHubConfig

B = "agent/task/1-x"


def snap(nodes: dict[str, tuple[str, list[str]]], reported: dict[str, str] | None = None, instructions: int = 0) -> Snapshot:
    """A task whose plan has ``nodes`` (id -> (status, depends_on)); ``reported``: running nodes
    whose step record has landed (id -> done|failed)."""
    plan = Plan(
        version=1,
        goal="g",
        nodes=[
            PlanNode(id=i, title=i, status=NodeStatus(st), depends_on=deps, step=k + 2 if st != "pending" else None)
            for k, (i, (st, deps)) in enumerate(nodes.items())
        ],
    )
    steps = [
        StepRecord(
            task_id="1-x",
            seq=n.step,
            role="executor",
            node=n.id,
            status=(reported or {})[n.id],
            started_at=utcnow(),
            finished_at=utcnow(),
        )
        for n in plan.walk()
        if n.id in (reported or {})
    ]
    task = SimpleNamespace(instructions=["x"] * instructions)
    return Snapshot(git=None, branch=B, tip="0" * 40, task=task, plan=plan, steps=steps, files=[])  # type: ignore[arg-type]


def job(step: str, node: str | None = None) -> Job:
    return Job(step=step, task="1-x", branch=B, node=node, seq=5 if node else None)


ON = GitHubConfig()


def test_the_only_ready_node_runs_here():
    s = snap({"a": ("running", []), "b": ("pending", ["a"])})
    assert route([job("execute", "a")], s, ON, 0) == (job("execute", "a"), [])


def test_a_node_started_while_another_runs_gets_its_own_job():
    s = snap({"a": ("running", []), "b": ("running", [])})
    assert route([job("execute", "b")], s, ON, 0) == (None, [job("execute", "b")])


def test_fan_out_dispatches_every_node():
    s = snap({"a": ("running", []), "b": ("running", [])})
    assert route([job("execute", "a"), job("execute", "b")], s, ON, 0) == (None, [job("execute", "a"), job("execute", "b")])


def test_the_plan_after_the_last_running_node_runs_here():
    s = snap({"a": ("running", []), "b": ("done", [])}, reported={"a": "done"})
    assert route([job("plan")], s, ON, 0) == (job("plan"), [])


def test_a_result_that_readies_nothing_waits_for_the_last_node():
    s = snap({"a": ("running", []), "b": ("running", []), "c": ("pending", ["a", "b"])}, reported={"a": "done"})
    assert route([job("plan")], s, ON, 0) == (None, [])


def test_a_result_that_readies_a_node_asks_the_planner_now():
    s = snap({"a": ("running", []), "b": ("running", []), "c": ("pending", ["a"])}, reported={"a": "done"})
    assert route([job("plan")], s, ON, 0) == (None, [job("plan")])


def test_a_failed_node_asks_the_planner_now():
    s = snap({"a": ("running", []), "b": ("running", [])}, reported={"a": "failed"})
    assert route([job("plan")], s, ON, 0) == (None, [job("plan")])


def test_an_instruction_not_yet_planned_asks_the_planner_now():
    s = snap({"a": ("running", []), "b": ("running", [])}, reported={"a": "done"}, instructions=1)
    assert route([job("plan")], s, ON, 0) == (None, [job("plan")])


def test_finish_runs_here():
    s = snap({"a": ("done", [])})
    assert route([job("finish")], s, ON, 0) == (job("finish"), [])


@pytest.mark.parametrize("cfg,elapsed", [(GitHubConfig(inline_steps=False), 0), (GitHubConfig(inline_minutes=10), 600)])
def test_off_or_out_of_time_dispatches_as_one_job_per_step(cfg, elapsed):
    s = snap({"a": ("running", []), "b": ("running", []), "c": ("pending", ["a", "b"])}, reported={"a": "done"})
    assert route([job("plan")], s, cfg, elapsed) == ((None, []) if cfg.inline_steps else (None, [job("plan")]))
    assert route([job("finish")], snap({"a": ("done", [])}), cfg, elapsed) == (None, [job("finish")])
