"""A child process that renders templates someone else wrote (see gitops_agent/templates/prompts.py).

The step process holds the GitHub token and the model keys; a template from a branch is data.
So it renders here: a process started from the agent's own code, whose address space is capped
(``CHILD_MEMORY_MB`` above what it uses when it starts) and which the parent kills when a render
takes longer than ``RENDER_SECONDS``. A render that runs out of memory or time ends this child;
the parent says so and starts another for the next render.

Wire format (stdin/stdout, each message an 8-byte big-endian length, then the bytes): the
parent sends a pickle of ``(dirs, name, ctx)``, the child answers JSON ``{"ok": text}`` or
``{"error": kind, "message": text}``. The parent never unpickles what the child sends.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SecurityError

from gitops_agent.templates.env import CHILD_MEMORY_MB, RENDER_SECONDS, RenderLimit, bounded_render, template_env

CHILD_CPU_SECONDS = 600

_HEADER = struct.Struct(">Q")
_MAX_REPLY = 64 * 2**20


# ----------------------------------------------------------------------------- the child


def _read_exact(f, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _cap_resources() -> None:
    """Memory above what the child uses now; CPU for a long life of renders (each takes
    milliseconds), so a render the parent can no longer kill still ends; no core file."""
    with open("/proc/self/statm", "rb") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = vm + CHILD_MEMORY_MB * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    resource.setrlimit(resource.RLIMIT_CPU, (CHILD_CPU_SECONDS, CHILD_CPU_SECONDS + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _die_with_parent() -> None:
    """Exit when the parent is gone (killed mid-render, it cannot stop a looping template): a
    thread watches who the parent is; a template loop is Python, so the thread gets its turn."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _answer(dirs: list[str], name: str, ctx: dict[str, Any], envs: dict) -> dict[str, Any]:
    env = envs.get(tuple(dirs))
    if env is None:
        env = envs[tuple(dirs)] = template_env([Path(d) for d in dirs])
    try:
        return {"ok": bounded_render(env.get_template(name), ctx)}
    except jinja2.TemplateNotFound as e:
        return {"error": "notfound", "message": str(e.name)}
    except jinja2.UndefinedError as e:
        return {"error": "undefined", "message": e.message or str(e)}
    except SecurityError as e:
        return {"error": "security", "message": str(e)}
    except jinja2.TemplateError as e:
        return {"error": "template", "message": e.message or str(e)}
    except MemoryError:
        return {"error": "security", "message": f"the template needed more than {CHILD_MEMORY_MB} MiB of memory"}
    except RecursionError:
        return {"error": "security", "message": "the template nests too deeply"}
    except Exception as e:  # noqa: BLE001 - a template that raises is that template's error, said as text
        return {"error": "template", "message": f"{type(e).__name__}: {e}"[:2000]}


def main() -> None:
    _cap_resources()
    _die_with_parent()
    envs: dict = {}
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            (n,) = _HEADER.unpack(_read_exact(stdin, _HEADER.size))
            dirs, name, ctx = pickle.loads(_read_exact(stdin, n))  # from the parent, which is trusted
        except EOFError:
            return
        try:
            reply = json.dumps(_answer(dirs, name, ctx, envs)).encode()
        except MemoryError:
            reply = json.dumps({"error": "security", "message": "the template's output could not be sent"}).encode()
        stdout.write(_HEADER.pack(len(reply)) + reply)
        stdout.flush()


# ----------------------------------------------------------------------------- the parent


class _Child:
    """One worker process, started on first use; a render at a time (a lock)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        root = str(Path(__file__).resolve().parents[2])  # the directory holding the agent package
        boot = f"import sys; sys.path.insert(0, {root!r}); from gitops_agent.templates.worker import main; main()"
        # -I: no environment variables, user site or working directory on the path; an empty
        # environment: the child holds no token and no key
        return subprocess.Popen(
            [sys.executable, "-I", "-c", boot],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin"},
            close_fds=True,
        )

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def render(self, dirs: tuple[Path, ...], name: str, ctx: dict[str, Any]) -> dict[str, Any]:
        request = pickle.dumps(([str(d) for d in dirs], name, ctx))
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self.proc = self._start()
            assert self.proc.stdin is not None and self.proc.stdout is not None
            try:
                self.proc.stdin.write(_HEADER.pack(len(request)) + request)
                self.proc.stdin.flush()
                return self._reply(self.proc.stdout, time.monotonic() + RENDER_SECONDS)
            except TimeoutError:  # (an OSError: first)
                self._kill()
                raise RenderLimit(f"the template took more than {RENDER_SECONDS:g} s to render") from None
            except (EOFError, OSError):
                self._kill()  # out of memory, or killed: the next render gets a new child
                raise RenderLimit(f"the template used more than the {CHILD_MEMORY_MB} MiB a render may") from None

    @staticmethod
    def _reply(out, deadline: float) -> dict[str, Any]:
        fd = out.fileno()
        data = b""

        def read(n: int) -> bytes:
            nonlocal data
            while len(data) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError
                chunk = os.read(fd, max(n - len(data), 1 << 16))
                if not chunk:
                    raise EOFError
                data += chunk
            head, data = data[:n], data[n:]
            return head

        (n,) = _HEADER.unpack(read(_HEADER.size))
        if n > _MAX_REPLY:
            raise EOFError
        return json.loads(read(n))


_CHILD = _Child()


def render_in_child(dirs: tuple[Path, ...], name: str, ctx: dict[str, Any]) -> str:
    """What ``name`` renders to, from the child; the in-process exceptions on failure."""
    reply = _CHILD.render(dirs, name, ctx)
    kind, message = reply.get("error"), str(reply.get("message") or "")
    if kind is None:
        return str(reply.get("ok", ""))
    if kind == "notfound":
        raise jinja2.TemplateNotFound(message)
    if kind == "undefined":
        raise jinja2.UndefinedError(message)
    if kind == "security":
        raise RenderLimit(message)
    raise jinja2.TemplateError(message)


if __name__ == "__main__":  # pragma: no cover - started by _Child
    main()
