"""AnthropicModel with the real `anthropic` SDK against a real local fake of the Messages API."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from gitops_agent.core.errors import FatalModelError, ModelError
from gitops_agent.core.messages import Message, ModelRequest, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
from gitops_agent.core.seams import Model
from gitops_agent.core.state import Usage
from gitops_agent.models.anthropic_model import AnthropicModel
from gitops_agent.models.pricing import price_of
from tests.fakes.anthropic_server import FakeAnthropic, Fault

KEY = "sk-ant-test"
MODEL = "claude-haiku-4-5"

RUN_PYTHON = ToolSpec(
    name="run_python",
    description="Run Python code in the sandbox.",
    input_schema={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)
FINISH = ToolSpec(
    name="finish_step",
    description="Finish this step.",
    input_schema={"type": "object", "properties": {"result": {"type": "string"}, "status": {"type": "string"}}},
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_IDENTITY_TOKEN",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
        "ANTHROPIC_CONFIG_DIR",
        "ANTHROPIC_FEDERATION_RULE_ID",
        "ANTHROPIC_ORGANIZATION_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    # no credentials profile on disk either
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))


@pytest.fixture
def server():
    with FakeAnthropic(api_key=KEY, min_cache_tokens=0) as srv:
        yield srv


def make(server, **kw) -> AnthropicModel:
    kw.setdefault("max_retries", 4)
    kw.setdefault("timeout", 10)
    return AnthropicModel(MODEL, api_key=KEY, base_url=server.url, **kw)


def request(messages, **kw) -> ModelRequest:
    kw.setdefault("system", "You are a careful data analyst.")
    kw.setdefault("tools", [RUN_PYTHON, FINISH])
    return ModelRequest(messages=messages, **kw)


def sent_key(rec) -> str | None:
    """The key a request carried: `x-api-key`, or a Bearer token (what SDK 2.x sends)."""
    auth = rec.headers.get("authorization", "")
    return rec.headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else None)


def post_raw(url: str, body: dict, headers: dict) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url + "/v1/messages", data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def tool_then_text(body: dict) -> dict:
    """Answer a tool_use first; once the tool result is there, a text that quotes it."""
    last = body["messages"][-1]
    content = last["content"] if isinstance(last["content"], list) else []
    results = [b for b in content if b.get("type") == "tool_result"]
    if results:
        return {"content": [{"type": "text", "text": f"The tool said: {results[0].get('content')}"}]}
    return {
        "content": [
            {"type": "text", "text": "I will compute it."},
            {"type": "tool_use", "name": "run_python", "input": {"code": "print(6 * 7)"}},
        ]
    }


# -- basics ---------------------------------------------------------------------------------


def test_is_a_model(server):
    m = make(server)
    assert isinstance(m, Model)
    assert m.name == MODEL


def test_tool_use_round_trip(server):
    server.responder = tool_then_text
    m = make(server)
    msgs = [Message.user("What is 6 times 7?")]
    r1 = m.query(request(msgs))
    assert r1.stop_reason == "tool_use"
    assert r1.text == "I will compute it."
    (use,) = r1.tool_uses
    assert use.name == "run_python" and use.input == {"code": "print(6 * 7)"}
    assert use.id.startswith("toolu_")
    assert r1.model == MODEL
    assert r1.latency_ms >= 0
    assert r1.usage.output_tokens > 0

    msgs += [
        Message(role="assistant", content=r1.content),
        Message(role="user", content=[ToolResultBlock(tool_use_id=use.id, content="42")]),
    ]
    r2 = m.query(request(msgs))
    assert r2.stop_reason == "end_turn"
    assert r2.text == "The tool said: 42"
    assert r2.tool_uses == []

    sent = server.requests[-1].body
    assert sent["messages"][1]["content"][1] == {
        "type": "tool_use",
        "id": use.id,
        "name": "run_python",
        "input": {"code": "print(6 * 7)"},
    }
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"
    assert sent["messages"][2]["content"][0]["tool_use_id"] == use.id
    assert sent["system"][0]["text"] == "You are a careful data analyst."
    assert [t["name"] for t in sent["tools"]] == ["run_python", "finish_step"]
    assert sent_key(server.requests[-1]) == KEY


def test_tool_result_error_flag_and_empty_text_dropped(server):
    m = make(server)
    msgs = [
        Message.user("go"),
        Message(
            role="assistant", content=[TextBlock(text=""), ToolUseBlock(id="toolu_1", name="run_python", input={"code": "x"})]
        ),
        Message(role="user", content=[ToolResultBlock(tool_use_id="toolu_1", content="NameError: x", is_error=True)]),
    ]
    m.query(request(msgs))
    sent = server.requests[-1].body["messages"]
    assert [b["type"] for b in sent[1]["content"]] == ["tool_use"]
    assert sent[2]["content"][0]["is_error"] is True


@pytest.mark.parametrize("stream", ["always", "never"])
def test_streaming_and_json_give_the_same_blocks(server, stream):
    answer = {
        "content": [
            {"type": "text", "text": "Running a longer piece of code now, please wait."},
            {
                "type": "tool_use",
                "id": "toolu_fixed",
                "name": "run_python",
                "input": {"code": "import pandas as pd\nprint(pd.read_csv('data.csv').describe())", "nested": {"a": [1, 2, 3]}},
            },
        ]
    }
    server.push(answer, answer)
    streamed = make(server, stream=stream).query(request([Message.user("describe data.csv")]))
    assert server.requests[-1].body.get("stream", False) is (stream == "always")
    plain = make(server, stream="never").query(request([Message.user("describe data.csv")]))
    assert streamed.content == plain.content
    assert streamed.stop_reason == plain.stop_reason == "tool_use"
    assert streamed.tool_uses[0].input["nested"] == {"a": [1, 2, 3]}
    assert streamed.usage.output_tokens == plain.usage.output_tokens


def test_stream_auto_depends_on_max_tokens(server):
    m = make(server, stream="auto")
    m.query(request([Message.user("hi")], max_tokens=1024))
    assert not server.requests[-1].body.get("stream")
    m.query(request([Message.user("hi")], max_tokens=8192))
    assert server.requests[-1].body.get("stream") is True
    r = m.query(request([Message.user("hi")], max_tokens=8192))
    assert r.text == FakeAnthropic.DEFAULT_TEXT


def test_streaming_sse_is_well_formed(server):
    server.push(
        {
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "tool_use", "id": "toolu_x", "name": "run_python", "input": {"code": "1"}},
            ]
        }
    )
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    req = urllib.request.Request(
        server.url + "/v1/messages",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = [line[len("event: ") :] for line in text.splitlines() if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "ping" in events and "message_delta" in events
    datas = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    partial = "".join(
        d["delta"]["partial_json"]
        for d in datas
        if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == {"code": "1"}
    assert sum(1 for d in datas if d["type"] == "content_block_delta" and d["delta"]["type"] == "input_json_delta") > 2


# -- prompt caching -------------------------------------------------------------------------


def test_cache_control_on_tools_system_and_marked_messages(server):
    m = make(server)
    msgs = [
        Message.user("The plan: 1. load 2. describe", cache=True),
        Message(role="assistant", content=[TextBlock(text="ok")]),
        Message.user("now do step 1"),
    ]
    r1 = m.query(request(msgs))
    sent = server.requests[-1].body
    assert not any("cache_control" in t for t in sent["tools"])  # the system breakpoint caches the tools too
    assert sent["system"] == [{"type": "text", "text": "You are a careful data analyst.", "cache_control": {"type": "ephemeral"}}]
    assert sent["messages"][0]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in b for mm in sent["messages"][1:] for b in mm["content"])
    assert r1.usage.cache_write_tokens > 0 and r1.usage.cache_read_tokens == 0

    r2 = m.query(request(msgs[:2] + [Message.user("now do step 2")]))
    assert r2.usage.cache_read_tokens == r1.usage.cache_write_tokens
    assert r2.usage.cache_write_tokens == 0
    assert r2.usage.input_tokens > 0


def test_text_block_cache_flag(server):
    m = make(server, stream="never")
    msgs = [Message(role="user", content=[TextBlock(text="stable context", cache=True), TextBlock(text="changing part")])]
    m.query(request(msgs, cache_system=False))
    sent = server.requests[-1].body
    assert "cache_control" not in sent["tools"][-1] and "cache_control" not in sent["system"][0]
    assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in sent["messages"][0]["content"][1]


def test_at_most_four_breakpoints_oldest_dropped(server):
    m = make(server)
    msgs = []
    for i in range(6):
        msgs.append(Message.user(f"question {i}", cache=True))
        msgs.append(Message(role="assistant", content=[TextBlock(text=f"answer {i}")], cache=True))
    msgs.append(Message.user("last", cache=True))
    m.query(request(msgs))  # the fake rejects more than 4 breakpoints, like the API
    sent = server.requests[-1].body
    marked = [i for i, mm in enumerate(sent["messages"]) if any("cache_control" in b for b in mm["content"])]
    assert marked == [10, 11, 12]  # the newest three; the system block holds the fourth
    assert sum("cache_control" in t for t in sent["tools"]) + sum("cache_control" in b for b in sent["system"]) == 1


def test_cache_minimum_tokens():
    with FakeAnthropic(api_key=KEY) as srv:  # default minimum: 1024 tokens
        m = make(srv)
        r = m.query(request([Message.user("short")]))
        assert r.usage.cache_write_tokens == 0 and r.usage.cache_read_tokens == 0
        big = request([Message.user("x")], system="You are an analyst. " * 400)
        r1, r2 = m.query(big), m.query(big)
        assert r1.usage.cache_write_tokens >= 1024 and r1.usage.cache_read_tokens == 0
        assert r2.usage.cache_read_tokens == r1.usage.cache_write_tokens


def test_usage_summed_equals_server_log_and_pricing(server):
    server.responder = tool_then_text
    m = make(server)
    total = Usage()
    msgs = [Message.user("What is 6 times 7?", cache=True)]
    for _ in range(3):
        r = m.query(request(msgs))
        total = total + r.usage
    r = m.query(
        request(
            msgs
            + [
                Message(role="assistant", content=r.content),
                Message(role="user", content=[ToolResultBlock(tool_use_id=r.tool_uses[0].id, content="42")]),
            ]
        )
    )
    total = total + r.usage
    log = server.total_usage()
    assert total == Usage(
        input_tokens=log["input_tokens"],
        output_tokens=log["output_tokens"],
        cache_read_tokens=log["cache_read_input_tokens"],
        cache_write_tokens=log["cache_creation_input_tokens"],
    )
    assert total.cache_read_tokens > 0
    expected = (
        total.input_tokens * 1 + total.cache_write_tokens * 1 * 1.25 + total.cache_read_tokens * 1 * 0.1 + total.output_tokens * 5
    ) / 1e6
    assert price_of(r.model, total) == expected


# -- configuration ----------------------------------------------------------------------------


def test_env_base_url_and_key_are_honoured(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    m = AnthropicModel(MODEL)
    r = m.query(request([Message.user("hi")]))
    assert r.text == FakeAnthropic.DEFAULT_TEXT
    assert sent_key(server.requests[-1]) == KEY


def test_no_credentials_is_fatal(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    with pytest.raises(FatalModelError, match="ANTHROPIC_API_KEY"):
        AnthropicModel(MODEL, max_retries=0).query(request([Message.user("hi")]))


def test_bad_stream_option():
    with pytest.raises(ValueError):
        AnthropicModel(MODEL, api_key="k", stream="sometimes")  # type: ignore[arg-type]


# -- faults and errors ---------------------------------------------------------------------


def test_overloaded_three_times_then_success(server):
    server.fail(Fault(status=529, times=3))
    r = make(server, max_retries=4).query(request([Message.user("hi")]))
    assert r.text == FakeAnthropic.DEFAULT_TEXT
    assert len(server.requests) == 4
    assert [int(x.headers["x-stainless-retry-count"]) for x in server.requests] == [0, 1, 2, 3]


def test_rate_limit_with_retry_after_is_retried(server):
    server.fail(Fault(status=429, retry_after=1))
    start = time.monotonic()
    r = make(server).query(request([Message.user("hi")]))
    assert r.text == FakeAnthropic.DEFAULT_TEXT
    assert len(server.requests) == 2
    assert time.monotonic() - start >= 0.9


def test_an_overload_without_any_retry_header_is_retried(server):
    """The API may send a 529 with no retry-after at all: the SDK's own back-off, then success."""
    server.fail(Fault(status=529, retry_after_ms=None))
    r = make(server, max_retries=2).query(request([Message.user("hi")]))
    assert r.text == FakeAnthropic.DEFAULT_TEXT and len(server.requests) == 2
    server.fail(Fault(status=529, retry_after_ms=None, times=None))
    with pytest.raises(ModelError) as ei:
        make(server, max_retries=0).query(request([Message.user("hi")]))
    assert ei.value.retryable and ei.value.retry_after is None, "no header: the runtime picks its own wait"


