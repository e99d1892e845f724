"""The OpenAI-compatible provider against a server with a small context (llama-server -c N)
and a slow stream: the output budget fits beside the prompt, long answers stream, and an
answer still coming at the end of the task's wall budget is stopped."""

from __future__ import annotations

import time

import pytest

from gitops_agent.core.errors import FatalModelError, ModelError
from gitops_agent.core.messages import Message, ModelRequest, ToolSpec
from gitops_agent.models.context_fit import window_of
from gitops_agent.models.openai_model import OpenAIModel
from tests.fakes.openai_server import FakeOpenAI

RUN_PYTHON = ToolSpec(
    name="run_python",
    description="Run Python code.",
    input_schema={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)
JUNK = "<start_of_turn>model\n" * 4000  # what a weak model writes when it writes on, in a loop
WORDS = " ".join(f"w{i * 7919 % 10007}" for i in range(6000))  # long, and no loop


def model(srv: FakeOpenAI, **kw) -> OpenAIModel:
    kw.setdefault("timeout", 10)
    return OpenAIModel("gemma-3-270m", base_url=srv.url + "/v1", max_retries=0, **kw)


def ask(m: OpenAIModel, text: str, max_tokens: int = 8192, **kw) -> object:
    return m.query(
        ModelRequest(
            system="You are the planner.", messages=[Message.user(text)], tools=[RUN_PYTHON], max_tokens=max_tokens, **kw
        )
    )


def sent_budget(srv: FakeOpenAI, i: int = -1) -> int:
    return srv.requests[i].body["max_tokens"]


@pytest.mark.parametrize("prompt_chars", [400, 3000, 9000])
def test_the_output_budget_fits_beside_the_prompt(prompt_chars):
    with FakeOpenAI(context_tokens=4096, responder=lambda b: WORDS) as srv:
        m = model(srv)
        for _ in range(2):  # the second call knows the tokenizer's ratio from the first
            resp = ask(m, "x " * (prompt_chars // 2))
            prompt = srv.usage_log[-1]["prompt_tokens"]
            assert sent_budget(srv) + prompt <= 4096  # the server never cuts the answer for want of room
            assert resp.stop_reason == "max_tokens" and resp.usage.output_tokens == sent_budget(srv)
        assert sent_budget(srv) == 1024 or sent_budget(srv) >= (4096 - prompt) * 0.8  # a quarter of the window, or what is left
        assert len(srv.lookups) == 1  # the window is asked once


def test_an_answer_takes_at_most_a_quarter_of_a_large_window():
    with FakeOpenAI(context_tokens=65536, responder=lambda b: "ok") as srv:
        ask(model(srv), "hi", max_tokens=32000)
        assert sent_budget(srv) == 16384
        ask(model(srv), "hi", max_tokens=4096)
        assert sent_budget(srv) == 4096  # the role's own budget when it is smaller


def test_a_small_window_still_leaves_an_answer_1024_tokens():
    """A quarter of a 2,048-token window would be 512 tokens, too few for a plan: the cap is never
    below 1,024 while the prompt leaves room for that."""
    with FakeOpenAI(context_tokens=2048, responder=lambda b: "ok") as srv:
        ask(model(srv), "hi", max_tokens=8192)
        assert sent_budget(srv) == 1024


def test_a_prompt_the_first_estimate_puts_past_the_window_still_asks_a_positive_budget():
    """Before any answer the prompt's size is estimated high (3 characters a token): a prompt the
    estimate puts past a 1,000-token window, which the server can still take, asks for the
    64-token minimum (never zero or less), and the answer comes."""
    from gitops_agent.models.context_fit import ContextFit

    text = "x " * 1600  # 3,200 characters: about 1,300 tokens estimated with the tools, 870 on the server
    with FakeOpenAI(context_tokens=1000, responder=lambda b: "ok") as srv:
        resp = ask(model(srv), text)
        assert sent_budget(srv) == 64 and resp.text == "ok"
    assert ContextFit(window=1000).output_budget({"messages": [{"role": "user", "content": "x" * 10_000}]}, 8192) == 64


def test_a_server_that_states_no_window_gets_the_roles_budget():
    with FakeOpenAI(responder=lambda b: "fine") as srv:
        ask(model(srv), "hello")
        assert sent_budget(srv) == 8192


def test_preflight_reads_the_window_and_a_given_window_is_not_asked():
    with FakeOpenAI(context_tokens=2048, responder=lambda b: "ok") as srv:
        m = model(srv)
        m.preflight()
        assert m.context_window() == 2048 and len(srv.lookups) == 1
        ask(m, "hi")
        assert len(srv.lookups) == 1 and sent_budget(srv) < 2048
        fixed = model(srv, context_tokens=1024)
        ask(fixed, "hi")
        assert len(srv.lookups) == 1 and sent_budget(srv) < 1024


def test_a_prompt_larger_than_the_context_is_a_clear_fatal_error():
    with FakeOpenAI(context_tokens=512, responder=lambda b: "ok") as srv:
        with pytest.raises(FatalModelError) as e:
            ask(model(srv), "word " * 2000)
    assert "exceed_context_size_error" in str(e.value) and "exceeds the available context size (512 tokens)" in str(e.value)


def test_window_of_reads_llama_cpp_and_vllm_answers():
    import openai

    def page(item):
        return openai.pagination.SyncPage[openai.types.Model](data=[openai.types.Model.model_validate(item)], object="list")  # noqa: E731

    base = {"id": "m", "object": "model", "created": 0, "owned_by": "x"}
    assert window_of(page({**base, "meta": {"n_ctx": 8192, "n_ctx_train": 32768}})) == 8192
    assert window_of(page({**base, "max_model_len": 16384})) == 16384
    assert window_of(page(base)) is None
    assert window_of(page({**base, "meta": {"n_ctx": "big"}})) is None


def test_an_inference_server_streams_and_tool_calls_arrive_whole():
    args = {"code": "print(" + " + ".join(str(i) for i in range(300)) + ")"}
    answer = {"content": "Let me run it.", "tool_calls": [{"name": "run_python", "arguments": args}]}
    with FakeOpenAI(context_tokens=8192, responder=lambda b: answer, stream_pieces=40) as srv:
        resp = ask(model(srv), "add", max_tokens=2048)
        assert srv.requests[-1].body.get("stream") is True  # it states its context: a local inference server
        assert resp.tool_uses[0].input == args and resp.text == "Let me run it." and resp.stop_reason == "tool_use"
        logged = srv.usage_log[-1]
        assert (resp.usage.input_tokens + resp.usage.cache_read_tokens, resp.usage.output_tokens) == (
            logged["prompt_tokens"],
            logged["completion_tokens"],
        )
        ask(model(srv, stream="never"), "add", max_tokens=1024)
        assert "stream" not in srv.requests[-1].body
    with FakeOpenAI(responder=lambda b: answer) as srv:
        ask(model(srv), "add", max_tokens=8192)
        assert "stream" not in srv.requests[-1].body  # any other endpoint: one JSON body, which all of them speak
        resp = ask(model(srv, stream="always"), "add", max_tokens=1024)
        assert srv.requests[-1].body.get("stream") is True and resp.tool_uses[0].input == args


@pytest.mark.parametrize("where", ["text", "arguments"])
def test_a_looping_answer_is_cut_short_as_truncated(where):
    loop = "<|im_end|>user\n" * 2000  # 30k characters, 200 chunks, 4 s at the server's pace
    answer = loop if where == "text" else {"tool_calls": [{"name": "run_python", "arguments": '{"code": "' + loop}]}
    with FakeOpenAI(context_tokens=32768, responder=lambda b: answer, stream_pieces=200, stream_delay=0.02) as srv:
        t0 = time.monotonic()
        resp = ask(model(srv), "talk", max_tokens=16000)
        took = time.monotonic() - t0
    assert resp.stop_reason == "max_tokens"  # treated as a reply cut off by its budget
    written = len(resp.text) if where == "text" else len(resp.tool_uses[0].input["_raw"])
    assert 590 <= written < 3000 and took < 3.5  # cut within a few chunks, not after 30k characters
    assert resp.usage.output_tokens > 0  # counted, though the server reported nothing for it


def test_a_long_answer_that_does_not_loop_is_not_cut():
    with FakeOpenAI(context_tokens=131072, responder=lambda b: WORDS, stream_pieces=200) as srv:
        resp = ask(model(srv), "talk", max_tokens=16000)
    assert resp.text == WORDS and resp.stop_reason == "end_turn"


def test_an_answer_still_coming_at_the_end_of_the_wall_budget_is_stopped():
    with FakeOpenAI(responder=lambda b: WORDS, stream_delay=0.6) as srv:  # 6 chunks, 3.6 s
        t0 = time.monotonic()
        with pytest.raises(ModelError) as e:
            ask(model(srv, stream="always"), "talk", timeout_s=1.0)
        took = time.monotonic() - t0
    assert "wall budget ran out" in str(e.value) and not e.value.retryable
    assert took < 3  # stopped at the budget, not after the whole answer


def test_a_stream_that_stops_in_the_middle_is_a_retryable_error(monkeypatch):
    from tests.fakes import openai_server

    def cut(self, h, resp_id, created, model, message, finish, usage):
        self.start_sse(h)
        self.send_chunk(
            h,
            'data: {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m", '
            '"choices": [{"index": 0, "delta": {"content": "half"}, "finish_reason": null}]}\n\n',
        )
        self.end_sse(h)

    monkeypatch.setattr(openai_server.FakeOpenAI, "_stream", cut)
    with FakeOpenAI(responder=lambda b: "whole") as srv:
        with pytest.raises(ModelError) as e:
            ask(model(srv, stream="always"), "talk")
    assert e.value.retryable and "stopped before it ended" in str(e.value)
