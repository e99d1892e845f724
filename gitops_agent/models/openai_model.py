"""Any OpenAI-compatible chat.completions endpoint (OpenAI, Ollama, vLLM, OpenRouter,
DeepSeek) through the official `openai` SDK.

- `api_key` defaults to OPENAI_API_KEY, else "not-needed" (local endpoints ignore it);
  `base_url` defaults to OPENAI_BASE_URL, else the SDK's default (api.openai.com).
- Mapping: system -> a system message; assistant tool_use blocks -> `tool_calls`; tool_result
  blocks -> "tool" messages; tools -> function definitions. Tool call arguments that are not
  a JSON object are kept as `{"_raw": "<text>"}` so the caller can tell the model.
- Stop reasons are given Anthropic's names (stop -> end_turn, tool_calls -> tool_use,
  length -> max_tokens); others pass through.
- Caching is the provider's (automatic); `cache` marks are ignored. Cached prompt tokens are
  reported as cache reads, the rest of the prompt as input.
- Streaming (`stream`: auto streams when the server states its context window, i.e. a local
  inference server such as llama.cpp or vLLM) bounds the wait between bytes (`model_timeout.idle_s`) and stops an
  answer still coming when the task's wall budget ends (gitops_agent/models/openai_stream.py).
- A server that states its context window (llama.cpp, vLLM) gets an output budget that fits
  beside the prompt (gitops_agent/models/context_fit.py).
- Retries are the SDK's; then 400/401/402/403/404/422 and quota 429s raise FatalModelError,
  the rest a retryable ModelError (with the status and `retry-after`) for the runtime's second
  line of retries (gitops_agent/models/retry.py).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import openai

from gitops_agent.core.errors import FatalModelError, ModelError
from gitops_agent.core.messages import Block, Message, ModelRequest, ModelResponse, TextBlock, ToolResultBlock, ToolUseBlock
from gitops_agent.core.state import Usage
from gitops_agent.models.context_fit import ContextFit, window_of
from gitops_agent.models.openai_stream import read_stream
from gitops_agent.models.retry import TimeoutPolicy, retry_after_of

_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "function_call": "tool_use", "length": "max_tokens"}
_LIMIT_RE = re.compile(r"quota|spend(ing)? limit|credit|billing|usage limit", re.I)


class OpenAIModel:
    """The `Model` seam for OpenAI-compatible endpoints."""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        timeouts: TimeoutPolicy | None = None,
        stream: str = "auto",
        context_tokens: int | None = None,
    ) -> None:
        if stream not in ("auto", "always", "never"):
            raise ValueError(f"stream must be 'auto', 'always' or 'never', not {stream!r}")
        self.name = model
        self.stream = stream
        self.timeouts = timeouts or TimeoutPolicy()
        if timeout is not None:
            self.timeouts = self.timeouts.model_copy(update={"idle_s": timeout, "response_s": timeout})
        self._retries = self.timeouts.sdk_retries if max_retries is None else max_retries
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        kwargs: dict[str, Any] = {
            "api_key": api_key,
            "max_retries": self._retries,
            "timeout": self.timeouts.for_call(None, streaming=False),
        }
        if base_url:
            kwargs["base_url"] = base_url
        self.client = openai.OpenAI(**kwargs)
        self._completion_tokens = bool(_REASONING.match(model)) or "api.openai.com" in str(self.client.base_url)
        self.fit = ContextFit(context_tokens)
        # OpenAI's /models states no window; others are asked once, at the first call
        self._asked_window = context_tokens is not None or "api.openai.com" in str(self.client.base_url)

    def __repr__(self) -> str:
        return f"OpenAIModel({self.name!r}, base_url={str(self.client.base_url)!r})"

    def build_params(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for a request (no I/O)."""
        messages: list[dict[str, Any]] = []
        if request.system.strip():
            messages.append({"role": "system", "content": request.system})
        for m in request.messages:
            messages.extend(_messages_of(m))
        # OpenAI's reasoning models refuse max_tokens; older OpenAI-compatible servers know only it
        limit = "max_completion_tokens" if self._completion_tokens else "max_tokens"
        params: dict[str, Any] = {"model": self.name, "messages": messages, limit: request.max_tokens}
        if request.tools:
            params["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}
                for t in request.tools
            ]
            if request.tool_choice == "required":  # one call, and no reply without one
                params["tool_choice"] = "required"
                params["parallel_tool_calls"] = False
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return params

    @property
    def base_url(self) -> str:
        """Where this model is served (the Served capability)."""
        return str(self.client.base_url)

    def preflight(self, seconds: float = 10.0) -> None:
        """Before a task exists: the endpoint answers and takes the key (`GET /models`, no
        tokens). Local servers name their models freely, so the model is not looked up."""
        from gitops_agent.core.errors import ConfigError

        base = self.client.base_url
        client = self.client.with_options(
            max_retries=0, timeout=openai.Timeout(seconds, connect=min(seconds, self.timeouts.connect_s))
        )
        try:
            models = client.models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise ConfigError(
                f"the OpenAI-compatible API at {base} refused the key ({e.status_code}: {e.message}); check OPENAI_API_KEY"
            ) from e
        except openai.APITimeoutError as e:
            raise ConfigError(
                f"the OpenAI-compatible API at {base} did not answer in {seconds:g} s (the URL after @ in "
                "--model, or OPENAI_BASE_URL)"
            ) from e
        except openai.APIConnectionError as e:
            raise ConfigError(
                f"cannot reach the OpenAI-compatible API at {base}: {e.__cause__ or e} (is the server running? "
                "the URL after @ in --model, or OPENAI_BASE_URL)"
            ) from e
        except (openai.APIStatusError, openai.APIResponseValidationError):
            return
        if not self._asked_window:
            self._asked_window = True
            self.fit.window = window_of(models, self.name)

    def context_window(self) -> int | None:
        """The server's context in tokens when it states one (asked once, a short call), else None."""
        if not self._asked_window:
            self._asked_window = True
            try:
                self.fit.window = window_of(self.client.with_options(max_retries=0, timeout=5.0).models.list(), self.name)
            except (openai.OpenAIError, TypeError, ValueError, AttributeError):
                self.fit.window = None
        return self.fit.window

    def _use_stream(self, request: ModelRequest) -> bool:
        # auto: an inference server that states its context (llama.cpp, vLLM) streams every answer
        # (often a slow CPU model: the wait is bounded between bytes, and a looping answer is
        # cut); other endpoints get one JSON body, which every OpenAI-compatible server speaks
        return self.stream == "always" or (self.stream == "auto" and bool(self.fit.window))

    def abort(self) -> None:
        """Stop every call in flight (their connections are closed): a Ctrl-C."""
        self.client.close()

    def query(self, request: ModelRequest) -> ModelResponse:
        params = self.build_params(request)
        if self.context_window():
            limit = "max_completion_tokens" if "max_completion_tokens" in params else "max_tokens"
            params[limit] = self.fit.output_budget(params, request.max_tokens)
        start = time.monotonic()
        streaming = self._use_stream(request)
        deadline = start + request.timeout_s if request.timeout_s is not None else None
        timeout = self.timeouts.for_call(request.timeout_s, streaming=streaming)
        client = self.client.with_options(
            timeout=timeout, max_retries=self.timeouts.retries_within(request.timeout_s, streaming, self._retries)
        )

        def create(params: dict[str, Any]) -> Any:
            if not streaming:
                return client.chat.completions.create(**params)
            stream = client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True})
            try:
                return read_stream(
                    stream,
                    deadline,
                    f"the OpenAI-compatible API at {self.client.base_url} ({self.name})",
                    chars_per_token=self.fit.chars_per_token,
                    prompt_tokens=self.fit.estimate(params),
                )
            except (TypeError, ValueError, AttributeError) as e:  # a chunk that is not what the API sends
                raise ModelError(
                    f"the OpenAI-compatible API at {self.client.base_url} sent a stream it cannot read "
                    f"({type(e).__name__}: {str(e)[:200]})",
                    retryable=True,
                ) from e

        try:
            try:
                resp = create(params)
            except openai.BadRequestError as e:
                other = _other_limit(e, params)
                if other is None:
                    raise
                # the server named the other parameter: use it from now on
                self._completion_tokens = other == "max_completion_tokens"
                params[other] = params.pop("max_tokens" if other == "max_completion_tokens" else "max_completion_tokens")
                resp = create(params)
        except openai.APIStatusError as e:
            raise _status_error(e, self.name) from e
        except openai.APITimeoutError as e:
            what = "without a byte of the answer" if streaming else "without the whole answer"
            raise ModelError(
                f"no answer from the OpenAI-compatible API at {self.client.base_url} for {timeout.read:g} s "
                f"{what} ({self.name}); "
                f"the task's wall budget or `model_timeout.{'idle_s' if streaming else 'response_s'}` in "
                f".github/gitops-agent.yml "
                "bounds the wait",
                retryable=True,
            ) from e
        except openai.APIConnectionError as e:
            raise ModelError(f"cannot reach the OpenAI-compatible API at {self.client.base_url}: {e}", retryable=True) from e
        except openai.OpenAIError as e:
            raise ModelError(f"OpenAI-compatible API call failed: {type(e).__name__}: {e}") from e
        latency_ms = int((time.monotonic() - start) * 1000)
        if resp.usage is not None and resp.usage.prompt_tokens and not getattr(resp, "cut", None):
            self.fit.learn(params, resp.usage.prompt_tokens)
        return _to_response(resp, latency_ms, self.name)


