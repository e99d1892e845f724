"""Model providers are declared once (gitops_agent/models/registry.py): a new provider is one
module in gitops_agent/models/providers/ with its PROVIDER, found by the registry."""

from __future__ import annotations

import pytest

from gitops_agent.core.errors import ConfigError
from gitops_agent.models import registry
from gitops_agent.models.specs import data_spec_problem, with_trusted_endpoint

ECHO = """
from gitops_agent.models.pricing import Price
from gitops_agent.models.registry import Provider
from gitops_agent.models.scripted import ScriptedModel


def _build(name, endpoint, timeouts, kw):
    return ScriptedModel({"planner": [{"text": f"echo {name} at {endpoint}"}]}, name=name)


PROVIDER = Provider("echo", _build, keys=("ECHO_API_KEY",), endpoint=True, example="echo:small",
                    prices={"echo-small": Price.anthropic(1, 2)})
"""


@pytest.fixture
def echo_provider(tmp_path, monkeypatch):
    """A provider written as one file in the providers package (here: a folder on its path)."""
    from gitops_agent.models import providers

    (tmp_path / "echo.py").write_text(ECHO)
    monkeypatch.setattr(providers, "__path__", [*providers.__path__, str(tmp_path)])
    registry.providers.cache_clear()
    yield
    registry.providers.cache_clear()


def test_a_provider_is_one_module(echo_provider, monkeypatch):
    assert "echo" in registry.providers()
    from gitops_agent.core.state import Usage
    from gitops_agent.models.pricing import price_of

    assert price_of("echo-small", Usage(input_tokens=1_000_000)) == 1.0  # its prices came with it
    m = registry.make_model("echo:small@http://127.0.0.1:9/v1")
    assert m.name == "small"
    monkeypatch.delenv("ECHO_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ECHO_API_KEY"):
        registry.check_credentials("echo:small")
    monkeypatch.setenv("ECHO_API_KEY", "k")
    registry.check_credentials("echo:small")
    # a brain may name it (no endpoint), and is served where the trusted settings serve it
    assert data_spec_problem("echo:small") is None and "endpoint" in data_spec_problem("echo:small@http://x")
    assert with_trusted_endpoint("echo:big", ["echo:small@http://127.0.0.1:9/v1"]) == "echo:big@http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    "spec,problem",
    [
        ("", "empty model spec"),
        ("gpt-4o", "has no provider"),
        ("nosuch:x", "unknown model provider 'nosuch'"),
        ("anthropic:claude-haiku-4-5@http://x", "takes no endpoint"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, problem):
    with pytest.raises(ConfigError, match=problem):
        registry.make_model(spec)


def test_the_shipped_providers_and_their_keys(monkeypatch):
    assert {"anthropic", "openai", "scripted"} <= set(registry.providers())
    assert registry.split("claude-sonnet-4-6")[0].name == "anthropic"  # a bare id anthropic claims
    assert registry.split("openai:qwen@http://localhost:11434/v1")[1:] == ("qwen", "http://localhost:11434/v1")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        registry.check_credentials("anthropic:claude-haiku-4-5")
    registry.check_credentials("openai:local")  # a local server needs no key
    assert data_spec_problem("scripted:demo") is None and data_spec_problem("scripted:/etc/passwd")
