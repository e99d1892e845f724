#!/usr/bin/env python
"""P10 what a question costs with the default models: the dabench suite's 29 questions, each
asked through the real engine and the real anthropic SDK to a local Messages API server that
counts tokens and caching as the API does (tests/fakes/anthropic_server.py, with the models' cache
floors), the planner as the default planner model and the executor as the default executor
model, priced at their published prices (gitops_agent/models/pricing.py).

    python bench/question_cost.py [--quick] [--json]

The server answers as a model that gets each question right in the fewest turns (the suite's
scripted solution: plan one node, run its code once, finish): the requests are the engine's own,
the answers the shortest a correct model gives. So this is an estimate of a good first-try
answer; a real model that explores, fails a run or plans more nodes costs more per question by
the per-call figures below (each is a row), and the task budget caps it (``budget.max_usd``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Row, Section, print_section  # noqa: E402

KEY = "sk-ant-bench-cost-0123456789"


def responder(q):
    from gitops_agent.eval.run import scripted_script
    from tests.fakes.agent_responder import AgentResponder, last_stdout, text_and_tool, tool

    script = scripted_script(q)
    plan, run = script["planner"], script.get("executor:n1", [])

    def planner(body, text, n):
        if "## n1 (done)" in text or "n1 (done)" in text:
            return tool("finish", answer=f"Computed from the data.\n\nAnswer: {last_result(text)}", summary=q.id)
        return tool(plan[0]["tool"], **plan[0]["input"])

    def executor(body, text, n):
        if len(body["messages"]) == 1 and run:
            return text_and_tool(run[0]["text"], "run_python", **run[0]["input"])
        return tool("finish_step", status="done", result=last_stdout(body)[:2000] or "done")

    return AgentResponder({"planner": planner, "executor:n1": executor})


def last_result(text: str) -> str:
    tail = text.rsplit("n1 (done)", 1)[-1]
    return tail.strip().splitlines()[1][:200] if len(tail.strip().splitlines()) > 1 else "(see n1)"


def measure(quick: bool = False, n: int | None = None) -> Section:
    from gitops_agent.core.state import Budget
    from gitops_agent.eval.run import EvalConfig, Runner
    from gitops_agent.eval.suite import load_suite
    from gitops_agent.settings.config import AgentConfig
    from tests.fakes.anthropic_server import FakeAnthropic

    t0 = time.perf_counter()
    cfg = AgentConfig()
    cfg.sandbox.require_isolation = False  # bubblewrap where it works, else the plain subprocess
    planner, executor = cfg.models.planner, cfg.models.executor
    suite = load_suite("dabench")
    questions = suite.questions[: n or (6 if quick else len(suite.questions))]
    per_q: list[dict] = []
    calls: dict[str, list[float]] = {"planner": [], "executor": []}
    import os

    old = {k: os.environ.get(k) for k in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")}
    with FakeAnthropic(api_key=KEY, responder=None) as llm:
        os.environ.update(ANTHROPIC_BASE_URL=llm.url, ANTHROPIC_API_KEY=KEY)
        try:
            for q in questions:
                llm.responder = responder(q)
                seen = len(llm.usage_log)
                run = Runner(suite, config=cfg, budget=Budget()).run(
                    [EvalConfig(planner=planner, executor=executor, label="default")], workers=1, only=[q.id]
                )
                r = run.results[0]
                per_q.append({"id": q.id, "cost": r.cost_usd, "passed": r.passed, "tokens": r.tokens, "error": r.error})
                from gitops_agent.core.state import Usage
                from gitops_agent.models.pricing import price_of

                for u in llm.usage_log[seen:]:
                    usage = Usage(
                        input_tokens=u.get("input_tokens", 0),
                        output_tokens=u.get("output_tokens", 0),
                        cache_read_tokens=u.get("cache_read_input_tokens", 0),
                        cache_write_tokens=u.get("cache_creation_input_tokens", 0),
                    )
                    role = "planner" if u["model"] == planner.split(":", 1)[1] else "executor"
                    calls[role].append(price_of(u["model"], usage))
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    costs = sorted(x["cost"] for x in per_q)
    sec = Section()
    mean, median = statistics.mean(costs), statistics.median(costs)
    p90 = costs[min(len(costs) - 1, int(round(0.9 * (len(costs) - 1))))]
    ok = sum(x["passed"] for x in per_q)
    note = (
        f"estimate: {len(per_q)} dabench questions answered in the fewest turns ({ok} right); "
        f"{planner} plans, {executor} runs code"
    )
    sec.rows.append(
        Row("P10 cost of a question, default models (first-try answer)", f"median ${median:.4f} · p90 ${p90:.4f}", note=note)
    )
    for role, xs in calls.items():
        if xs:
            sec.rows.append(
                Row(
                    f"P10 one {role} call, default models",
                    f"mean ${statistics.mean(xs):.4f} · max ${max(xs):.4f}",
                    note=f"{len(xs)} calls",
                )
            )
    sec.details = [
        "",
        f"**P10 question cost** (`python bench/question_cost.py`): mean ${mean:.4f}, median ${median:.4f}, "
        f"max ${costs[-1]:.4f} over {len(per_q)} questions; the default task budget is ${Budget().max_usd:.2f}.",
    ]
    bad = [x for x in per_q if x["error"]]
    if bad:
        sec.details.append(f"- {len(bad)} question(s) failed to run: {bad[0]['id']}: {bad[0]['error'][:200]}")
    sec.seconds = time.perf_counter() - t0
    return sec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the first 6 questions only")
    ap.add_argument("--json", action="store_true", help="the rows as JSON")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory():
        sec = measure(a.quick)
    if a.json:
        print(json.dumps([r.__dict__ for r in sec.rows], indent=1))
        return 0
    return print_section(sec)


if __name__ == "__main__":
    sys.exit(main())
