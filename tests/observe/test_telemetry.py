"""With telemetry set up, a run produces one span per step and one per model call, with the
GenAI semantic-convention attributes."""

import pytest

from gitops_agent.observe import telemetry

sdk = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")


def test_run_emits_step_and_model_call_spans(tmp_path):
    from gitops_agent.app.local import DEMO_QUESTION, make_demo_repo, make_runtime, run_question
    from gitops_agent.settings.config import AgentConfig

    exporter = sdk.InMemorySpanExporter()
    assert telemetry.setup(exporter=exporter, batch=False)
    try:
        repo = make_demo_repo(tmp_path / "demo")
        cfg = AgentConfig()
        cfg.sandbox.backend = "subprocess"
        rt = make_runtime(repo, config=cfg)
        res = run_question(rt, DEMO_QUESTION, planner_model="scripted:demo", executor_model="scripted:demo")
        assert res.outcome == "done"
        spans = exporter.get_finished_spans()
        calls = [s for s in spans if s.name.startswith("chat ")]
        steps = [s for s in spans if s.name.startswith("invoke_agent")]
        assert len(calls) == sum(
            s.turns for s in __import__("gitops_agent.core.snapshot", fromlist=["x"]).load_snapshot(rt.git, res.task_id).steps
        )
        assert all(c.attributes["gen_ai.usage.input_tokens"] > 0 for c in calls)
        assert {s.attributes["gitops_agent.step.role"] for s in steps} >= {"plan", "execute", "finish"}
        # a model call is a child of its step
        step_ids = {s.context.span_id for s in steps}
        assert all(c.parent is not None and c.parent.span_id in step_ids for c in calls)
    finally:
        telemetry.reset()
