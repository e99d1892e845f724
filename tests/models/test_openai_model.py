"""OpenAIModel with the real `openai` SDK against a real local fake of chat.completions."""

from __future__ import annotations

import json
import time

import openai
import pytest

from gitops_agent.core.errors import FatalModelError, ModelError
from gitops_agent.core.messages import Message, ModelRequest, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
from gitops_agent.core.seams import Model
from gitops_agent.core.state import Usage
from gitops_agent.models.openai_model import OpenAIModel, parse_arguments
from gitops_agent.models.pricing import price_of
from tests.fakes.openai_server import FakeOpenAI, Fault

KEY = "sk-openai-test"
MODEL = "gpt-4o-mini"

RUN_PYTHON = ToolSpec(
    name="run_python",
    description="Run Python code in the sandbox.",
    input_schema={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_ADMIN_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    with FakeOpenAI(api_key=KEY, min_cache_tokens=0) as srv:
        yield srv


def make(server, **kw) -> OpenAIModel:
    kw.setdefault("max_retries", 4)
    kw.setdefault("timeout", 10)
    return OpenAIModel(MODEL, api_key=KEY, base_url=server.url + "/v1", **kw)


def request(messages, **kw) -> ModelRequest:
    kw.setdefault("system", "You are a careful data analyst.")
    kw.setdefault("tools", [RUN_PYTHON])
    return ModelRequest(messages=messages, **kw)


def tool_then_text(body: dict) -> dict:
    last = body["messages"][-1]
    if last["role"] == "tool":
        return {"content": f"The tool said: {last['content']}"}
    return {"content": "I will compute it.", "tool_calls": [{"name": "run_python", "arguments": {"code": "print(6 * 7)"}}]}


def test_is_a_model(server):
    assert isinstance(make(server), Model)


def test_tool_use_round_trip(server):
    server.responder = tool_then_text
    m = make(server)
    msgs = [Message.user("What is 6 times 7?")]
    r1 = m.query(request(msgs))
    assert r1.stop_reason == "tool_use"
    assert r1.text == "I will compute it."
    (use,) = r1.tool_uses
    assert use.name == "run_python" and use.input == {"code": "print(6 * 7)"}
    assert r1.model == MODEL and r1.usage.input_tokens > 0 and r1.usage.output_tokens > 0

    msgs += [
        Message(role="assistant", content=r1.content),
        Message(role="user", content=[ToolResultBlock(tool_use_id=use.id, content="42")]),
    ]
    r2 = m.query(request(msgs))
    assert r2.stop_reason == "end_turn"
    assert r2.text == "The tool said: 42"

    sent = server.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "You are a careful data analyst."}
    assert sent["messages"][2]["role"] == "assistant"
    assert sent["messages"][2]["tool_calls"] == [
        {"id": use.id, "type": "function", "function": {"name": "run_python", "arguments": json.dumps({"code": "print(6 * 7)"})}}
    ]
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": use.id, "content": "42"}
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "run_python",
                "description": "Run Python code in the sandbox.",
                "parameters": RUN_PYTHON.input_schema,
            },
        }
    ]
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_tool_results_come_before_user_text_and_errors_are_marked(server):
    msgs = [
        Message.user("go"),
        Message(
            role="assistant",
            content=[
                ToolUseBlock(id="c1", name="run_python", input={"code": "x"}),
                ToolUseBlock(id="c2", name="run_python", input={"code": "y"}),
            ],
        ),
        Message(
            role="user",
            content=[
                TextBlock(text="also, hurry"),
                ToolResultBlock(tool_use_id="c1", content="NameError: x", is_error=True),
                ToolResultBlock(tool_use_id="c2", content="2"),
            ],
        ),
    ]
    make(server).query(request(msgs))
    sent = server.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert sent[2]["content"] is None
    assert sent[3]["content"] == "Error: NameError: x"
    assert sent[5]["content"] == "also, hurry"