def test_retry_after_in_whole_seconds_reaches_the_runtime(server):
    """`retry-after: 3` (seconds, as the API sends it) is what the second line of retries waits."""
    server.fail(Fault(status=429, retry_after=3, times=None))
    with pytest.raises(ModelError) as ei:
        make(server, max_retries=0).query(request([Message.user("hi")]))
    assert ei.value.retryable and ei.value.retry_after == 3.0


def test_overloaded_after_retries_is_a_model_error(server):
    server.fail(Fault(status=529, times=None))
    with pytest.raises(ModelError, match="529 overloaded_error") as ei:
        make(server, max_retries=2).query(request([Message.user("hi")]))
    assert not isinstance(ei.value, FatalModelError)
    assert len(server.requests) == 3


def test_server_error_is_a_model_error(server):
    server.fail(Fault(status=500, times=None))
    with pytest.raises(ModelError, match="500 api_error") as ei:
        make(server, max_retries=1).query(request([Message.user("hi")]))
    assert not isinstance(ei.value, FatalModelError)


def test_spend_limit_is_fatal(server):
    server.fail(Fault(status=429, message="You have reached your specified workspace API spend limit.", times=None))
    with pytest.raises(FatalModelError, match=r"429 rate_limit_error: .*spend limit"):
        make(server, max_retries=1).query(request([Message.user("hi")]))


