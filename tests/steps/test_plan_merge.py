"""How the planner's proposed tree is checked and merged with what is already known."""

import pytest

from gitops_agent.core.errors import FormatError
from gitops_agent.core.plan import Plan, PlanNode
from gitops_agent.core.state import NodeStatus
from gitops_agent.steps.plan import merge_plan

AGENTS = {"analyst", "coder"}


def raw(id, deps=(), goal=None, **kw):
    return {"id": id, "title": id.upper(), "goal": goal or f"do {id}", "depends_on": list(deps), **kw}


def test_first_plan_gets_version_1_and_pending_nodes():
    p = merge_plan(None, [raw("n1"), raw("n2", ["n1"])], AGENTS, goal="q")
    assert p.version == 1
    assert [n.status for n in p.walk()] == [NodeStatus.pending] * 2
    assert [n.id for n in p.ready()] == ["n1"]


def test_model_cannot_set_status_or_results():
    p = merge_plan(None, [raw("n1", status="done", result="steps/x/result.md")], AGENTS, goal="q")
    assert p.get("n1").status == NodeStatus.pending and p.get("n1").result is None


@pytest.mark.parametrize(
    "nodes,needle",
    [
        ("not json", "not valid JSON"),
        ([], "non-empty array"),
        ([raw("n1", ["nx"])], "unknown node 'nx'"),
        ([raw("n1", ["n2"]), raw("n2", ["n1"])], "dependency cycle"),
        ([raw("n1", agent="hacker")], "unknown agent"),
        ([{"id": "1bad", "title": "t", "goal": "g"}], "bad node id"),
        ([{"id": "n1"}], "title"),
    ],
)
def test_malformed_plans_get_precise_errors(nodes, needle):
    with pytest.raises(FormatError) as e:
        merge_plan(None, nodes, AGENTS, goal="q")
    assert needle in str(e.value)


def _old():
    return Plan(
        version=3,
        goal="q",
        nodes=[
            PlanNode(
                id="n1", title="N1", goal="do n1", status=NodeStatus.done, step=3, attempts=1, result="steps/0003-n1/result.md"
            ),
            PlanNode(id="n2", title="N2", goal="do n2", depends_on=["n1"], status=NodeStatus.running, step=5, attempts=1),
            PlanNode(id="n3", title="N3", goal="do n3", depends_on=["n1"], status=NodeStatus.failed, step=4, attempts=1),
        ],
    )


def test_done_and_running_nodes_keep_their_results():
    p = merge_plan(_old(), [raw("n1"), raw("n2", ["n1"]), raw("n4", ["n1"])], AGENTS, goal="q")
    assert p.version == 4
    assert p.get("n1").status == NodeStatus.done and p.get("n1").result == "steps/0003-n1/result.md"
    assert p.get("n2").status == NodeStatus.running and p.get("n2").step == 5
    assert p.get("n3") is None  # a failed node may be dropped
    assert [n.id for n in p.ready()] == ["n4"]


def test_rewriting_a_done_node_is_refused():
    with pytest.raises(FormatError) as e:
        merge_plan(_old(), [raw("n1", goal="something else"), raw("n2", ["n1"])], AGENTS, goal="q")
    assert "done node 'n1' was rewritten" in str(e.value)


def test_dropping_a_running_node_is_refused():
    with pytest.raises(FormatError) as e:
        merge_plan(_old(), [raw("n1"), raw("n4", ["n1"])], AGENTS, goal="q")
    assert "running node 'n2' is missing" in str(e.value)


def test_failed_node_with_new_goal_is_retried():
    p = merge_plan(_old(), [raw("n1"), raw("n2", ["n1"]), raw("n3", ["n1"], goal="do n3 better")], AGENTS, goal="q")
    assert p.get("n3").status == NodeStatus.pending and p.get("n3").attempts == 1


def test_a_plan_where_nothing_can_run_asks_for_finish():
    old = Plan(version=1, goal="q", nodes=[PlanNode(id="n1", title="N1", goal="do n1", status=NodeStatus.done, step=2)])
    with pytest.raises(FormatError) as e:
        merge_plan(old, [raw("n1")], AGENTS, goal="q")
    assert "Call `finish`" in str(e.value)


def test_the_dependencies_of_a_done_or_running_node_cannot_be_rewritten():
    # n1 is done (its result was computed without n4) and n2 runs on n1's result: a revision that
    # says n1 depended on a new node, or that n2 no longer depends on n1, would rewrite history
    for nodes, who in (
        ([raw("n1", ["n4"]), raw("n2", ["n1"]), raw("n4")], "done node 'n1'"),
        ([raw("n1"), raw("n2"), raw("n4")], "running node 'n2'"),
        ([raw("n1"), raw("n2", ["n1", "n4"]), raw("n4")], "running node 'n2'"),
    ):
        with pytest.raises(FormatError) as e:
            merge_plan(_old(), nodes, AGENTS, goal="q")
        assert f"{who} was rewritten" in str(e.value) and "depends_on" in str(e.value)
    # the same dependencies in another order are the same node
    old = _old()
    old.get("n2").depends_on = ["n1", "n3"]
    p = merge_plan(old, [raw("n1"), raw("n2", ["n3", "n1"]), raw("n3", ["n1"])], AGENTS, goal="q")
    assert p.get("n1").status == NodeStatus.done and p.get("n1").depends_on == [] and p.get("n2").status == NodeStatus.running
