"""A real local HTTP server that speaks OpenAI's chat.completions API, for tests.

    with FakeOpenAI(responses=[{"tool_calls": [{"name": "run_python", "arguments": {"code": "1"}}]}]) as srv:
        model = OpenAIModel("gpt-4o-mini", api_key="sk-test", base_url=srv.url + "/v1")
        ...

- `POST /v1/chat/completions`, JSON or SSE (`"stream": true`, with a usage chunk when
  `stream_options.include_usage`), and `GET /v1/models`.
- 401 without `Authorization: Bearer ...` (or with a wrong key when the server has
  `api_key`); 400 for missing model/messages, bad roles, and "tool" messages whose
  tool_call_id does not answer the preceding assistant message's tool_calls (or tool_calls
  left unanswered); 404 for models not in `models` (when given). Error bodies are
  `{"error": {"message", "type", "param", "code"}}`.
- Usage: prompt_tokens ~ len(json)/4 of the tools and each message; automatic prefix caching
  like OpenAI's: the longest message-boundary prefix of at least `min_cache_tokens` seen
  before is reported as `prompt_tokens_details.cached_tokens`.

An answer (from `responses`, then `responder(request_json)`, then a default text) is a
string, or a dict `{"content"?: str, "tool_calls"?: [{"name", "arguments": dict | str,
"id"?}], "finish_reason"?: str}`. `arguments` given as a string is sent as it is (e.g. bad
JSON). Faults are the same `Fault` as the Anthropic fake (`times`, `delay`, `retry_after`).

`context_tokens=N` makes it behave as llama-server started with `-c N`: `GET /v1/models` states
`meta.n_ctx`; a prompt of N tokens or more is refused (400 `exceed_context_size_error`, with
`n_prompt_tokens` and `n_ctx`); an answer stops where the context is full (`finish_reason:
length`), and at `max_tokens` otherwise (then `length` too).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from .anthropic_server import ApiError, Fault, RecordedRequest, _Base, approx_tokens, split_json

__all__ = ["FakeOpenAI", "Fault"]

OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", None),
}


class ContextExceeded(ApiError):
    def __init__(self, prompt: int, n_ctx: int) -> None:
        super().__init__(400, f"request ({prompt} tokens) exceeds the available context size ({n_ctx} tokens), try increasing it")
        self.prompt, self.n_ctx = prompt, n_ctx


class FakeOpenAI(_Base):
    DEFAULT_TEXT = "Hello from the fake OpenAI server."
    context_tokens: int | None = None  # llama-server's -c (see the module's docstring)

    def __init__(
        self, *args: Any, context_tokens: int | None = None, stream_delay: float = 0.0, stream_pieces: int = 3, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.context_tokens = context_tokens
        self.stream_delay = stream_delay  # seconds between SSE chunks (a slow CPU model)
        self.stream_pieces = stream_pieces  # chunks a text or a tool call's arguments is sent in

    # models that refuse `max_tokens` (they take `max_completion_tokens`), as OpenAI's o-series and gpt-5 do
    max_tokens_refused = re.compile(r"^(o\d|gpt-5)")

    def error_body(self, e: ApiError) -> dict:
        if isinstance(e, ContextExceeded):  # llama.cpp's shape
            return {
                "error": {
                    "code": 400,
                    "message": e.message,
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": e.prompt,
                    "n_ctx": e.n_ctx,
                }
            }
        kind, code = OPENAI_ERROR_TYPES.get(e.status, ("server_error", None))
        if e.error_code:
            code = e.error_code
        if e.error_type and e.error_type not in (
            "invalid_request_error",
            "authentication_error",
            "not_found_error",
            "rate_limit_error",
            "api_error",
            "overloaded_error",
            "permission_error",
        ):
            kind = e.error_type
        return {"error": {"message": e.message, "type": kind, "param": e.param, "code": code}}

    def check_auth(self, rec: RecordedRequest) -> None:
        auth = rec.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if self.api_key is not None and auth[7:].strip() != self.api_key:
            raise ApiError(401, "Incorrect API key provided.")

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "We could not parse the JSON body of your request.")
        for f in ("model", "messages"):
            if f not in body:
                raise ApiError(400, f"Missing required parameter: '{f}'.")
        if self.models is not None and body["model"] not in self.models:
            raise ApiError(404, f"The model `{body['model']}` does not exist or you do not have access to it.")
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ApiError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1.")
        pending: list[str] = []
        for i, m in enumerate(msgs):
            role = m.get("role")
            if role not in ("system", "developer", "user", "assistant", "tool"):
                raise ApiError(400, f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'tool'.")
            if role == "tool":
                tid = m.get("tool_call_id")
                if tid not in pending:
                    raise ApiError(
                        400,
                        f"Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                        f"message with 'tool_calls'. (messages[{i}], tool_call_id {tid!r})",
                    )
                pending.remove(tid)
                continue
            if pending:
                raise ApiError(
                    400,
                    "An assistant message with 'tool_calls' must be followed by tool messages responding "
                    f"to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
                    f"{', '.join(pending)}",
                )
            if role == "assistant":
                calls = m.get("tool_calls") or []
                for c in calls:
                    fn = c.get("function") or {}
                    if not c.get("id") or not fn.get("name") or not isinstance(fn.get("arguments"), str):
                        raise ApiError(
                            400, f"messages[{i}].tool_calls: id, function.name and function.arguments (a string) are required"
                        )
                pending = [c["id"] for c in calls]
                if m.get("content") is None and not calls:
                    raise ApiError(400, f"messages[{i}]: assistant content is required unless tool_calls is set")
            elif m.get("content") is None:
                raise ApiError(400, f"Invalid value for 'content': expected a string, got null. (messages[{i}])")
        for i, t in enumerate(body.get("tools") or []):
            if t.get("type") != "function" or not (t.get("function") or {}).get("name"):
                raise ApiError(400, f"tools[{i}]: type 'function' with function.name is required")

    def compute_usage(self, body: dict) -> tuple[int, int]:
        """(prompt_tokens, cached_tokens); records the prefixes of this request."""
        units: list[Any] = [{"tools": body["tools"]}] if body.get("tools") else []
        units += [{"m": m} for m in body["messages"]]
        hasher = hashlib.sha256(str(body.get("model")).encode())
        total = 0
        cached = 0
        seen: list[tuple[str, int]] = []
        with self.lock:
            for u in units:
                hasher.update(json.dumps(u, sort_keys=True).encode())
                total += approx_tokens(u)
                digest = hasher.copy().hexdigest()
                seen.append((digest, total))
                if digest in self.cache and total >= self.min_cache_tokens:
                    cached = total
            for digest, n in seen:
                if n >= max(1, self.min_cache_tokens):
                    self.cache.add(digest)
        return total, cached

    def route(self, h: BaseHTTPRequestHandler, rec: RecordedRequest) -> None:
        path = rec.path.split("?", 1)[0]
        if h.command == "GET" and path == "/v1/models":
            self.check_auth(rec)
            names = sorted(self.models) if self.models is not None else (["local"] if self.context_tokens else [])
            meta = {"meta": {"n_ctx": self.context_tokens, "n_ctx_train": 32768}} if self.context_tokens else {}
            self.send_json(h, 200, {"object": "list", "data": [{"id": m, "object": "model", **meta} for m in names]})
            return
        if h.command != "POST" or path != "/v1/chat/completions":
            raise ApiError(404, f"Unknown request URL: {h.command} {path}.")
        self.check_auth(rec)
        fault = self._next_fault()
        if fault is not None and fault.delay:
            self.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            raise self.fault_error(fault)
        self.validate(rec.body)
        body: dict = rec.body
        if "max_tokens" in body and self.max_tokens_refused.match(str(body.get("model"))):  # as OpenAI's reasoning models do
            raise ApiError(
                400,
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                param="max_tokens",
                error_code="unsupported_parameter",
            )
        prompt, cached = self.compute_usage(body)
        if self.context_tokens and prompt >= self.context_tokens:
            raise ContextExceeded(prompt, self.context_tokens)
        message, finish = self._answer(body)
        completion = approx_tokens({k: v for k, v in message.items() if v is not None})
        cap = body.get("max_tokens") or body.get("max_completion_tokens")
        if self.context_tokens:
            cap = min(cap or self.context_tokens, self.context_tokens - prompt)
        if cap and completion > cap:  # cut off as a real server cuts a generation: mid-text, no tool call
            text = (message.get("content") or "") + "".join(c["function"]["arguments"] for c in message.get("tool_calls") or [])
            message = {"role": "assistant", "content": text[: cap * 4], "refusal": None}
            completion, finish = cap, "length"
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        with self.lock:
            self.usage_log.append({"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached})
        resp_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(h, resp_id, created, body["model"], message, finish, usage if include_usage else None)
            return
        self.send_json(
            h,
            200,
            {
                "id": resp_id,
                "object": "chat.completion",
                "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            },
        )

    def _answer(self, body: dict) -> tuple[dict, str]:
        ans = self._next_answer(body)
        if ans is None:
            ans = self.DEFAULT_TEXT
        if isinstance(ans, str):
            ans = {"content": ans}
        calls = []
        for c in ans.get("tool_calls") or []:
            args = c.get("arguments", {})
            calls.append(
                {
                    "id": c.get("id") or "call_" + uuid.uuid4().hex[:24],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": args if isinstance(args, str) else json.dumps(args)},
                }
            )
        message: dict[str, Any] = {"role": "assistant", "content": ans.get("content"), "refusal": None}
        if calls:
            message["tool_calls"] = calls
        finish = ans.get("finish_reason") or ("tool_calls" if calls else "stop")
        return message, finish

    def _stream(
        self, h: BaseHTTPRequestHandler, resp_id: str, created: int, model: str, message: dict, finish: str, usage: dict | None
    ) -> None:
        def chunk(delta: dict, finish_reason: str | None = None, with_usage: dict | None = None, choices: bool = True) -> None:
            obj: dict[str, Any] = {
                "id": resp_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if choices else [],
            }
            if with_usage is not None:
                obj["usage"] = with_usage
            if self.stream_delay:
                self.sleep(self.stream_delay)
            self.send_chunk(h, f"data: {json.dumps(obj)}\n\n")

        try:
            self.start_sse(h)
            chunk({"role": "assistant", "content": ""})
            for piece in split_json(message.get("content") or "", self.stream_pieces):
                if piece:
                    chunk({"content": piece})
            for i, c in enumerate(message.get("tool_calls") or []):
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": c["id"],
                                "type": "function",
                                "function": {"name": c["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                for piece in split_json(c["function"]["arguments"], self.stream_pieces):
                    chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            chunk({}, finish)
            if usage is not None:
                chunk({}, with_usage=usage, choices=False)
            self.send_chunk(h, "data: [DONE]\n\n")
            self.end_sse(h)
        except (BrokenPipeError, ConnectionResetError):
            pass
