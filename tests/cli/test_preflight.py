"""Infrastructure failures (no endpoint, a refused key, no such model) are found by a pre-flight
before any branch is made, and a provider failure during a task never becomes an experience."""

from __future__ import annotations

import socket

from tests.fakes.agent_responder import tool
from tests.fakes.anthropic_server import FakeAnthropic, Fault
from tests.helpers import KEY, git, make_repo, run_cli


def _run(repo, url, *args, env=None):
    p = run_cli(repo, url, *args, extra_env=env)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def _branches(repo):
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_an_unreachable_endpoint_fails_before_intake(tmp_path):
    repo = make_repo(tmp_path)
    url = f"http://127.0.0.1:{_closed_port()}"
    code, _, err = _run(repo, url, "--model", "anthropic:claude-haiku-4-5", "How many numbers?")
    assert code == 1
    assert f"cannot reach the Anthropic API at {url}" in err and "ANTHROPIC_BASE_URL" in err
    assert _branches(repo) == ["main"], "no task branch, no memory branch"

    code, _, err = _run(repo, url, "--model", f"openai:qwen2.5@{url}/v1", "How many numbers?")
    assert code == 1 and "cannot reach the OpenAI-compatible API" in err and "is the server running" in err
    assert _branches(repo) == ["main"]


def test_a_refused_key_and_an_unknown_model_fail_before_intake(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(api_key="sk-ant-the-right-one", models={"claude-haiku-4-5"}) as srv:
        code, _, err = _run(repo, srv.url, "--model", "anthropic:claude-haiku-4-5", "How many numbers?")
        assert code == 1 and "refused the key" in err and "authentication_error" in err and "ANTHROPIC_API_KEY" in err
        assert srv.requests == [], "not one Messages call (no tokens spent)"
    with FakeAnthropic(api_key=KEY, models={"claude-haiku-4-5"}) as srv:
        code, _, err = _run(repo, srv.url, "--model", "anthropic:claude-haiku-4-9-nosuch", "How many numbers?")
        assert code == 1 and "has no model 'claude-haiku-4-9-nosuch'" in err and "--model" in err
        assert srv.requests == [] and len(srv.lookups) == 1
    assert _branches(repo) == ["main"]


def test_a_server_without_the_models_route_is_not_refused(tmp_path):
    """A stand-in that speaks only the Messages API: the pre-flight lets the run go on."""
    repo = make_repo(tmp_path)
    with FakeAnthropic(api_key=KEY, responses=["Ten numbers."]) as srv:
        srv.models_api = False
        code, _, err = _run(repo, srv.url, "--model", "anthropic:claude-haiku-4-5", "--max-steps", "1", "How many numbers?")
        assert srv.requests, err
    assert any(b.startswith("agent/task/") for b in _branches(repo))


def test_a_provider_failure_during_a_task_is_no_experience(tmp_path):
    repo = make_repo(tmp_path)
    # a first task that really ends (the planner answers at once): an experience
    with FakeAnthropic(api_key=KEY, responses=[tool("finish", answer="10 numbers", summary="ten")]) as srv:
        code, _, err = _run(repo, srv.url, "--model", "anthropic:claude-haiku-4-5", "How many numbers?")
    assert code == 0, err
    before = git(repo, "ls-tree", "-r", "--name-only", "agent/memory").split()
    assert any("how-many" in f for f in before), "a task that ended is an experience"
    # the key is revoked between the pre-flight and the first call (a 401 on the Messages API)
    with FakeAnthropic(api_key=KEY, faults=[Fault(status=401, message="invalid x-api-key", times=None)]) as srv:
        code, _, err = _run(repo, srv.url, "--model", "anthropic:claude-haiku-4-5", "What is the largest number?")
    assert code == 1 and "authentication_error" in err
    task = next(b for b in _branches(repo) if b.startswith("agent/task/") and "largest" in b)
    assert "model error" in git(repo, "show", f"{task}:.agent/tasks/{task.removeprefix('agent/task/')}/report.md")
    after = git(repo, "ls-tree", "-r", "--name-only", "agent/memory").split() if "agent/memory" in _branches(repo) else []
    assert after == before and not any("largest" in f for f in after)


def test_the_planner_asks_no_more_output_than_the_model_allows(tmp_path):
    """claude-3-haiku takes at most 4,096 output tokens; the planner's default is 8,192."""
    repo = make_repo(tmp_path)
    with FakeAnthropic(api_key=KEY, responses=[tool("finish", answer="10 numbers", summary="ten")]) as srv:
        code, _, err = _run(repo, srv.url, "--model", "anthropic:claude-3-haiku-20240307", "How many numbers?")
        assert code == 0, err
        assert [r.body["max_tokens"] for r in srv.requests] == [4096]
