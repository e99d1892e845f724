"""Faults the agent lives among: processes killed with -9 at the worst moments, model APIs that
are overloaded, rate limited, out of money, slow, or answer garbage. Each test checks what the
user relies on: nothing finished is lost or done twice, and a task that cannot go on ends with
its reason recorded and reported."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from gitops_agent.app.local import make_runtime, result_of, run_question
from gitops_agent.core.errors import FatalModelError, ModelError
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.core.state import Budget
from gitops_agent.models.anthropic_model import AnthropicModel
from gitops_agent.models.retry import RetryPolicy, query_with_retry, retry_after_of
from gitops_agent.observe.progress import RecordingReporter
from gitops_agent.settings.config import AgentConfig
from gitops_agent.steps.engine import Engine
from tests.fakes.agent_responder import AgentResponder, last_stdout, tool
from tests.fakes.anthropic_server import FakeAnthropic, Fault
from tests.reliability.rhelpers import (
    BACKENDS,
    BEST,
    KEY,
    cli,
    commits,
    git,
    kill9,
    make_repo,
    one_node_responder,
    processes_under,
    task_branch,
    wait_for,
    write_config,
)

SPEC = "anthropic:claude-haiku-4-5"
QUESTION = "What is the sum of numbers.txt?"
SUM_CODE = "print('SUM=%d' % sum(int(x) for x in open('numbers.txt').read().split()))"


def has_result(body: dict) -> bool:
    return any(
        b.get("type") == "tool_result" for m in body["messages"] if isinstance(m.get("content"), list) for b in m["content"]
    )


def sum_node(body, text, n):
    """Stateless: run the code, then report what it printed."""
    if not has_result(body):
        return tool("run_python", code=SUM_CODE)
    return tool("finish_step", status="done", result=last_stdout(body))


def executor_commits(repo: Path, ref: str, node: str = "n1") -> list[dict]:
    return [
        c for c in commits(repo, ref) if c["trailers"].get("Agent-Role") == "executor" and c["trailers"].get("Agent-Node") == node
    ]


# ---------------------------------------------------------------------------------------------
# kill -9


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_during_a_sandbox_run_leaves_no_process_and_resume_finishes(tmp_path, backend):
    repo = make_repo(tmp_path)
    cfg = write_config(tmp_path / "cfg.yml", f"sandbox: {{backend: {backend}, timeout_s: 120}}\n")
    loop = "import os, time\nopen('started.txt', 'w').write(str(os.getpid()))\nwhile True:\n    time.sleep(0.05)\n"
    state = {"resumed": False}

    def n1(body, text, n):
        if not state["resumed"]:
            return tool("run_python", code=loop)  # the first run hangs in the sandbox until killed
        return sum_node(body, text, n)

    responder = one_node_responder(n1)
    with FakeAnthropic(api_key=KEY, responder=responder, min_cache_tokens=0) as srv:
        p = cli(repo, srv.url, "--config", str(cfg), "--model", SPEC, QUESTION)
        wts = repo / ".git" / "gitops-agent" / "checkouts"
        wait_for(lambda: list(wts.glob("*/started.txt")), 60, "the model's code to start in the sandbox")
        assert processes_under(repo), "the sandboxed process should be running"
        kill9(p)  # kill -9 the agent while the model's code runs
        # the sandbox dies with the agent: bubblewrap's PID namespace (--die-with-parent), the
        # subprocess backend's PR_SET_PDEATHSIG
        wait_for(lambda: not processes_under(repo), 15, "the sandboxed processes to die with the agent")
        branch = task_branch(repo)
        assert not executor_commits(repo, branch)

        state["resumed"] = True
        r = cli(repo, srv.url, "--config", str(cfg), "--resume", branch.removeprefix("agent/task/"))
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
    assert "SUM=55" in out
    assert len(executor_commits(repo, branch)) == 1  # the interrupted step was run once more, committed once
    assert list((repo / ".git" / "gitops-agent" / "checkouts").iterdir()) == []  # the killed run's checkout is gone


HOOK = """#!/bin/sh
# Test gate: hold the push of an executor step (so the test can kill -9 the pusher there).
[ -f "{gate}" ] || exit 0
while read old new ref; do
  if git log -1 --format=%B "$new" | grep -q '^Agent-Role: executor'; then
    touch "{reached}"
    sleep 60
  fi