def test_spend_limit_error_code_is_fatal(server):
    server.fail(Fault(status=429, message="Limit reached.", error_code="enforced_spend_limit_reached", times=None))
    with pytest.raises(FatalModelError):
        make(server, max_retries=0).query(request([Message.user("hi")]))


def test_wrong_key_is_fatal(server):
    m = AnthropicModel(MODEL, api_key="sk-wrong", base_url=server.url, max_retries=4)
    with pytest.raises(FatalModelError, match="401 authentication_error"):
        m.query(request([Message.user("hi")]))
    assert len(server.requests) == 1  # not retried


def test_unknown_model_is_fatal():
    with FakeAnthropic(api_key=KEY, models=["claude-sonnet-4-5"]) as srv:
        with pytest.raises(FatalModelError, match="404 not_found_error"):
            make(srv).query(request([Message.user("hi")]))


def test_bad_history_is_fatal(server):
    m = make(server)
    orphan = [
        Message.user("hi"),
        Message(role="assistant", content=[TextBlock(text="ok")]),
        Message(role="user", content=[ToolResultBlock(tool_use_id="toolu_nope", content="x")]),
    ]
    with pytest.raises(FatalModelError, match="400 invalid_request_error: .*tool_use_id"):
        m.query(request(orphan))
    with pytest.raises(FatalModelError, match="alternate"):
        m.query(request([Message.user("a"), Message.user("b")]))
    unanswered = [
        Message.user("hi"),
        Message(role="assistant", content=[ToolUseBlock(id="toolu_1", name="run_python", input={"code": "1"})]),
        Message.user("never mind"),
    ]
    with pytest.raises(FatalModelError, match="without `tool_result`"):
        m.query(request(unanswered))