def _messages_of(m: Message) -> list[dict[str, Any]]:
    if m.role == "assistant":
        texts = [b.text for b in m.content if isinstance(b, TextBlock) and b.text]
        calls = [
            {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": _arguments(b.input)}}
            for b in m.content
            if isinstance(b, ToolUseBlock)
        ]
        msg: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
        if calls:
            msg["tool_calls"] = calls
        elif msg["content"] is None:
            msg["content"] = ""
        return [msg]
    # user: tool results first (they must directly follow the assistant's tool_calls)
    out: list[dict[str, Any]] = []
    for b in m.content:
        if isinstance(b, ToolResultBlock):
            content = b.content
            if b.is_error and not content.lower().startswith("error"):
                content = "Error: " + content
            out.append({"role": "tool", "tool_call_id": b.tool_use_id, "content": content})
    texts = [b.text for b in m.content if isinstance(b, TextBlock) and b.text]
    if texts or not out:
        out.append({"role": "user", "content": "\n".join(texts)})
    return out


def _arguments(inp: dict[str, Any]) -> str:
    # Send back what the model wrote when it was not valid JSON, so it can see its mistake.
    if set(inp) == {"_raw"} and isinstance(inp["_raw"], str):
        return inp["_raw"]
    return json.dumps(inp, ensure_ascii=False)


def parse_arguments(text: str | None) -> dict[str, Any]:
    """Tool call arguments as a dict; anything that is not a JSON object -> {"_raw": text}."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_raw": text}


def _to_response(resp: Any, latency_ms: int, fallback_model: str) -> ModelResponse:
    blocks: list[Block] = []
    stop: str | None = None
    if resp.choices:
        choice = resp.choices[0]
        msg = choice.message
        if msg.content:
            blocks.append(TextBlock(text=msg.content))
        for n, call in enumerate(msg.tool_calls or []):
            fn = getattr(call, "function", None)
            if fn is None:
                continue
            blocks.append(ToolUseBlock(id=call.id or f"call_{n}", name=fn.name, input=parse_arguments(fn.arguments)))
        stop = _STOP.get(choice.finish_reason or "", choice.finish_reason)
    u = resp.usage
    usage = Usage()
    if u is not None:
        details = getattr(u, "prompt_tokens_details", None)
        cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
        prompt = u.prompt_tokens or 0
        usage = Usage(input_tokens=max(0, prompt - cached), cache_read_tokens=cached, output_tokens=u.completion_tokens or 0)
    return ModelResponse(content=blocks, stop_reason=stop, usage=usage, model=resp.model or fallback_model, latency_ms=latency_ms)


_REASONING = re.compile(r"^(o\d|gpt-5)")  # OpenAI models that take only max_completion_tokens


def _other_limit(e: openai.BadRequestError, params: dict[str, Any]) -> str | None:
    """The output-limit parameter a 400 asks for instead of the one sent, if that is what it says."""
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    text = f"{err.get('message', '')} {err.get('param', '')} {e.message}"
    if "max_tokens" in params and "max_completion_tokens" in text:
        return "max_completion_tokens"
    if "max_completion_tokens" in params and "max_tokens" in text.replace("max_completion_tokens", ""):
        return "max_tokens"
    return None


def _status_error(e: openai.APIStatusError, model: str) -> ModelError:
    text = ""
    code = ""
    body = e.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            text = str(err.get("message") or "")
            # llama.cpp sends {"code": 400, "type": "exceed_context_size_error"}: the status once, then what it means
            code = next((str(c) for c in (err.get("code"), err.get("type")) if c and str(c) != str(e.status_code)), "")
        elif isinstance(err, str):
            text = err
    text = text or e.message
    msg = f"OpenAI-compatible API {e.status_code}{' ' + code if code else ''}: {text} (model {model})"
    if e.status_code == 401:
        return FatalModelError(msg + " - check OPENAI_API_KEY", status=401)
    if e.status_code in (400, 402, 403, 404, 413, 422):
        return FatalModelError(msg, status=e.status_code)
    if e.status_code == 429 and (code == "insufficient_quota" or _LIMIT_RE.search(text)):
        return FatalModelError(msg, status=429)
    response = getattr(e, "response", None)
    return ModelError(msg, status=e.status_code, retry_after=retry_after_of(getattr(response, "headers", None)), retryable=True)
