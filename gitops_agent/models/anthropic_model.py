"""Anthropic Messages API through the official `anthropic` SDK.

- Credentials and endpoint: `api_key` / `base_url` arguments, else the SDK's own handling of
  ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) and ANTHROPIC_BASE_URL.
- Prompt caching on the stable prefix: with `request.cache_system`, `cache_control` goes on
  the last tool definition and on the system block; each message with `cache=True` gets it on
  its last content block, and each TextBlock with `cache=True` on itself. The API allows 4
  breakpoints; the oldest message breakpoints are dropped beyond that.
- Retries are the SDK's (`max_retries`, honouring `retry-after`). What is left afterwards is
  raised as FatalModelError (bad key, no permission, bad request, unknown model, spend limit)
  or ModelError (overloaded, rate limited, server errors, timeouts, connection failures). A
  ModelError carries the HTTP status and the `retry-after` the API sent, and is marked
  retryable, so the runtime's second line of retries (gitops_agent/models/retry.py) can wait and try
  again; a FatalModelError never is.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

import anthropic

from gitops_agent.core.errors import ConfigError, FatalModelError, ModelError
from gitops_agent.core.messages import Block, Message, ModelRequest, ModelResponse, TextBlock, ToolResultBlock, ToolUseBlock
from gitops_agent.core.state import Usage
from gitops_agent.models.retry import TimeoutPolicy, retry_after_of

MAX_CACHE_BREAKPOINTS = 4
STREAM_ABOVE_MAX_TOKENS = 4096
_EPHEMERAL = {"type": "ephemeral"}
_LIMIT_RE = re.compile(r"spend(ing)? limit|credit|usage limit|billing|quota", re.I)
_FATAL_CODES = ("spend_limit", "billing", "organization_on_hold")


class AnthropicModel:
    """The `Model` seam for Claude models."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        stream: Literal["auto", "always", "never"] = "auto",
        timeouts: TimeoutPolicy | None = None,
    ) -> None:
        if stream not in ("auto", "always", "never"):
            raise ValueError(f"stream must be 'auto', 'always' or 'never', not {stream!r}")
        self.name = model
        self.stream = stream
        self.timeouts = timeouts or TimeoutPolicy()
        if timeout is not None:  # one number for everything (tests, scripts)
            self.timeouts = self.timeouts.model_copy(update={"idle_s": timeout, "response_s": timeout})
        self._retries = self.timeouts.sdk_retries if max_retries is None else max_retries
        kwargs: dict[str, Any] = {"max_retries": self._retries, "timeout": self.timeouts.for_call(None, streaming=False)}
        if api_key is not None:
            kwargs["api_key"] = api_key
        if base_url is not None:
            kwargs["base_url"] = base_url
        try:
            self.client = anthropic.Anthropic(**kwargs)
        except anthropic.AnthropicError as e:  # e.g. a broken credentials profile on disk
            raise ConfigError(f"cannot set up the Anthropic client: {e}") from e

    def __repr__(self) -> str:
        return f"AnthropicModel({self.name!r}, base_url={str(self.client.base_url)!r})"

    # -- request -------------------------------------------------------------------------

    def build_params(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments of `messages.create` for a request (no I/O)."""
        tools = [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in request.tools]
        system: list[dict[str, Any]] = []
        if request.system.strip():
            system.append({"type": "text", "text": request.system})
        used = 0
        if request.cache_system:
            # The prefix order is tools, system, messages: a breakpoint on the system block
            # caches the tools too, so the tools get one only when there is no system prompt;
            # the slot saved goes to the conversation.
            if system:
                system[-1]["cache_control"] = dict(_EPHEMERAL)
                used += 1
            elif tools:
                tools[-1]["cache_control"] = dict(_EPHEMERAL)
                used += 1
        messages: list[dict[str, Any]] = []
        points: list[tuple[int, int]] = []  # (message, block) breakpoints, oldest first
        for i, m in enumerate(request.messages):
            param, marked = _message_param(m)
            messages.append(param)
            points.extend((i, j) for j in marked)
        budget = max(0, MAX_CACHE_BREAKPOINTS - used)
        for i, j in points[max(0, len(points) - budget) :] if budget else []:  # the newest `budget` of them
            messages[i]["content"][j]["cache_control"] = dict(_EPHEMERAL)

        params: dict[str, Any] = {"model": self.name, "max_tokens": request.max_tokens, "messages": messages}
        if system:
            params["system"] = system
        if tools:
            params["tools"] = tools
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return params

    def _use_stream(self, request: ModelRequest) -> bool:
        return self.stream == "always" or (self.stream == "auto" and request.max_tokens > STREAM_ABOVE_MAX_TOKENS)

    # -- call ----------------------------------------------------------------------------

    def abort(self) -> None:
        """Stop every call in flight (their connections are closed): a Ctrl-C."""
        self.client.close()

    @property
    def base_url(self) -> str:
        """Where this model is served (the Served capability)."""
        return str(self.client.base_url)

    def preflight(self, seconds: float = 10.0) -> None:
        """Before a task exists: the endpoint answers, takes the key and has the model -- one
        `GET /v1/models/{id}`, no tokens. ConfigError naming what to fix; anything else (a 5xx,
        a server without that route) is left to the run and its retries."""
        base = self.client.base_url
        client = self.client.with_options(
            max_retries=0, timeout=anthropic.Timeout(seconds, connect=min(seconds, self.timeouts.connect_s))
        )
        try:
            client.models.retrieve(self.name)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as e:
            kind, text = _api_message(e)
            raise ConfigError(
                f"the Anthropic API at {base} refused the key ({e.status_code} {kind}: {text}); check ANTHROPIC_API_KEY"
            ) from e
        except anthropic.NotFoundError as e:
            kind, text = _api_message(e)
            # the API says "model: <id>"; a server without this route says something else
            if kind == "not_found_error" and re.match(r"model\b", text.strip(), re.I) and self.name in text:
                raise ConfigError(
                    f"the Anthropic API at {base} has no model {self.name!r} ({text}); pick another with "
                    "--model, or `models:` in .github/gitops-agent.yml"
                ) from e
        except anthropic.APITimeoutError as e:
            raise ConfigError(f"the Anthropic API at {base} did not answer in {seconds:g} s (ANTHROPIC_BASE_URL)") from e
        except anthropic.APIConnectionError as e:
            raise ConfigError(
                f"cannot reach the Anthropic API at {base}: {e.__cause__ or e} (check the network, or ANTHROPIC_BASE_URL)"
            ) from e
        except (anthropic.APIStatusError, anthropic.APIResponseValidationError):
            pass
        except TypeError as e:
            if "authentication" in str(e).lower():
                raise ConfigError("no Anthropic credentials: set ANTHROPIC_API_KEY") from e
            raise

    def query(self, request: ModelRequest) -> ModelResponse:
        params = self.build_params(request)
        start = time.monotonic()
        streaming = self._use_stream(request)
        timeout = self.timeouts.for_call(request.timeout_s, streaming)
        client = self.client.with_options(
            timeout=timeout, max_retries=self.timeouts.retries_within(request.timeout_s, streaming, self._retries)
        )
        try:
            if streaming:
                with client.messages.stream(**params) as stream:
                    msg = stream.get_final_message()
            else:
                msg = client.messages.create(**params)
        except anthropic.APIStatusError as e:
            raise _status_error(e) from e
        except anthropic.APITimeoutError as e:
            what = "without a byte of the answer" if streaming else "without the whole answer"
            raise ModelError(
                f"no answer from the Anthropic API at {self.client.base_url} for {timeout.read:g} s {what} ({self.name}); "
                f"the task's wall budget or `model_timeout.{'idle_s' if streaming else 'response_s'}` in "
                f".github/gitops-agent.yml "
                "bounds the wait",
                retryable=True,
            ) from e
        except anthropic.APIConnectionError as e:
            raise ModelError(f"cannot reach the Anthropic API at {self.client.base_url}: {e}", retryable=True) from e
        except anthropic.CredentialsError as e:
            raise FatalModelError(f"Anthropic credentials failed: {e}") from e
        except anthropic.AnthropicError as e:
            raise ModelError(f"Anthropic API call failed: {type(e).__name__}: {e}") from e
        except ValueError as e:
            # the SDK's stream accumulator cannot parse a tool call's JSON (malformed or cut
            # off): the output is unusable, a new sample usually is not -- retryable
            if "tool parameter JSON" in str(e):
                raise ModelError(
                    f"Anthropic API ({self.name}): the model's tool call is not valid JSON: {str(e)[:300]}", retryable=True
                ) from e
            raise
        except TypeError as e:
            if "authentication" in str(e).lower():
                raise FatalModelError("no Anthropic credentials: set ANTHROPIC_API_KEY (or pass api_key)") from e
            raise
        latency_ms = int((time.monotonic() - start) * 1000)
        return _to_response(msg, latency_ms, self.name)


def _block_param(b: Block) -> dict[str, Any] | None:
    if isinstance(b, TextBlock):
        # The API rejects empty text blocks.
        return {"type": "text", "text": b.text} if b.text.strip() else None
    if isinstance(b, ToolUseBlock):
        return {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
    if isinstance(b, ToolResultBlock):
        out: dict[str, Any] = {"type": "tool_result", "tool_use_id": b.tool_use_id}
        if b.content:
            out["content"] = b.content
        if b.is_error:
            out["is_error"] = True
        return out
    raise TypeError(f"unknown block {b!r}")


def _message_param(m: Message) -> tuple[dict[str, Any], list[int]]:
    """The API form of a message, and the indexes of its blocks that get cache_control:
    text blocks marked `cache`, and the last block when the message is marked `cache`."""
    content: list[dict[str, Any]] = []
    marked: list[int] = []
    for b in m.content:
        p = _block_param(b)
        if p is None:
            continue
        content.append(p)
        if isinstance(b, TextBlock) and b.cache:
            marked.append(len(content) - 1)
    if not content:
        content = [{"type": "text", "text": "(empty)"}]
    if m.cache and len(content) - 1 not in marked:
        marked.append(len(content) - 1)
    return {"role": m.role, "content": content}, marked


def _to_response(msg: Any, latency_ms: int, fallback_model: str) -> ModelResponse:
    blocks: list[Block] = []
    for b in msg.content or []:
        kind = getattr(b, "type", None)
        if kind == "text":
            blocks.append(TextBlock(text=b.text))
        elif kind == "tool_use":
            inp = b.input
            if not isinstance(inp, dict):
                inp = {"_raw": inp if isinstance(inp, str) else repr(inp)}
            blocks.append(ToolUseBlock(id=b.id, name=b.name, input=inp))
        # thinking / server tool blocks are not part of the provider-neutral shape
    u = msg.usage
    usage = Usage(
        input_tokens=getattr(u, "input_tokens", None) or 0,
        output_tokens=getattr(u, "output_tokens", None) or 0,
        cache_read_tokens=getattr(u, "cache_read_input_tokens", None) or 0,
        cache_write_tokens=getattr(u, "cache_creation_input_tokens", None) or 0,
    )
    return ModelResponse(
        content=blocks, stop_reason=msg.stop_reason, usage=usage, model=msg.model or fallback_model, latency_ms=latency_ms
    )


def _api_message(e: anthropic.APIStatusError) -> tuple[str, str]:
    kind = getattr(e, "type", None)
    text = getattr(e, "api_message", None)
    body = e.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        kind = kind or body["error"].get("type")
        text = text or body["error"].get("message")
    if not text:
        text = e.message
    return str(kind or "error"), str(text)


def is_spend_limit(e: anthropic.APIStatusError) -> bool:
    """A 429 (or 402) that no retry will fix: spend, credit or usage limit reached."""
    code = str(getattr(e, "error_code", None) or "")
    kind, text = _api_message(e)
    if e.status_code == 402 or kind == "billing_error" or any(c in code for c in _FATAL_CODES):
        return True
    return e.status_code == 429 and bool(_LIMIT_RE.search(text))


_FATAL_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
}


def _status_error(e: anthropic.APIStatusError) -> ModelError:
    kind, text = _api_message(e)
    rid = f" (request-id {e.request_id})" if getattr(e, "request_id", None) else ""
    # An error event inside a 200 stream carries its kind but no status of its own.
    status = e.status_code if e.status_code >= 400 else next((s for s, k in _FATAL_STATUS.items() if k == kind), None)
    where = str(e.status_code) if e.status_code >= 400 else "stream error"
    msg = f"Anthropic API {where} {kind}: {text}{rid}"
    if status == 401:
        return FatalModelError(msg + " - check ANTHROPIC_API_KEY", status=status)
    if status in _FATAL_STATUS or is_spend_limit(e):
        return FatalModelError(msg, status=status)
    response = getattr(e, "response", None)
    return ModelError(
        msg,
        status=e.status_code if e.status_code >= 400 else None,
        retry_after=retry_after_of(getattr(response, "headers", None)),
        retryable=True,
    )