def test_bad_tool_json_is_kept_raw_and_sent_back(server):
    server.push({"tool_calls": [{"id": "call_bad", "name": "run_python", "arguments": '{"code": "print(1)'}]})
    m = make(server)
    r = m.query(request([Message.user("go")]))
    assert r.tool_uses[0].input == {"_raw": '{"code": "print(1)'}
    msgs = [
        Message.user("go"),
        Message(role="assistant", content=r.content),
        Message(role="user", content=[ToolResultBlock(tool_use_id="call_bad", content="bad JSON", is_error=True)]),
    ]
    m.query(request(msgs))
    assert server.requests[-1].body["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"code": "print(1)'


def test_parse_arguments():
    assert parse_arguments('{"a": 1}') == {"a": 1}
    assert parse_arguments("") == {}
    assert parse_arguments(None) == {}
    assert parse_arguments("[1, 2]") == {"_raw": "[1, 2]"}
    assert parse_arguments("{nope") == {"_raw": "{nope"}


def test_finish_reason_length(server):
    server.push({"content": "truncated", "finish_reason": "length"})
    assert make(server).query(request([Message.user("go")])).stop_reason == "max_tokens"


def test_cached_tokens_and_usage_sum(server):
    m = make(server)
    total = Usage()
    msgs = [Message.user("Long stable context " * 50)]
    r1 = m.query(request(msgs))
    assert r1.usage.cache_read_tokens == 0
    total += r1.usage
    msgs += [Message(role="assistant", content=r1.content), Message.user("and now?")]
    r2 = m.query(request(msgs))
    assert r2.usage.cache_read_tokens > 0
    total += r2.usage
    log = server.usage_log
    assert total.input_tokens == sum(u["prompt_tokens"] - u["cached_tokens"] for u in log)
    assert total.cache_read_tokens == sum(u["cached_tokens"] for u in log)
    assert total.output_tokens == sum(u["completion_tokens"] for u in log)
    expected = (total.input_tokens * 0.15 + total.cache_read_tokens * 0.15 * 0.5 + total.output_tokens * 0.6) / 1e6
    assert price_of(MODEL, total) == expected


def test_env_is_honoured(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    r = OpenAIModel(MODEL).query(request([Message.user("hi")]))
    assert r.text == FakeOpenAI.DEFAULT_TEXT
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_local_endpoint_needs_no_key():
    with FakeOpenAI() as srv:
        r = OpenAIModel("qwen2.5-coder:7b", base_url=srv.url + "/v1").query(request([Message.user("hi")]))
        assert r.text == FakeOpenAI.DEFAULT_TEXT
        assert srv.requests[-1].headers["authorization"] == "Bearer not-needed"


def test_wrong_key_is_fatal(server):
    m = OpenAIModel(MODEL, api_key="sk-wrong", base_url=server.url + "/v1")
    with pytest.raises(FatalModelError, match="401"):
        m.query(request([Message.user("hi")]))
    assert len(server.requests) == 1


def test_bad_request_and_unknown_model_are_fatal(server):
    orphan = [Message.user("hi"), Message(role="user", content=[ToolResultBlock(tool_use_id="nope", content="x")])]
    with pytest.raises(FatalModelError, match="400"):
        make(server).query(request(orphan))
    with FakeOpenAI(models=["gpt-4.1-mini"]) as srv:
        with pytest.raises(FatalModelError, match="404"):
            OpenAIModel(MODEL, api_key="k", base_url=srv.url + "/v1").query(request([Message.user("hi")]))


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_faults_are_retried(server, status):
    server.fail(Fault(status=status, times=2))
    r = make(server).query(request([Message.user("hi")]))
    assert r.text == FakeOpenAI.DEFAULT_TEXT
    assert len(server.requests) == 3


def test_faults_after_retries_are_model_errors(server):
    server.fail(Fault(status=503, times=None))
    with pytest.raises(ModelError, match="503") as ei:
        make(server, max_retries=1).query(request([Message.user("hi")]))
    assert not isinstance(ei.value, FatalModelError)


def test_quota_is_fatal(server):
    server.fail(
        Fault(
            status=429,
            message="You exceeded your current quota, please check your plan and billing details.",
            error_code="insufficient_quota",
            times=None,
        )
    )
    with pytest.raises(FatalModelError, match="insufficient_quota"):
        make(server, max_retries=1).query(request([Message.user("hi")]))


def test_timeout_is_a_model_error(server):
    server.fail(Fault(delay=5))
    start = time.monotonic()
    with pytest.raises(ModelError, match="no answer from the OpenAI-compatible API at http") as ei:
        make(server, timeout=0.5, max_retries=0).query(request([Message.user("hi")]))
    assert not isinstance(ei.value, FatalModelError)
    assert time.monotonic() - start < 3


def test_fake_streams_like_the_api(server):
    server.push({"content": "hello there", "tool_calls": [{"id": "call_s", "name": "run_python", "arguments": {"code": "1"}}]})
    client = openai.OpenAI(api_key=KEY, base_url=server.url + "/v1", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    args = "".join(tc.function.arguments or "" for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or []))
    assert text == "hello there"
    assert json.loads(args) == {"code": "1"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


# -- the output limit: OpenAI's reasoning models refuse max_tokens ----------------------------


@pytest.mark.parametrize("name", ["o4-mini", "gpt-5-mini"])
def test_reasoning_models_get_max_completion_tokens(server, name):
    r = OpenAIModel(name, api_key=KEY, base_url=server.url + "/v1").query(request([Message.user("hi")], max_tokens=321))
    assert r.text == FakeOpenAI.DEFAULT_TEXT
    (body,) = [q.body for q in server.requests]
    assert body["max_completion_tokens"] == 321 and "max_tokens" not in body


def test_a_local_server_still_gets_max_tokens(server):
    make(server).query(request([Message.user("hi")], max_tokens=123))
    assert server.requests[0].body["max_tokens"] == 123 and "max_completion_tokens" not in server.requests[0].body


def test_a_server_that_asks_for_max_completion_tokens_gets_it_from_then_on(server):
    """A proxy in front of a reasoning model under another name: the 400 says which parameter."""
    server.max_tokens_refused = __import__("re").compile(r"^house-reasoner")
    m = OpenAIModel("house-reasoner", api_key=KEY, base_url=server.url + "/v1", max_retries=0)
    assert m.query(request([Message.user("hi")], max_tokens=200)).text == FakeOpenAI.DEFAULT_TEXT
    m.query(request([Message.user("again")], max_tokens=200))
    sent = [sorted(k for k in q.body if "max" in k) for q in server.requests]
    assert sent == [["max_tokens"], ["max_completion_tokens"], ["max_completion_tokens"]]


def test_llama_cpps_error_names_the_status_once_and_what_it_means(server):
    """llama.cpp's server answers {"error": {"code": 400, "type": "exceed_context_size_error", ...}}."""
    server.fail(
        Fault(
            status=400,
            message="request (8239 tokens) exceeds the available context size (8192 tokens)",
            error_type="exceed_context_size_error",
            error_code=400,
        )
    )
    with pytest.raises(FatalModelError) as ei:
        make(server).query(request([Message.user("hi")]))
    msg = str(ei.value)
    assert "OpenAI-compatible API 400 exceed_context_size_error: request (8239 tokens) exceeds" in msg and "400 400" not in msg