def test_timeout_is_a_model_error(server):
    server.fail(Fault(delay=5))
    m = make(server, timeout=0.5, max_retries=0)
    start = time.monotonic()
    with pytest.raises(ModelError, match="no answer from the Anthropic API at http") as ei:
        m.query(request([Message.user("hi")]))
    assert not isinstance(ei.value, FatalModelError)
    assert time.monotonic() - start < 4.5  # the 0.5 s timeout, not the 5 s delay


def test_error_inside_stream_is_a_model_error(server):
    server.fail(Fault(status=529, mid_stream=True))
    with pytest.raises(ModelError, match="overloaded_error") as ei:
        make(server, stream="always").query(request([Message.user("hi")]))
    assert not isinstance(ei.value, FatalModelError)


def test_connection_refused_is_a_model_error():
    with FakeAnthropic() as srv:
        url = srv.url
    with pytest.raises(ModelError, match="cannot reach"):
        AnthropicModel(MODEL, api_key=KEY, base_url=url, max_retries=0, timeout=2).query(request([Message.user("hi")]))


# -- the fake itself -------------------------------------------------------------------------


def test_fake_validates_like_the_api(server):
    ok_headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    good = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}

    status, headers, body = post_raw(server.url, good, {"anthropic-version": "2023-06-01", "content-type": "application/json"})
    assert status == 401
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert headers.get("request-id", "").startswith("req_")

    for missing in ("model", "max_tokens", "messages"):
        bad = {k: v for k, v in good.items() if k != missing}
        status, _, body = post_raw(server.url, bad, ok_headers)
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
        assert missing in body["error"]["message"]

    status, _, body = post_raw(server.url, {**good, "messages": [{"role": "assistant", "content": "hi"}]}, ok_headers)
    assert status == 400

    status, _, body = post_raw(server.url, good, ok_headers)
    assert status == 200 and body["type"] == "message"
    assert set(body["usage"]) >= {"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}


def test_fake_fault_headers(server):
    server.fail(Fault(status=529), Fault(status=429, retry_after=2))
    hdr = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    good = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    status, headers, body = post_raw(server.url, good, hdr)
    assert status == 529 and body["error"]["type"] == "overloaded_error"
    assert {k.lower(): v for k, v in headers.items()}["retry-after-ms"] == "10"
    status, headers, body = post_raw(server.url, good, hdr)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"
    assert {k.lower(): v for k, v in headers.items()}["retry-after"] == "2"
    status, _, _ = post_raw(server.url, good, hdr)
    assert status == 200


def test_cache_breakpoints_keep_the_first_and_newest_messages_within_four():
    from gitops_agent.core.messages import Message, ModelRequest, TextBlock, ToolResultBlock, ToolSpec, ToolUseBlock
    from gitops_agent.models.anthropic_model import AnthropicModel

    m = AnthropicModel("claude-haiku-4-5", api_key="x", base_url="http://127.0.0.1:9")
    tool = ToolSpec(name="run_python", description="d", input_schema={"type": "object"})

    def conv(turns):
        msgs = [Message(role="user", content=[TextBlock(text="node")], cache=True)]
        for t in range(turns):
            msgs.append(Message(role="assistant", content=[ToolUseBlock(id=f"t{t}", name="run_python", input={"code": "1"})]))
            msgs.append(Message(role="user", content=[ToolResultBlock(tool_use_id=f"t{t}", content="ok")], cache=True))
        return msgs

    for turns in (1, 2, 5):
        p = m.build_params(ModelRequest(system="sys", messages=conv(turns), tools=[tool]))
        marked = [i for i, msg in enumerate(p["messages"]) for b in msg["content"] if "cache_control" in b]
        total = len(marked) + sum("cache_control" in b for b in p["system"]) + sum("cache_control" in t for t in p["tools"])
        assert total <= 4
        assert "cache_control" in p["system"][-1] and not any("cache_control" in t for t in p["tools"])
        assert marked[-1] == len(p["messages"]) - 1  # the newest turn is always a breakpoint
        if turns <= 2:
            assert marked[0] == 0  # the node prompt too, while slots allow
