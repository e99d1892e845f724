"""A stand-in for llama.cpp's llama-server, for the serve-local tests (the real one is built by
the `local` extra): the same flags, /health answering 503 while it "loads", then 200, and
/v1/models stating the slot's context as llama-server does. `--model` naming a file that
contains CRASH makes it exit at once with an error, as llama-server does on a bad model file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--ctx-size", type=int)
    p.add_argument("--parallel", type=int)
    p.add_argument("--alias")
    p.add_argument("--threads")
    p.add_argument("--no-kv-unified", action="store_true")
    p.add_argument("--jinja", action="store_true")
    p.add_argument("--no-webui", action="store_true")
    p.add_argument("--chat-template-file")
    p.add_argument("--metrics", action="store_true")
    a = p.parse_args()
    if b"CRASH" in Path(a.model).read_bytes()[:100]:
        print("gguf_init_from_file_impl: invalid magic characters: 'CRAS', expected 'GGUF'", flush=True)
        sys.exit(1)
    print(f"main: loading model {a.model}", flush=True)
    ready_at = time.monotonic() + 0.5
    slot_ctx = a.ctx_size // a.parallel

    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):  # noqa: ANN002
            pass

        def do_GET(self) -> None:
            if self.path == "/health":
                code, body = (
                    (200, {"status": "ok"})
                    if time.monotonic() > ready_at
                    else (503, {"error": {"code": 503, "message": "Loading model"}})
                )
            elif self.path == "/v1/models":
                code, body = (
                    200,
                    {
                        "object": "list",
                        "data": [
                            {
                                "id": a.alias,
                                "object": "model",
                                "created": 0,
                                "owned_by": "llamacpp",
                                "meta": {"n_ctx": slot_ctx, "n_ctx_train": 32768},
                            }
                        ],
                    },
                )
            else:
                code, body = 404, {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    ThreadingHTTPServer((a.host, a.port), H).serve_forever()


if __name__ == "__main__":
    main()
