from __future__ import annotations

import pytest

from gitops_agent.core.state import Usage
from gitops_agent.models.pricing import PRICES, Price, is_known, lookup, price_of

USAGE = Usage(input_tokens=1_000, output_tokens=500, cache_read_tokens=20_000, cache_write_tokens=4_000)


def test_anthropic_arithmetic_is_exact():
    # claude-sonnet-4-5: 3 / 15 per million; write 1.25x, read 0.1x input
    expected = (1_000 * 3 + 4_000 * 3 * 1.25 + 20_000 * 3 * 0.1 + 500 * 15) / 1e6
    assert price_of("claude-sonnet-4-5", USAGE) == expected
    assert expected == pytest.approx(0.0315)  # 3000 + 15000 + 6000 + 7500 micro-dollars
    # 1M tokens of each kind on haiku 4.5 (1 / 5)
    u = Usage(input_tokens=10**6, output_tokens=10**6, cache_read_tokens=10**6, cache_write_tokens=10**6)
    assert price_of("claude-haiku-4-5", u) == pytest.approx(1 + 5 + 1.25 + 0.1)


@pytest.mark.parametrize(
    "model,inp,out",
    [
        ("claude-opus-4-5", 5, 25),
        ("claude-sonnet-4-5", 3, 15),
        ("claude-sonnet-4", 3, 15),
        ("claude-haiku-4-5", 1, 5),
        ("claude-3-5-haiku", 0.8, 4),
        ("gpt-4o-mini", 0.15, 0.6),
        ("gpt-4.1-mini", 0.4, 1.6),
        ("deepseek-chat", 0.27, 1.10),
    ],
)
def test_table(model, inp, out):
    p = PRICES[model]
    assert (p.input, p.output) == (inp, out)
    assert price_of(model, Usage(input_tokens=10**6)) == pytest.approx(inp)
    assert price_of(model, Usage(output_tokens=10**6)) == pytest.approx(out)


def test_openai_style_cache_discount_and_no_write_surcharge():
    u = Usage(input_tokens=1_000, cache_read_tokens=2_000, output_tokens=100)
    assert price_of("gpt-4o-mini", u) == (1_000 * 0.15 + 2_000 * 0.15 * 0.5 + 100 * 0.6) / 1e6
    assert PRICES["gpt-4o-mini"].cache_write_factor == 1.0
    assert PRICES["deepseek-chat"].input * PRICES["deepseek-chat"].cache_read_factor == pytest.approx(0.07)


@pytest.mark.parametrize(
    "model,key",
    [
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("deepseek/deepseek-chat", "deepseek-chat"),
    ],
)
def test_prefix_and_provider_matching(model, key):
    assert lookup(model) is PRICES[key]
    assert is_known(model)


def test_unknown_models_cost_nothing():
    assert not is_known("llama3.1:8b")
    assert price_of("llama3.1:8b", USAGE) == 0.0
    # a later model is not priced as an older one
    assert not is_known("claude-opus-4-9")
    assert not is_known("claude-sonnet-4-5x")


def test_scripted_is_free():
    assert is_known("scripted")
    assert price_of("scripted", USAGE) == 0.0


def test_overrides_win():
    over = {"claude-haiku-4-5": Price.anthropic(2, 10), "my-local": Price.openai(0.1, 0.2)}
    assert price_of("claude-haiku-4-5-20251001", Usage(input_tokens=10**6), over) == 2
    assert is_known("my-local", over) and not is_known("my-local")
    assert price_of("claude-sonnet-4-5", Usage(input_tokens=10**6), over) == 3


def test_a_model_served_from_this_machine_or_a_private_network_costs_nothing(tmp_path, monkeypatch):
    """A llama.cpp or Ollama model on 127.0.0.1 is not charged at the fallback price of an unknown
    model; `prices:` still prices it; an unknown model of a public endpoint still gets the fallback."""
    from gitops_agent.core.state import Usage
    from gitops_agent.models.pricing import is_local_endpoint
    from gitops_agent.observe.progress import RecordingReporter
    from gitops_agent.runtime.context import Runtime
    from gitops_agent.settings.config import AgentConfig, Price

    assert is_local_endpoint("http://127.0.0.1:8080/v1") and is_local_endpoint("http://localhost:11434/v1")
    assert is_local_endpoint("http://10.1.2.3/v1") and is_local_endpoint("http://[::1]:8000/v1")
    assert not is_local_endpoint("https://api.openai.com/v1") and not is_local_endpoint("https://8.8.8.8/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    u = Usage(input_tokens=1_000_000, output_tokens=100_000)
    rep = RecordingReporter()
    rt = Runtime(git=None, config=AgentConfig(), brain=None, reporter=rep)  # type: ignore[arg-type]
    local = rt.model("openai:gemma-3-270m@http://127.0.0.1:8080/v1")
    assert rt.cost(local.name, u) == 0.0 and not [f for k, f in rep.events if k == "error"]
    public = rt.model("openai:some-new-model@https://llm.example.com/v1")
    assert rt.cost(public.name, u) == pytest.approx(3.0 + 1.5) and [f for k, f in rep.events if k == "error"]
    priced = Runtime(git=None, config=AgentConfig(prices={"gemma-3-270m": Price(input=0.1, output=0.2)}), brain=None)  # type: ignore[arg-type]
    m = priced.model("openai:gemma-3-270m@http://127.0.0.1:8080/v1")
    assert priced.cost(m.name, u) == pytest.approx(0.1 + 0.02)


def test_a_public_host_whose_name_only_starts_with_localhost_is_charged(monkeypatch):
    """`localhost.example.com` is somebody's server, not this machine: its unknown model is counted
    at the fallback price (so the dollar budget still stops it), not as free."""
    from gitops_agent.core.state import Usage
    from gitops_agent.models.pricing import is_local_endpoint
    from gitops_agent.runtime.context import Runtime
    from gitops_agent.settings.config import AgentConfig

    for url in ("https://localhost.example.com/v1", "https://localhost-llm.example.com/v1", "http://localhostx:8080/v1"):
        assert not is_local_endpoint(url), url
    assert is_local_endpoint("http://api.localhost:8080/v1") and is_local_endpoint("http://gpu-box.local/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    rt = Runtime(git=None, config=AgentConfig(), brain=None)  # type: ignore[arg-type]
    m = rt.model("openai:some-new-model@https://localhost.example.com/v1")
    assert rt.cost(m.name, Usage(input_tokens=1_000_000, output_tokens=100_000)) == pytest.approx(3.0 + 1.5)
