"""What model calls cost, in US dollars.

Prices are USD per million tokens. Anthropic bills prompt-cache writes at 1.25x and cache
reads at 0.1x the input price; OpenAI-style providers cache automatically, bill no write
surcharge and discount cache reads (0.5x input unless the provider says otherwise).

    cost = (input * in + cache_write * in * write_factor
            + cache_read * in * read_factor + output * out) / 1e6

A model id matches a table entry exactly, or by prefix when the rest is a date or version
suffix ("claude-haiku-4-5-20251001", "claude-sonnet-4-5@20250929", "gpt-4o-mini-2024-07-18",
"anthropic.claude-haiku-4-5-20251001-v1:0"). A provider prefix ("anthropic/", "openai/",
"deepseek/", "anthropic.") is ignored, and OpenRouter's dotted Claude ids
("anthropic/claude-sonnet-4.5") are read as dashed ones. Unknown models cost 0;
`is_known` lets callers warn about that.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from gitops_agent.core.state import Usage

ANTHROPIC_CACHE_WRITE = 1.25
ANTHROPIC_CACHE_READ = 0.1
OPENAI_CACHE_READ = 0.5


class Price(BaseModel):
    """USD per million tokens, and the cache factors (multiples of the input price)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: float = Field(ge=0, description="USD per million uncached input tokens.")
    output: float = Field(ge=0, description="USD per million output tokens.")
    cache_write_factor: float = Field(ANTHROPIC_CACHE_WRITE, ge=0, description="Cache write price / input price.")
    cache_read_factor: float = Field(ANTHROPIC_CACHE_READ, ge=0, description="Cache read price / input price.")

    @classmethod
    def anthropic(cls, input: float, output: float) -> "Price":
        return cls(input=input, output=output, cache_write_factor=ANTHROPIC_CACHE_WRITE, cache_read_factor=ANTHROPIC_CACHE_READ)

    @classmethod
    def openai(cls, input: float, output: float, cache_read_factor: float = OPENAI_CACHE_READ) -> "Price":
        return cls(input=input, output=output, cache_write_factor=1.0, cache_read_factor=cache_read_factor)

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input
            + usage.cache_write_tokens * self.input * self.cache_write_factor
            + usage.cache_read_tokens * self.input * self.cache_read_factor
            + usage.output_tokens * self.output
        ) / 1e6


FREE = Price(input=0, output=0, cache_write_factor=0, cache_read_factor=0)

PRICES: dict[str, Price] = {
    # Anthropic
    "claude-opus-4-6": Price.anthropic(5, 25),
    "claude-opus-4-5": Price.anthropic(5, 25),
    "claude-opus-4-1": Price.anthropic(15, 75),
    "claude-opus-4-0": Price.anthropic(15, 75),
    "claude-opus-4": Price.anthropic(15, 75),
    "claude-sonnet-4-6": Price.anthropic(3, 15),
    "claude-sonnet-4-5": Price.anthropic(3, 15),
    "claude-sonnet-4-0": Price.anthropic(3, 15),
    "claude-sonnet-4": Price.anthropic(3, 15),
    "claude-3-7-sonnet": Price.anthropic(3, 15),
    "claude-3-5-sonnet": Price.anthropic(3, 15),
    "claude-haiku-4-5": Price.anthropic(1, 5),
    "claude-3-5-haiku": Price.anthropic(0.8, 4),
    "claude-3-haiku": Price.anthropic(0.25, 1.25),
    # OpenAI (cached input: 0.5x for the 4o family, 0.25x for 4.1, 0.1x for 5)
    "gpt-4o-mini": Price.openai(0.15, 0.6),
    "gpt-4o": Price.openai(2.5, 10),
    "gpt-4.1-mini": Price.openai(0.4, 1.6, cache_read_factor=0.25),
    "gpt-4.1-nano": Price.openai(0.1, 0.4, cache_read_factor=0.25),
    "gpt-4.1": Price.openai(2, 8, cache_read_factor=0.25),
    "gpt-5-mini": Price.openai(0.25, 2, cache_read_factor=0.1),
    "gpt-5-nano": Price.openai(0.05, 0.4, cache_read_factor=0.1),
    "gpt-5": Price.openai(1.25, 10, cache_read_factor=0.1),
    # DeepSeek (cache hit 0.07 of 0.27, 0.14 of 0.55)
    "deepseek-chat": Price.openai(0.27, 1.10, cache_read_factor=0.07 / 0.27),
    "deepseek-reasoner": Price.openai(0.55, 2.19, cache_read_factor=0.14 / 0.55),
    # Shipped scripted/replay models and local endpoints
    "scripted": FREE,
    "replay": FREE,
    "local": FREE,
}

