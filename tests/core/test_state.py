"""The files on a task branch: validated on read, with errors naming the file and the field."""

import json

import pytest

from gitops_agent.core.errors import StateFileError
from gitops_agent.core.plan import Plan, PlanNode, plan_problems
from gitops_agent.core.state import NodeStatus, TaskFile, Usage, parse_state


def node(id, deps=(), children=(), status="pending"):
    return PlanNode(id=id, title=id, goal=f"do {id}", depends_on=list(deps), children=list(children), status=status)


def test_bad_json_names_file_and_position():
    with pytest.raises(StateFileError) as e:
        parse_state(Plan, "{nope", ".agent/tasks/t/plan.json")
    assert ".agent/tasks/t/plan.json" in str(e.value) and "not valid JSON" in str(e.value)


def test_bad_field_names_the_field():
    bad = {"schema": 1, "version": 1, "goal": "g", "nodes": [{"id": "n1", "title": "x", "status": "sleeping"}]}
    with pytest.raises(StateFileError) as e:
        parse_state(Plan, json.dumps(bad), "plan.json")
    assert "nodes.0.status" in str(e.value)


def test_task_file_rejects_unsafe_task_id():
    with pytest.raises(StateFileError) as e:
        parse_state(
            TaskFile,
            json.dumps(
                {
                    "task_id": "../x",
                    "question": "q",
                    "base_ref": "main",
                    "base_sha": "0" * 40,
                    "models": {"planner": "p", "executor": "e"},
                    "created_at": "2026-01-01T00:00:00Z",
                }
            ),
            "task.json",
        )
    assert "task_id" in str(e.value)


def test_plan_round_trip_keeps_the_design_shape():
    p = Plan(version=7, goal="g", nodes=[node("n1", status="done"), node("n2", deps=["n1"])])
    data = json.loads(p.model_dump_json(by_alias=True))
    assert data["schema"] == 1 and data["version"] == 7
    assert set(data["nodes"][0]) >= {"id", "title", "goal", "agent", "depends_on", "status", "attempts", "result", "children"}
    assert parse_state(Plan, p.model_dump_json(by_alias=True), "plan.json") == p


@pytest.mark.parametrize(
    "nodes,needle",
    [
        ([node("n1", deps=["n9"])], "unknown node 'n9'"),
        ([node("n1", deps=["n2"]), node("n2", deps=["n1"])], "dependency cycle"),
        ([node("n1", deps=["n1"])], "depends on itself"),
        ([node("n1"), node("n1")], "used twice"),
        ([node("p", children=[node("c", deps=["p"])])], "dependency cycle"),
    ],
)
def test_plan_problems_are_precise(nodes, needle):
    problems = plan_problems(nodes)
    assert any(needle in p for p in problems), problems


def test_ready_respects_dependencies_and_parents():
    p = Plan(
        goal="g",
        nodes=[
            node("n1", status="done"),
            node("grp", deps=["n1"], children=[node("a"), node("b", deps=["a"])]),
            node("n3", deps=["grp"]),
        ],
    )
    assert [n.id for n in p.ready()] == ["a"]
    p.get("a").status = NodeStatus.done
    assert [n.id for n in p.ready()] == ["b"]
    p.get("b").status = NodeStatus.done
    assert p.status_of(p.get("grp")) == NodeStatus.done
    assert [n.id for n in p.ready()] == ["n3"]


def test_failed_dependency_blocks():
    p = Plan(goal="g", nodes=[node("n1", status="failed"), node("n2", deps=["n1"])])
    assert p.ready() == [] and [n.id for n in p.blocked()] == ["n2"]


def test_usage_trailer_round_trip():
    u = Usage(input_tokens=1834, output_tokens=412, cache_read_tokens=12000, cache_write_tokens=0)
    assert u.trailer() == "in=1834 out=412 cache_read=12000 cache_write=0"
    assert Usage.from_trailer(u.trailer()) == u


def test_the_wall_budget_is_per_round():
    """A follow-up a day after the task began is not over its wall budget at once."""
    from datetime import datetime, timedelta, timezone

    from gitops_agent.core.snapshot import Snapshot
    from gitops_agent.core.state import Budget, StepRecord, TaskFile, TaskModels

    day_ago = datetime.now(timezone.utc) - timedelta(days=1)
    task = TaskFile(
        task_id="t-1",
        question="q",
        base_ref="main",
        base_sha="0" * 40,
        budget=Budget(max_wall_seconds=600),
        models=TaskModels(planner="scripted", executor="scripted"),
        created_at=day_ago,
    )
    snap = Snapshot.__new__(Snapshot)
    snap.task, snap.steps = task, []
    assert snap.wall_left() < 0, "one round, a day old: spent"
    now = datetime.now(timezone.utc)
    snap.steps = [StepRecord(task_id="t-1", seq=9, role="intake", node="_intake", started_at=now, finished_at=now)]
    assert 590 < snap.wall_left() <= 600


def test_the_wall_budget_stops_a_round_that_ran_too_long_and_a_follow_up_starts_a_new_one():
    """budget_problem() (what stops a task) counts the wall time of this round in seconds: a
    round one second past max_wall_seconds is over it; a follow-up a day later starts afresh."""
    from datetime import datetime, timedelta, timezone

    from gitops_agent.core.snapshot import Snapshot
    from gitops_agent.core.state import Budget, StepRecord, TaskFile, TaskModels

    now = datetime.now(timezone.utc)
    task = TaskFile(
        task_id="t-1",
        question="q",
        base_ref="main",
        base_sha="0" * 40,
        budget=Budget(max_wall_seconds=600),
        models=TaskModels(planner="scripted", executor="scripted"),
        created_at=now - timedelta(seconds=601),
    )
    snap = Snapshot.__new__(Snapshot)
    snap.task, snap.steps = task, []
    over = snap.budget_problem(now=now)
    assert over is not None and over.what == "wall seconds" and over.used == 601 and over.limit == 600
    assert str(over) == "budget exceeded: wall seconds 601 of 600"
    snap.task = task.model_copy(update={"created_at": now - timedelta(seconds=599)})
    assert snap.budget_problem(now=now) is None, "within the round's wall time"
    # a day-old task: over; a follow-up (an intake step) just now starts a new round
    snap.task = task.model_copy(update={"created_at": now - timedelta(days=1)})
    assert snap.budget_problem(now=now).what == "wall seconds"
    snap.steps = [
        StepRecord(task_id="t-1", seq=9, role="intake", node="_intake", started_at=now - timedelta(seconds=5), finished_at=now)
    ]
    assert snap.budget_problem(now=now) is None
