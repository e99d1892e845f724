"""Provider-neutral model request and response types.

The shape follows the Anthropic Messages API (content blocks: text, tool_use, tool_result),
which every provider here can be mapped onto.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from gitops_agent.core.state import Usage


class TextBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"] = "text"
    text: str
    # Cache the prompt up to and including this block (Anthropic cache_control); used to cache
    # a stable first block of a message whose later blocks change.
    cache: bool = False


class ToolUseBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str
    content: str
    is_error: bool = False


Block = Union[TextBlock, ToolUseBlock, ToolResultBlock]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: list[Block]
    # Ask the provider to cache the prompt up to and including this message (Anthropic:
    # cache_control on its last block). Providers without explicit caching ignore it.
    cache: bool = False

    @classmethod
    def user(cls, text: str, cache: bool = False) -> "Message":
        return cls(role="user", content=[TextBlock(text=text)], cache=cache)


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    input_schema: dict[str, Any]


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    max_tokens: int = 4096
    temperature: float | None = None
    # "required": the reply must call one of the tools (the planner and the executors never take
    # text alone). A provider that can hold the model to it does (OpenAI-compatible
    # tool_choice; llama.cpp then constrains a small model's output by a grammar).
    tool_choice: Literal["auto", "required"] = "auto"
    # Cache the tools + system prefix (the stable part of every request of a role).
    cache_system: bool = True
    # At most this long for the whole call (what is left of the task's wall budget); None: no bound.
    timeout_s: float | None = None
    # Not sent to any provider: who asks (role, node, ...) and facts a scripted model may use.
    meta: dict[str, Any] = Field(default_factory=dict)


class ModelResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: list[Block]
    stop_reason: str | None = None
    usage: Usage = Usage()
    model: str = ""
    latency_ms: int = 0

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock)).strip()

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        return [b for b in self.content if isinstance(b, ToolUseBlock)]
