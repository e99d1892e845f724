"""A real local HTTP server that speaks the Anthropic Messages API, for tests.

    with FakeAnthropic(responses=[{"content": [{"type": "text", "text": "hi"}]}]) as srv:
        model = AnthropicModel("claude-haiku-4-5", api_key="sk-test", base_url=srv.url)
        ...
        srv.requests[-1].body      # what the SDK sent
        srv.usage_log              # the usage it reported, one dict per answered call

What it does like the real API:
- `POST /v1/messages` (JSON, or SSE when `"stream": true`: message_start, content_block_*,
  text_delta / input_json_delta, ping, message_delta, message_stop) and
  `POST /v1/messages/count_tokens`.
- Validation: 401 authentication_error without `x-api-key` (or with a wrong one when the
  server has `api_key`), 400 invalid_request_error for missing model/max_tokens/messages,
  roles that do not alternate, a first message that is not the user's, tool_result blocks
  that do not answer the previous assistant message's tool_use blocks (and tool_use blocks
  left unanswered), empty text blocks, more than 4 cache_control breakpoints; 404
  not_found_error for models not in `models` (when given). Error bodies are
  `{"type": "error", "error": {"type", "message"}}`, with a `request-id` header.
- Usage: tokens are counted approximately (len(json)/4 per tools/system/message block), and
  prompt caching is emulated: cache_control breakpoints define prefixes (tools, system, then
  messages in order); a prefix seen before in this server's life is a cache read, a new one a
  cache write (if at least `min_cache_tokens`), the rest is input_tokens.

Answers come from the `responses` queue first, then `responder(request_json)`, then a
default text. An answer is a dict `{"content": [blocks], "stop_reason"?: str}`, a list of
blocks, or a plain string (one text block). tool_use blocks without an id get one.

Faults (`faults=[Fault(...)]` or `.fail(Fault(...))`) are used before answers: an HTTP error
with the right error type, `retry-after-ms: 10` by default (so SDK retries are fast), or
`retry-after: N` when `retry_after` is given; `delay` sleeps before answering (or before the
error); `times=None` repeats a fault forever; `mid_stream=True` sends a streaming error event
after message_start.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

DEFAULT_MESSAGES = {
    400: "Invalid request.",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found.",
    429: "Number of request tokens has exceeded your per-minute rate limit.",
    500: "Internal server error",
    503: "Service unavailable",
    529: "Overloaded",
}


@dataclass
class Fault:
    """One injected failure. `status=None` with `delay` only slows the answer down."""

    status: int | None = None
    message: str | None = None
    error_type: str | None = None
    error_code: str | None = None  # goes to error.details.error_code
    retry_after: float | None = None  # seconds, sent as `retry-after`
    retry_after_ms: float | None = 10  # sent as `retry-after-ms` when retry_after is None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = 1  # None: every request until cleared
    mid_stream: bool = False  # streaming requests only: 200, message_start, then an error event


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON (None when not JSON)
    raw: bytes = b""
    time: float = 0.0


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        error_code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.param = param
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        self.headers = headers or {}
        self.error_code = error_code


def approx_tokens(obj: Any) -> int:
    """About 4 characters per token of the object's compact JSON (strings count as themselves)."""
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return max(1, math.ceil(len(text) / 4))


def _strip_cache_control(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip_cache_control(v) for k, v in obj.items() if k != "cache_control"}
    if isinstance(obj, list):
        return [_strip_cache_control(v) for v in obj]
    return obj