# The most output tokens a model takes in one call (a request above it is a 400): the planner
# and executors ask for no more than this. Unknown models: what the agent asks for.
MAX_OUTPUT: dict[str, int] = {
    "claude-opus-4-6": 128_000,
    "claude-opus-4-5": 64_000,
    "claude-opus-4-1": 32_000,
    "claude-opus-4-0": 32_000,
    "claude-opus-4": 32_000,
    "claude-sonnet-4-6": 64_000,
    "claude-sonnet-4-5": 64_000,
    "claude-sonnet-4-0": 64_000,
    "claude-sonnet-4": 64_000,
    "claude-3-7-sonnet": 64_000,
    "claude-3-5-sonnet": 8_192,
    "claude-haiku-4-5": 64_000,
    "claude-3-5-haiku": 8_192,
    "claude-3-haiku": 4_096,
    "gpt-4o-mini": 16_384,
    "gpt-4o": 16_384,
    "gpt-4.1-mini": 32_768,
    "gpt-4.1-nano": 32_768,
    "gpt-4.1": 32_768,
    "gpt-5-mini": 128_000,
    "gpt-5-nano": 128_000,
    "gpt-5": 128_000,
    "deepseek-chat": 8_192,
    "deepseek-reasoner": 64_000,
}

# What may follow a table key for a prefix match: a date (20251001, 2024-07-18), "@date"
# (Vertex), "-latest", "-vN..." (Bedrock), or ":tag" (Ollama, Bedrock).
_SUFFIX = re.compile(r"^(?:[-@]\d{8}|-\d{4}-\d{2}-\d{2}|-latest|-v\d|:|@)")
_PROVIDER_PREFIX = re.compile(r"^(?:[a-z0-9_-]+/|anthropic\.|us\.anthropic\.|eu\.anthropic\.|apac\.anthropic\.)")


def _match(model: str, table: dict):
    if model in table:
        return table[model]
    best: str | None = None
    for key in table:
        if model.startswith(key) and _SUFFIX.match(model[len(key) :]):
            if best is None or len(key) > len(best):
                best = key
    return table[best] if best is not None else None


def _candidates(model: str) -> list[str]:
    m = model.strip()
    out = [m]
    low = m.lower()
    stripped = _PROVIDER_PREFIX.sub("", low)
    for c in (low, stripped):
        if c not in out:
            out.append(c)
        if c.startswith("claude"):
            dashed = re.sub(r"(?<=\d)\.(?=\d)", "-", c)
            if dashed not in out:
                out.append(dashed)
    return out


def lookup(model: str, overrides: dict[str, Price] | None = None) -> Price | None:
    """The price entry of a model id, or None when it is not known."""
    tables = [overrides, PRICES] if overrides else [PRICES]
    for table in tables:
        for cand in _candidates(model):
            p = _match(cand, table)  # type: ignore[arg-type]
            if p is not None:
                return p
    return None


def is_known(model: str, overrides: dict[str, Price] | None = None) -> bool:
    return lookup(model, overrides) is not None


def price_of(model: str, usage: Usage, overrides: dict[str, Price] | None = None) -> float:
    """USD for `usage` on `model`; 0 for models not in the table (see `is_known`)."""
    p = lookup(model, overrides)
    return p.cost(usage) if p is not None else 0.0


def max_output_tokens(model: str) -> int | None:
    """The most output tokens ``model`` allows in one call, or None when it is not known."""
    for cand in _candidates(model):
        n = _match(cand, MAX_OUTPUT)
        if n is not None:
            return n
    return None


def is_local_endpoint(url: str) -> bool:
    """A base URL on this machine or a private network (llama.cpp, Ollama, vLLM on a LAN): what it
    serves costs nothing per token unless the config's `prices:` says otherwise."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if not host:
        return False
    if host == "localhost" or host.endswith((".localhost", ".local")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local