done
exit 0
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "hook,landed", [("pre-receive", False), ("post-receive", True)], ids=["before-push-lands", "after-push-lands"]
)
def test_kill_9_between_commit_and_push_never_duplicates_a_step(tmp_path, hook, landed):
    """Remote mode (`--push`): the executor's commit exists in the local clone; the agent is killed
    while pushing it -- before the remote took it (pre-receive), or after it did but before the
    agent heard back (post-receive). Resuming runs the step again only if the remote lacks it,
    and the remote ends with exactly one commit for it either way."""
    repo = make_repo(tmp_path)
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    gate, reached = tmp_path / "gate", tmp_path / "reached"
    gate.write_text("armed")
    h = bare / "hooks" / hook
    h.write_text(HOOK.format(gate=gate, reached=reached))
    h.chmod(0o755)
    cfg = write_config(tmp_path / "cfg.yml", f"sandbox: {{backend: {BEST}}}\n")

    tmp = tmp_path / "tmp"  # the agent's own temp directory: what a kill -9 leaves in it is seen
    tmp.mkdir()
    responder = one_node_responder(sum_node)
    with FakeAnthropic(api_key=KEY, responder=responder, min_cache_tokens=0) as srv:
        env = {"TMPDIR": str(tmp)}
        p = cli(repo, srv.url, "--config", str(cfg), "--push", "origin", "--model", SPEC, QUESTION, extra_env=env)
        wait_for(reached.exists, 60, f"the executor's push to reach the {hook} hook")
        kill9(p)
        gate.unlink()
        refs = git(bare, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split()
        assert len(refs) == 1
        branch = refs[0]
        assert len(executor_commits(bare, branch)) == (1 if landed else 0)
        calls_before = responder.calls.get("executor:n1", 0)

        tid = branch.removeprefix("agent/task/")
        r = cli(repo, srv.url, "--config", str(cfg), "--push", "origin", "--resume", tid, extra_env=env)
        out, err = r.communicate(timeout=120)
        assert r.returncode == 0, err
    assert "SUM=55" in out
    assert len(executor_commits(bare, branch)) == 1  # never twice
    # the killed commit's scratch was never in the temp directory, and the next commit removed it
    assert sorted(x.name for x in tmp.iterdir()) == []
    assert sorted(x.name for x in (repo / ".git" / "gitops-agent" / "tmp").iterdir()) == []
    if landed:
        assert responder.calls["executor:n1"] == calls_before  # the finished step was not asked again
    else:
        assert responder.calls["executor:n1"] > calls_before  # the step that never landed ran again
    roles = [c["trailers"].get("Agent-Role") for c in commits(bare, branch)]
    assert roles[0] == "finish" and roles.count("finish") == 1


# ---------------------------------------------------------------------------------------------
# model API faults, through the real SDK against the local Messages API server


def run_inproc(
    repo: Path,
    srv: FakeAnthropic,
    *,
    max_retries: int = 4,
    timeout: float = 30,
    retry: RetryPolicy | None = None,
    budget: Budget | None = None,
):
    cfg = AgentConfig()
    cfg.sandbox.backend = "subprocess"  # fast; the sandbox has its own tests
    cfg.model_retry = retry or RetryPolicy(backoff_s=0.01)
    model = AnthropicModel("claude-haiku-4-5", api_key=KEY, base_url=srv.url, max_retries=max_retries, timeout=timeout)
    rep = RecordingReporter()
    rt = make_runtime(repo, config=cfg, reporter=rep, models={SPEC: model})
    res = run_question(rt, QUESTION, planner_model=SPEC, executor_model=SPEC, budget=budget)
    return res, rt, rep


def messages_requests(srv: FakeAnthropic) -> list:
    return [r for r in srv.requests if r.path.startswith("/v1/messages")]


def test_overloaded_529_three_times_then_success(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(
        api_key=KEY, responder=one_node_responder(sum_node), min_cache_tokens=0, faults=[Fault(status=529, times=3)]
    ) as srv:
        res, rt, rep = run_inproc(repo, srv)
        reqs = messages_requests(srv)
    assert res.outcome == "done" and "SUM=55" in res.answer
    # the SDK retried the first call three times (x-stainless-retry-count 0..3), nobody else noticed
    assert [int(r.headers["x-stainless-retry-count"]) for r in reqs[:4]] == [0, 1, 2, 3]
    assert not [e for k, e in rep.events if k == "error"]


def test_overload_outlasting_the_sdk_retries_is_retried_by_the_runtime(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(
        api_key=KEY, responder=one_node_responder(sum_node), min_cache_tokens=0, faults=[Fault(status=529, times=5)]
    ) as srv:
        res, rt, rep = run_inproc(repo, srv, max_retries=1, retry=RetryPolicy(attempts=2, backoff_s=0.01))
    assert res.outcome == "done" and "SUM=55" in res.answer
    retries = [e["error"] for k, e in rep.events if k == "error" and e.get("step") == "model"]
    assert len(retries) == 2 and all("529 overloaded_error" in r and "retry" in r for r in retries)


def test_429_retry_after_is_honoured_by_the_sdk_and_by_the_runtime(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(
        api_key=KEY,
        responder=one_node_responder(sum_node),
        min_cache_tokens=0,
        faults=[Fault(status=429, retry_after=1), Fault(status=429, retry_after=1)],
    ) as srv:
        # max_retries=1: the SDK waits out the first 429; the second one is the runtime's to wait out
        res, rt, rep = run_inproc(repo, srv, max_retries=1, retry=RetryPolicy(attempts=2, backoff_s=30))
        reqs = messages_requests(srv)
    assert res.outcome == "done"
    gaps = [b.time - a.time for a, b in zip(reqs[:3], reqs[1:3])]
    assert gaps[0] >= 0.9 and gaps[1] >= 0.9  # each waited the asked second (lower bounds only)
    assert gaps[1] < 25  # and the runtime took retry-after, not its own 30 s back-off
    assert [e for k, e in rep.events if k == "error" and e.get("step") == "model"]


def test_a_rate_limit_asking_for_longer_than_allowed_ends_the_task_reported(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(
        api_key=KEY,
        responder=one_node_responder(sum_node),
        min_cache_tokens=0,
        faults=[Fault(status=429, retry_after=3600, times=None)],
    ) as srv:
        t0 = time.monotonic()
        res, rt, rep = run_inproc(repo, srv, max_retries=0, retry=RetryPolicy(attempts=3, max_wait_s=60))
        elapsed = time.monotonic() - t0
    assert res.outcome == "error"
    assert "asks to wait 3600 s" in (res.reason or "") and "Outcome: error" in res.report
    assert elapsed < 600  # did not sit out the hour (a generous bound: correctness, not speed)


def test_spend_limit_429_in_the_planner_ends_the_task_cleanly_without_retries(tmp_path):
    repo = make_repo(tmp_path)
    fault = Fault(status=429, message="You have reached your specified workspace API spend limit.", times=None)
    with FakeAnthropic(api_key=KEY, responder=one_node_responder(sum_node), min_cache_tokens=0, faults=[fault]) as srv:
        res, rt, rep = run_inproc(repo, srv, max_retries=2, retry=RetryPolicy(attempts=3, backoff_s=0.01))
        n_requests = len(messages_requests(srv))
    assert n_requests == 3  # the SDK's own attempts (1 + max_retries); the runtime never retries a fatal error
    assert res.outcome == "error" and "spend limit" in (res.reason or "")
    snap = load_snapshot(rt.git, res.task_id)
    assert [s.role for s in snap.steps] == ["planner", "finish"]
    assert "spend limit" in snap.steps[0].error and "spend limit" in res.report


def test_spend_limit_in_an_executor_finishes_the_task_with_the_reason(tmp_path):
    repo = make_repo(tmp_path)
    fault = Fault(status=429, message="This request would exceed your organization's spend limit.", times=None)

    def n1(body, text, n):
        srv.fail(fault)  # from this answer on, every call hits the spend limit
        return tool("run_python", code=SUM_CODE)

    with FakeAnthropic(api_key=KEY, responder=one_node_responder(n1), min_cache_tokens=0) as srv:
        res, rt, rep = run_inproc(repo, srv, max_retries=0)
    assert res.outcome == "error"
    snap = load_snapshot(rt.git, res.task_id)
    rec = snap.latest_step_for("n1")
    assert rec.status == "failed" and "not retryable" in rec.error and "spend limit" in rec.error
    assert snap.steps[-1].role == "finish" and "spend limit" in (snap.steps[-1].error or "")
    assert "spend limit" in res.report


def test_an_executor_model_that_does_not_exist_ends_the_task_without_asking_the_planner_again(tmp_path):
    """A fatal error of the executor's model (404: no such model; the planner's model is fine)
    ends the task with that error: the planner is not asked to carry on with a model that can
    never answer."""
    repo = make_repo(tmp_path)
    with FakeAnthropic(
        api_key=KEY, responder=one_node_responder(sum_node), min_cache_tokens=0, models=["claude-haiku-4-5"]
    ) as srv:
        cfg = AgentConfig()
        cfg.sandbox.backend = "subprocess"
        cfg.model_retry = RetryPolicy(backoff_s=0.01)
        planner = AnthropicModel("claude-haiku-4-5", api_key=KEY, base_url=srv.url, max_retries=0)
        executor = AnthropicModel("claude-haiku-9-9", api_key=KEY, base_url=srv.url, max_retries=0)
        rt = make_runtime(
            repo, config=cfg, reporter=RecordingReporter(), models={SPEC: planner, "anthropic:claude-haiku-9-9": executor}
        )
        res = run_question(rt, QUESTION, planner_model=SPEC, executor_model="anthropic:claude-haiku-9-9")
        asked = [r.body["model"] for r in messages_requests(srv)]
    assert asked == ["claude-haiku-4-5", "claude-haiku-9-9"]  # one plan, one executor call, nothing after
    assert res.outcome == "error" and "404" in (res.reason or "") and "not retryable" in (res.reason or "")
    snap = load_snapshot(rt.git, res.task_id)
    assert [s.role for s in snap.steps] == ["planner", "executor", "finish"]
    rec = snap.latest_step_for("n1")
    assert rec.status == "failed" and "not_found_error" in rec.error
    assert "Outcome: error" in res.report and "not_found_error" in res.report


def test_a_model_call_that_times_out_is_retried_and_the_task_goes_on(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(api_key=KEY, responder=one_node_responder(sum_node), min_cache_tokens=0, faults=[Fault(delay=3)]) as srv:
        res, rt, rep = run_inproc(repo, srv, max_retries=0, timeout=0.5)
    assert res.outcome == "done" and "SUM=55" in res.answer
    assert any("no answer from" in e["error"] for k, e in rep.events if k == "error" and e.get("step") == "model")


def test_model_calls_that_keep_timing_out_end_the_task_reported(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(
        api_key=KEY, responder=one_node_responder(sum_node), min_cache_tokens=0, faults=[Fault(delay=1.5, times=None)]
    ) as srv:
        res, rt, rep = run_inproc(repo, srv, max_retries=0, timeout=0.3, retry=RetryPolicy(attempts=1, backoff_s=0.01))
    assert res.outcome == "error" and "no answer from" in (res.reason or "")
    assert "Outcome: error" in res.report


def test_retry_policy_unit():
    calls = []
    waits = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ModelError("overloaded", status=529, retry_after=None, retryable=True)
        return "ok"

    assert query_with_retry(flaky, RetryPolicy(attempts=2, backoff_s=1, max_wait_s=10), sleep=waits.append) == "ok"
    assert len(calls) == 3 and 0.8 <= waits[0] <= 1.2 and 1.6 <= waits[1] <= 2.4  # exponential back-off, jittered
    # fatal: never retried; not retryable (e.g. a scripted model out of answers): never retried
    for exc in (FatalModelError("spend limit", status=429), ModelError("no response left")):
        n = []
        with pytest.raises(type(exc)):
            query_with_retry(lambda: n.append(1) or (_ for _ in ()).throw(exc), RetryPolicy(attempts=5), sleep=waits.append)
        assert len(n) == 1
    # retry-after wins over the back-off; beyond max_wait it is not waited for
    waits.clear()
    seq = iter([ModelError("429", retry_after=7.0, retryable=True)])

    def once():
        for e in seq:
            raise e
        return "ok"

    assert query_with_retry(
        once, RetryPolicy(attempts=1, backoff_s=100, max_wait_s=60), sleep=waits.append
    ) == "ok" and waits == [7.0]
    with pytest.raises(ModelError, match="asks to wait 999 s"):
        query_with_retry(
            lambda: (_ for _ in ()).throw(ModelError("429", retry_after=999, retryable=True)),
            RetryPolicy(attempts=3, max_wait_s=60),
            sleep=waits.append,
        )
    assert retry_after_of({"retry-after-ms": "1500"}) == 1.5 and retry_after_of({"retry-after": "3"}) == 3.0
    assert retry_after_of({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0 and retry_after_of({}) is None


def test_openai_compatible_errors_carry_retry_after_and_are_retried_by_the_runtime():
    from gitops_agent.core.messages import Message, ModelRequest
    from gitops_agent.models.openai_model import OpenAIModel
    from tests.fakes.openai_server import FakeOpenAI

    with FakeOpenAI(faults=[Fault(status=429, retry_after=2), Fault(status=503)]) as srv:
        m = OpenAIModel("gpt-4o-mini", api_key="sk-test", base_url=srv.url + "/v1", max_retries=0)
        req = ModelRequest(system="s", messages=[Message.user("hi")])
        with pytest.raises(ModelError) as e:
            m.query(req)
        assert e.value.retryable and e.value.status == 429 and e.value.retry_after == 2.0
        waits: list[float] = []
        resp = query_with_retry(lambda: m.query(req), RetryPolicy(attempts=2, backoff_s=0.01), sleep=waits.append)
        assert resp.content and len(waits) == 1  # the 503, then an answer
    with FakeOpenAI(
        faults=[Fault(status=429, message="You exceeded your current quota", error_code="insufficient_quota")]
    ) as srv:
        with pytest.raises(FatalModelError) as e:
            OpenAIModel("gpt-4o-mini", api_key="sk-test", base_url=srv.url + "/v1", max_retries=0).query(req)
        assert not e.value.retryable


# ---------------------------------------------------------------------------------------------
# truncated and malformed model output


def test_truncated_and_malformed_output_is_sent_back_and_corrected(tmp_path):
    repo = make_repo(tmp_path)
    good_plan = tool("update_plan", nodes=[{"id": "n1", "title": "Sum", "goal": "Sum the numbers in numbers.txt."}])
    planner_script = [
        {"content": [{"type": "text", "text": "I think the plan should be: first we"}], "stop_reason": "max_tokens"},  # truncated
        {
            "content": [{"type": "tool_use", "name": "update_plan", "input": '{"nodes": [{"id": "n1", "title": '}],
            "stop_reason": "max_tokens",
        },  # bad JSON
        tool(
            "update_plan",
            nodes=[
                {"id": "a", "title": "A", "goal": "a", "depends_on": ["b"]},
                {"id": "b", "title": "B", "goal": "b", "depends_on": ["a"]},
            ],
        ),  # a cycle
        good_plan,  # (the planner gets max_corrections = 3 corrections per step)
        tool("delete_repository", why="clean up"),  # unknown tool, in the next planner step
    ]
    executor_script = [
        tool("rm_rf", path="/"),  # unknown tool
        {"content": [{"type": "tool_use", "name": "run_python", "input": "print(1"}], "stop_reason": "max_tokens"},  # bad JSON
        tool("run_python"),  # missing code
        tool("run_python", code=SUM_CODE),
    ]

    def planner(body, text, n):
        if n < len(planner_script):
            return planner_script[n]
        return tool("finish", answer="Result: " + re.search(r"SUM=\d+", text).group(0), summary="sum")

    def n1(body, text, n):
        return executor_script[n] if n < len(executor_script) else tool("finish_step", status="done", result=last_stdout(body))

    cfg_retry = RetryPolicy(backoff_s=0.01)
    with FakeAnthropic(api_key=KEY, responder=AgentResponder({"planner": planner, "executor:n1": n1}), min_cache_tokens=0) as srv:
        res, rt, rep = run_inproc(repo, srv, retry=cfg_retry)
        bodies = [r.body for r in messages_requests(srv)]
    assert res.outcome == "done" and "SUM=55" in res.answer
    sent_back = json.dumps(bodies)
    for needle in (
        "exactly one tool call",
        "not valid JSON",
        "unknown tool `delete_repository`",
        "dependency cycle",
        "unknown tool `rm_rf`",
        "needs a non-empty `code`",
    ):
        assert needle in sent_back, needle  # each problem went back to the model, worded for it to fix


def test_output_that_stays_malformed_ends_the_task_cleanly(tmp_path):
    repo = make_repo(tmp_path)
    garbage = {"content": [{"type": "tool_use", "name": "update_plan", "input": "{{{"}], "stop_reason": "max_tokens"}
    with FakeAnthropic(api_key=KEY, responder=AgentResponder({"planner": lambda b, t, n: garbage}), min_cache_tokens=0) as srv:
        res, rt, rep = run_inproc(repo, srv)
    assert res.outcome == "error" and "not valid JSON" in (res.reason or "")
    snap = load_snapshot(rt.git, res.task_id)
    assert [s.role for s in snap.steps] == ["planner", "finish"] and snap.steps[0].status == "failed"


# ---------------------------------------------------------------------------------------------
# duplicate dispatch and dispatch loops (GitHub mode: see test_inputs for the flow harness)


def test_a_dispatch_loop_ends_at_the_hop_limit(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(api_key=KEY, responder=one_node_responder(sum_node), min_cache_tokens=0) as srv:
        res, rt, rep = run_inproc(repo, srv, budget=Budget(max_hops=3))
        # replaying a plan job beyond the hop limit (as a loop of dispatches would) ends the task
        task = "loop-task"
        job = Engine(rt).start(
            QUESTION,
            base_ref="main",
            base_sha=git(repo, "rev-parse", "main").strip(),
            models=load_snapshot(rt.git, res.task_id).task.models,
            budget=Budget(max_hops=3),
            task_id=task,
        )
        nxt = Engine(rt).handle(job.model_copy(update={"hop": 4}))
    assert [j.step for j in nxt] == ["finish"] and "hops" in (nxt[0].reason or "")
    Engine(rt).handle(nxt[0])
    r = result_of(rt, task)
    assert r.outcome == "budget" and "hops" in (r.reason or "") and "budget exceeded: hops 4 of 3" in r.report