def split_json(text: str, parts: int = 3) -> list[str]:
    """Split a string into `parts` roughly equal non-empty chunks (fewer if it is short)."""
    if not text:
        return [""]
    parts = max(1, min(parts, len(text)))
    size = math.ceil(len(text) / parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


class _Base:
    """Server plumbing shared by the fake Anthropic and OpenAI servers."""

    def __init__(
        self,
        *,
        responder: Callable[[dict], Any] | None = None,
        responses: Iterable[Any] = (),
        faults: Iterable[Fault] = (),
        api_key: str | None = None,
        models: Iterable[str] | None = None,
        min_cache_tokens: int = 1024,
    ) -> None:
        self.responder = responder
        self.responses: deque[Any] = deque(responses)
        self.faults: deque[Fault] = deque(faults)
        self.api_key = api_key
        self.models = set(models) if models is not None else None
        self.min_cache_tokens = min_cache_tokens
        self.requests: list[RecordedRequest] = []
        self.lookups: list[RecordedRequest] = []
        # the API refuses a max_tokens above a model's output limit (older models' limits are low)
        self.max_output = {"claude-3-haiku": 4096, "claude-3-5-haiku": 8192, "claude-3-5-sonnet": 8192, "claude-opus-4-1": 32000}
        self.models_api = True  # False: a stand-in that speaks only the Messages API (404 elsewhere)
        self.usage_log: list[dict[str, Any]] = []
        self.cache: set[str] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "_Base":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # keep-alive + small writes: no 40 ms delayed-ACK stalls
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            def do_GET(self) -> None:
                fake._handle(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that hung up (timeouts, shutdown) is not worth a traceback.
                import sys

                exc = sys.exc_info()[1]
                if isinstance(exc, (OSError, ValueError)):
                    return
                super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -------------------------------------------------------------------------

    def push(self, *responses: Any) -> None:
        with self.lock:
            self.responses.extend(responses)

    def fail(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def clear_cache(self) -> None:
        with self.lock:
            self.cache.clear()

    def total_usage(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for u in self.usage_log:
            for k, v in u.items():
                if isinstance(v, int):
                    out[k] = out.get(k, 0) + v
        return out

    def _next_fault(self) -> Fault | None:
        with self.lock:
            if not self.faults:
                return None
            f = self.faults[0]
            if f.times is not None:
                f.times -= 1
                if f.times <= 0:
                    self.faults.popleft()
            return f

    def _next_answer(self, body: dict) -> Any:
        with self.lock:
            if self.responses:
                return self.responses.popleft()
        if self.responder is not None:
            return self.responder(body)
        return None

    def sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # -- HTTP ------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        headers = {k.lower(): v for k, v in h.headers.items()}
        rec = RecordedRequest(method=h.command, path=h.path, headers=headers, body=body, raw=raw, time=time.time())
        with self.lock:  # model look-ups (a client's pre-flight) are kept apart from the calls
            (self.lookups if h.command == "GET" else self.requests).append(rec)
        try:
            self.route(h, rec)
        except ApiError as e:
            self.send_error_json(h, e)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def route(self, h: BaseHTTPRequestHandler, rec: RecordedRequest) -> None:  # pragma: no cover
        raise NotImplementedError

    def error_body(self, e: ApiError) -> dict:
        err: dict[str, Any] = {"type": e.error_type, "message": e.message}
        if e.error_code:
            err["details"] = {"error_code": e.error_code}
        return {"type": "error", "error": err}

    def send_json(self, h: BaseHTTPRequestHandler, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        try:
            h.send_response(status)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(data)))
            h.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send_error_json(self, h: BaseHTTPRequestHandler, e: ApiError) -> None:
        self.send_json(h, e.status, self.error_body(e), e.headers)

    def fault_error(self, f: Fault) -> ApiError:
        assert f.status is not None
        headers = dict(f.headers)
        if f.retry_after is not None:
            headers.setdefault("retry-after", f"{f.retry_after:g}")
        elif f.retry_after_ms is not None:
            headers.setdefault("retry-after-ms", f"{f.retry_after_ms:g}")
        return ApiError(f.status, f.message or DEFAULT_MESSAGES.get(f.status, "Error"), f.error_type, headers, f.error_code)

    # SSE with chunked transfer encoding
    def start_sse(self, h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("content-type", "text/event-stream; charset=utf-8")
        h.send_header("cache-control", "no-cache")
        h.send_header("transfer-encoding", "chunked")
        h.send_header("request-id", "req_" + uuid.uuid4().hex[:24])
        h.end_headers()

    def send_chunk(self, h: BaseHTTPRequestHandler, text: str) -> None:
        data = text.encode()
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()

    def end_sse(self, h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


class FakeAnthropic(_Base):
    """See the module docstring. `stream_delay` sleeps between SSE events."""

    DEFAULT_TEXT = "Hello from the fake Anthropic server."

    def __init__(self, *, stream_delay: float = 0.0, require_version: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stream_delay = stream_delay
        self.require_version = require_version

    # -- validation ------------------------------------------------------------------------

    def check_auth(self, rec: RecordedRequest) -> None:
        key = rec.headers.get("x-api-key")
        auth = rec.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        given = key or token
        if not given:
            raise ApiError(401, "x-api-key header is required")
        if self.api_key is not None and given != self.api_key:
            raise ApiError(401, "invalid x-api-key")
        if self.require_version and not rec.headers.get("anthropic-version"):
            raise ApiError(400, "anthropic-version: header is required")

    def validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise ApiError(400, "Request body must be a JSON object")
        for f in ("model", "max_tokens", "messages"):
            if f not in body:
                raise ApiError(400, f"{f}: Field required")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            raise ApiError(400, "max_tokens: Input should be greater than or equal to 1")
        limit = next((n for k, n in self.max_output.items() if str(body["model"]).startswith(k)), None)
        if limit is not None and isinstance(body.get("max_tokens"), int) and body["max_tokens"] > limit:
            raise ApiError(
                400,
                f"max_tokens: {body['max_tokens']} > {limit}, which is the maximum allowed number of output "
                f"tokens for {body['model']}",
            )
        if self.models is not None and body["model"] not in self.models:
            raise ApiError(404, f"model: {body['model']}")
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ApiError(400, "messages: at least one message is required")
        tools = body.get("tools") or []
        names = set()
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or "name" not in t or "input_schema" not in t:
                raise ApiError(400, f"tools.{i}: name and input_schema are required")
            if t["name"] in names:
                raise ApiError(400, f"tools: Tool names must be unique. Duplicate: {t['name']}")
            names.add(t["name"])
        system = body.get("system")
        if system is not None and not isinstance(system, str):
            for i, b in enumerate(system):
                if b.get("type") != "text":
                    raise ApiError(400, f"system.{i}.type: Input should be 'text'")
                if not b.get("text"):
                    raise ApiError(400, f"system.{i}: text content blocks must be non-empty")
        prev_tool_uses: list[str] = []
        for i, m in enumerate(msgs):
            role = m.get("role")
            if role not in ("user", "assistant"):
                raise ApiError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if i == 0 and role != "user":
                raise ApiError(400, 'messages: first message must use the "user" role')
            if i > 0 and role == msgs[i - 1].get("role"):
                raise ApiError(400, 'messages: roles must alternate between "user" and "assistant"')
            content = m.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not isinstance(blocks, list) or not blocks:
                raise ApiError(400, f"messages.{i}: content must be a non-empty string or list of blocks")
            results: list[str] = []
            uses: list[str] = []
            for j, b in enumerate(blocks):
                kind = b.get("type")
                if kind == "text":
                    if not b.get("text") or (role == "assistant" and i == len(msgs) - 1 and not b["text"].strip()):
                        raise ApiError(400, f"messages.{i}.content.{j}: text content blocks must be non-empty")
                elif kind == "tool_use":
                    if role != "assistant":
                        raise ApiError(400, f"messages.{i}.content.{j}: tool_use blocks are only allowed in assistant messages")
                    if not b.get("id") or not b.get("name") or not isinstance(b.get("input"), dict):
                        raise ApiError(400, f"messages.{i}.content.{j}: tool_use needs id, name and an input object")
                    uses.append(b["id"])
                elif kind == "tool_result":
                    if role != "user":
                        raise ApiError(400, f"messages.{i}.content.{j}: tool_result blocks are only allowed in user messages")
                    tid = b.get("tool_use_id")
                    if tid not in prev_tool_uses:
                        raise ApiError(
                            400,
                            f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {tid}. "
                            "Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",
                        )
                    results.append(tid)
                else:
                    raise ApiError(400, f"messages.{i}.content.{j}.type: unsupported block type {kind!r}")
            if role == "user" and prev_tool_uses:
                missing = [t for t in prev_tool_uses if t not in results]
                if missing:
                    raise ApiError(
                        400,
                        f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                        f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                        "in the next message.",
                    )
            prev_tool_uses = uses if role == "assistant" else []
        n_cc = sum(1 for _ in self._cache_points(body))
        if n_cc > 4:
            raise ApiError(400, f"A maximum of 4 blocks with cache_control may be provided. Found {n_cc}.")

    # -- usage and caching -----------------------------------------------------------------

    def _units(self, body: dict) -> list[tuple[Any, bool]]:
        """The prompt as (unit, has_cache_control) in cache order: tools, system, messages."""
        units: list[tuple[Any, bool]] = []
        for t in body.get("tools") or []:
            units.append(({"tool": _strip_cache_control(t)}, "cache_control" in t))
        system = body.get("system")
        if isinstance(system, str) and system:
            units.append(({"system": system}, False))
        elif isinstance(system, list):
            for b in system:
                units.append(({"system": _strip_cache_control(b)}, "cache_control" in b))
        for i, m in enumerate(body.get("messages") or []):
            content = m.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
            for b in blocks:
                units.append(({"m": i, "role": m.get("role"), "block": _strip_cache_control(b)}, "cache_control" in b))
        return units

    def _cache_points(self, body: dict) -> Iterable[int]:
        for k, (_, cc) in enumerate(self._units(body)):
            if cc:
                yield k

    def compute_usage(self, body: dict) -> dict[str, int]:
        """input / cache_read / cache_write tokens of a request; records new cache prefixes."""
        units = self._units(body)
        sizes = [approx_tokens(u) for u, _ in units]
        cum: list[int] = []
        total = 0
        for s in sizes:
            total += s
            cum.append(total)
        hasher = hashlib.sha256(str(body.get("model")).encode())
        prefix_hash: list[str] = []
        for u, _ in units:
            hasher.update(json.dumps(u, sort_keys=True).encode())
            prefix_hash.append(hasher.copy().hexdigest())
        points = [k for k, (_, cc) in enumerate(units) if cc]
        read = 0
        hit = -1
        with self.lock:
            for k in reversed(points):
                if prefix_hash[k] in self.cache:
                    read, hit = cum[k], k
                    break
            written_to = read
            for k in points:
                if k > hit and cum[k] >= max(1, self.min_cache_tokens):
                    self.cache.add(prefix_hash[k])
                    written_to = cum[k]
        return {
            "input_tokens": total - written_to,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written_to - read,
        }

    # -- answering -------------------------------------------------------------------------

    def route(self, h: BaseHTTPRequestHandler, rec: RecordedRequest) -> None:
        path = rec.path.split("?", 1)[0]
        if h.command == "GET" and path.startswith("/v1/models/") and self.models_api:  # Models API: no tokens, no faults
            self.check_auth(rec)
            name = path.removeprefix("/v1/models/")
            if self.models is not None and name not in self.models:
                raise ApiError(404, f"model: {name}")
            self.send_json(h, 200, {"type": "model", "id": name, "display_name": name, "created_at": "2025-10-01T00:00:00Z"})
            return
        if h.command != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            raise ApiError(404, f"Not found: {h.command} {path}")
        self.check_auth(rec)
        fault = self._next_fault()
        if fault is not None and fault.delay:
            self.sleep(fault.delay)
        if fault is not None and fault.status is not None and not fault.mid_stream:
            raise self.fault_error(fault)
        self.validate(rec.body)
        body: dict = rec.body
        if path == "/v1/messages/count_tokens":
            units = self._units(body)
            self.send_json(h, 200, {"input_tokens": sum(approx_tokens(u) for u, _ in units)})
            return
        content, stop_reason = self._answer(body)
        usage = self.compute_usage(body)
        usage["output_tokens"] = approx_tokens(content)
        with self.lock:
            self.usage_log.append({**usage, "model": body.get("model")})
        msg = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage_obj(usage),
        }
        if body.get("stream"):
            self._stream(h, msg, fault if fault is not None and fault.mid_stream else None)
        else:
            self.send_json(h, 200, msg)

    def _usage_obj(self, usage: dict[str, int]) -> dict[str, Any]:
        return {
            **usage,
            "cache_creation": {"ephemeral_5m_input_tokens": usage["cache_creation_input_tokens"], "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard",
        }

    def _answer(self, body: dict) -> tuple[list[dict], str]:
        ans = self._next_answer(body)
        if ans is None:
            ans = self.DEFAULT_TEXT
        stop = None
        if isinstance(ans, str):
            content = [{"type": "text", "text": ans}]
        elif isinstance(ans, list):
            content = ans
        else:
            content = ans.get("content", [])
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            stop = ans.get("stop_reason")
        out = []
        for b in content:
            b = dict(b)
            if b.get("type") == "tool_use":
                b.setdefault("id", "toolu_" + uuid.uuid4().hex[:24])
                b.setdefault("input", {})
            elif b.get("type") == "text":
                b.setdefault("text", "")
            out.append(b)
        if stop is None:
            stop = "tool_use" if any(b.get("type") == "tool_use" for b in out) else "end_turn"
        return out, stop

    def _stream(self, h: BaseHTTPRequestHandler, msg: dict, fault: Fault | None) -> None:
        def event(name: str, data: dict) -> None:
            self.send_chunk(h, f"event: {name}\ndata: {json.dumps(data)}\n\n")
            if self.stream_delay:
                self.sleep(self.stream_delay)

        try:
            self.start_sse(h)
            usage = msg["usage"]
            start = {**msg, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            event("message_start", {"type": "message_start", "message": start})
            if fault is not None:
                e = self.fault_error(fault)
                event("error", self.error_body(e))
                self.end_sse(h)
                return
            event("ping", {"type": "ping"})
            for i, b in enumerate(msg["content"]):
                if b["type"] == "text":
                    event(
                        "content_block_start",
                        {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                    )
                    for piece in split_json(b["text"], 3):
                        event(
                            "content_block_delta",
                            {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}},
                        )
                elif b["type"] == "tool_use":
                    event(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": i,
                            "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}},
                        },
                    )
                    pieces = [""] + split_json(json.dumps(b["input"]), 4)
                    for piece in pieces:
                        event(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": i,
                                "delta": {"type": "input_json_delta", "partial_json": piece},
                            },
                        )
                else:
                    event("content_block_start", {"type": "content_block_start", "index": i, "content_block": b})
                event("content_block_stop", {"type": "content_block_stop", "index": i})
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
            event("message_stop", {"type": "message_stop"})
            self.end_sse(h)
        except (BrokenPipeError, ConnectionResetError):
            pass
