"""Sandbox backends: run the model's code with no credentials, inside limits, in a working tree.

Backends, best first (DESIGN.md, "Sandbox"):

* ``docker``      -- not implemented yet (``DockerSandbox`` is a stub that raises).
* ``bubblewrap``  -- ``bwrap``: read-only system, writable working tree, private ``/tmp`` and
  ``HOME``, new PID/IPC/UTS/network namespaces (no network unless asked), all capabilities
  dropped, plus rlimits.
* ``subprocess``  -- a plain child process with rlimits and a scrubbed environment. It cannot
  stop network access or writes outside the working tree; it is the fallback of last resort.

Every backend shares the same output handling: stdout and stderr go to temporary *files* (not
pipes, so a flood of output cannot exhaust memory), then only a head and a tail of each are read
back (``max_output_chars`` per stream), known secret values and common token shapes are
redacted, and on timeout the whole process group is killed with SIGKILL.
"""

from __future__ import annotations

import logging
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import SandboxError
from .seams import Sandbox
from .state import Observation

log = logging.getLogger(__name__)

Backend = Literal["auto", "subprocess", "bubblewrap", "docker"]

# Preference order of real backends for "auto".
BACKEND_ORDER: tuple[str, ...] = ("docker", "bubblewrap", "subprocess")


class SandboxLimits(BaseModel):
    """Limits and options for one sandbox; every action run in it gets the same limits."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(120, gt=0, description="Wall-clock seconds per action before the process group is killed.")
    memory_mb: int = Field(2048, ge=16, description="Address-space limit per process in MiB (RLIMIT_AS).")
    cpu_s: int | None = Field(
        None, ge=1, description="CPU seconds per process (RLIMIT_CPU); None means the action's timeout + 5."
    )
    file_size_mb: int = Field(256, ge=1, description="Largest file a process may write, in MiB (RLIMIT_FSIZE).")
    max_processes: int = Field(
        256,
        ge=1,
        description="Processes per user (RLIMIT_NPROC). Not enforced for root; bubblewrap's PID namespace is the real guard.",
    )
    max_output_chars: int = Field(
        12000, ge=200, description="Characters of stdout and of stderr (each) given back: head and tail halves."
    )
    network: bool = Field(False, description="Allow network access (only backends with a network namespace can deny it).")
    backend: Backend = Field("auto", description="Which backend to use; 'auto' picks the best available.")
    extra_ro_paths: list[tuple[str, str]] = Field(
        default_factory=list,
        description="(host path, path inside) pairs mounted read-only where the backend can; "
        "the subprocess backend only lists them in $SANDBOX_RO_PATHS.",
    )
    python: str = Field(default_factory=lambda: sys.executable, description="Python interpreter used by run_python.")
    # brain tools (agent/brainbranch.py): helper modules the model's code may import
    python_path: list[str] = Field(
        default_factory=list,
        description="Directories put on PYTHONPATH inside the sandbox (trusted helper modules; mount them read-only "
        "with extra_ro_paths where they are not visible).",
    )


# --------------------------------------------------------------------------------------------
# Environment


SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def scrubbed_env(
    extra: dict[str, str] | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
    tmpdir: str | os.PathLike[str] | None = None,
    python: str | None = None,
) -> dict[str, str]:
    """A fresh environment built from an allow-list: nothing is copied from ``os.environ``.

    ``home``/``tmpdir`` default to a new private temporary directory (the caller owns it).
    ``python``'s directory (default: this interpreter's) goes first on PATH so that ``python``
    in a shell command is the same interpreter, with the same packages. ``extra`` adds
    variables the caller knows are safe (e.g. AGENT_STEP_DIR); a name that looks like a
    credential is refused.
    """
    if home is None or tmpdir is None:
        private = tempfile.mkdtemp(prefix="agent-sandbox-home-")
        home = home if home is not None else private
        tmpdir = tmpdir if tmpdir is not None else private
    py_dir = os.path.dirname(os.path.abspath(python or sys.executable))
    path_dirs = [py_dir] + [d for d in SANE_PATH.split(":") if d != py_dir]
    env = {
        "PATH": ":".join(path_dirs),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "TERM": "dumb",
        "HOME": str(home),
        "TMPDIR": str(tmpdir),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        "MPLBACKEND": "Agg",
    }
    for k, v in (extra or {}).items():
        if SECRET_NAME_RE.search(k):
            raise SandboxError(f"refusing to pass {k!r} into the sandbox: the name looks like a credential")
        if k == "PYTHONPATH":
            raise SandboxError("refusing to set PYTHONPATH in the sandbox")
        env[str(k)] = str(v)
    return env


# --------------------------------------------------------------------------------------------
# Redaction

REDACTED = "[REDACTED]"
_TOKEN_PATTERNS: list[re.Pattern[str]] = [
    # PEM private keys (a block cut off by truncation is masked to the end of the text).
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL
    ),
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"(?<![A-Za-z0-9])sk-ant-[A-Za-z0-9_\-]{10,}"),
    re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
]


def env_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """Values (8+ characters) of variables whose names look like credentials."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items() if SECRET_NAME_RE.search(k) and len(v) >= 8]


def redact(text: str, secrets: list[str]) -> str:
    """Replace each known secret value (8+ characters) and common token shapes with [REDACTED]."""
    if not text:
        return text
    # Longest first, so a secret that contains another is masked whole.
    for s in sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True):
        if s in text:
            text = text.replace(s, REDACTED)
    for pat in _TOKEN_PATTERNS:
        text = pat.sub(REDACTED, text)
    return text


# --------------------------------------------------------------------------------------------
# Output


def elision_marker(n: int, unit: str = "characters") -> str:
    return f"\n[... {n} {unit} elided ...]\n"


def truncate_middle(text: str, max_chars: int) -> tuple[str, bool]:
    """Keep the head and tail halves of ``text`` with a marker between; (text, truncated)."""
    if len(text) <= max_chars:
        return text, False
    head = max_chars // 2
    tail = max_chars - head
    return text[:head] + elision_marker(len(text) - head - tail) + text[-tail:], True


# Extra bytes read past each cut so that a secret straddling the cut is still redacted whole.
_REDACT_MARGIN = 1024


def read_output(path: str | os.PathLike[str], max_chars: int, secrets: list[str]) -> tuple[str, bool]:
    """Read a (possibly huge) output file as head + tail, decoded as UTF-8 and redacted.

    Small files are read whole; large ones only a window at each end (the tail by seeking), so
    100 MB of output costs a few KB of reading. Returns (text, truncated).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= 4 * max_chars + 4 * _REDACT_MARGIN:
            text = redact(f.read().decode("utf-8", errors="replace"), secrets)
            return truncate_middle(text, max_chars)
        head = max_chars // 2
        tail = max_chars - head
        head_win = f.read(4 * head + _REDACT_MARGIN).decode("utf-8", errors="replace")
        f.seek(size - (4 * tail + _REDACT_MARGIN))
        tail_win = f.read().decode("utf-8", errors="replace")
    head_kept_bytes = len(head_win[:head].encode("utf-8", errors="replace"))
    tail_kept_bytes = len(tail_win[-tail:].encode("utf-8", errors="replace"))
    head_text = redact(head_win, secrets)[:head]
    tail_text = redact(tail_win, secrets)[-tail:]
    elided = max(size - head_kept_bytes - tail_kept_bytes, 0)
    return head_text + elision_marker(elided, "bytes") + tail_text, True


# --------------------------------------------------------------------------------------------
# Process backends


def _rlimit_preexec(limits: SandboxLimits, timeout: float):
    """Build the preexec_fn that applies rlimits in the child (values computed up front)."""
    cpu = limits.cpu_s if limits.cpu_s is not None else math.ceil(timeout) + 5
    settings = [
        (resource.RLIMIT_AS, limits.memory_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * 1024 * 1024),
        # NOTE: RLIMIT_NPROC is not enforced for root (or any process with CAP_SYS_RESOURCE /
        # CAP_SYS_ADMIN): as root this line does nothing. The bubblewrap backend's PID namespace
        # (everything dies with the sandbox) plus the wall-clock timeout is the real fork-bomb
        # guard; the subprocess backend has only the timeout.
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_CORE, 0),
    ]
    cpu_hard = cpu + 5  # soft limit sends SIGXCPU, the hard one SIGKILL

    def preexec() -> None:
        for what, value in settings:
            hard = cpu_hard if what == resource.RLIMIT_CPU else value
            try:
                _soft, old_hard = resource.getrlimit(what)
                if old_hard != resource.RLIM_INFINITY:
                    value, hard = min(value, old_hard), min(hard, old_hard)
                resource.setrlimit(what, (value, hard))
            except (ValueError, OSError):
                pass  # cannot lower further / not supported: keep what we have

    return preexec


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_note(code: int | None) -> str:
    if code is None or code >= 0:
        return ""
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hints = {
        "SIGXCPU": " (CPU time limit reached)",
        "SIGXFSZ": " (file size limit reached)",
        "SIGKILL": " (killed; out of memory or CPU hard limit?)",
        "SIGSEGV": " (segmentation fault; out of memory?)",
    }
    return f"\n[process killed by {name}{hints.get(name, '')}]"


class _ProcessSandbox:
    """Shared machinery: private run dir, output files, rlimits, timeout, redaction."""

    name = "process"

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        env: dict[str, str] | None = None,
        secrets: list[str] | None = None,
    ):
        self.limits = limits or SandboxLimits()
        self.extra_env = dict(env or {})
        self.secrets = list(secrets or [])
        scrubbed_env(self.extra_env, home="/", tmpdir="/")  # validate the extra names now
        self.shell = shutil.which("bash") or "/bin/sh"

    # -- public API (the Sandbox protocol) ---------------------------------------------------

    def run_python(self, code: str, cwd: Path, timeout: float | None = None) -> Observation:
        return self._run("python", code, cwd, timeout)

    def run_shell(self, command: str, cwd: Path, timeout: float | None = None) -> Observation:
        return self._run("shell", command, cwd, timeout)

    # -- backend hooks --------------------------------------------------------------------------

    def _argv(self, inner: list[str], cwd: Path, run_dir: Path, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """Wrap the inner command; returns (argv, env for Popen)."""
        raise NotImplementedError

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        """(code dir, HOME, TMPDIR) as seen by the sandboxed process."""
        raise NotImplementedError

    # -- machinery ------------------------------------------------------------------------------

    def _run(self, kind: str, source: str, cwd: Path, timeout: float | None) -> Observation:
        limits = self.limits
        timeout = float(timeout) if timeout is not None else float(limits.timeout_s)
        if timeout <= 0:
            raise SandboxError(f"timeout must be positive, got {timeout}")
        cwd = Path(cwd).resolve()
        if not cwd.is_dir():
            raise SandboxError(f"working directory {cwd} does not exist")

        run_dir = Path(tempfile.mkdtemp(prefix="agent-sandbox-"))
        try:
            for sub in ("code", "home", "tmp"):
                (run_dir / sub).mkdir()
            code_dir, home, tmpdir = self._paths(run_dir)
            if kind == "python":
                (run_dir / "code" / "cell.py").write_text(source, encoding="utf-8")
                inner = [limits.python, "-u", f"{code_dir}/cell.py"]
            else:
                inner = [self.shell, "-c", source]
            env = scrubbed_env(self.extra_env, home=home, tmpdir=tmpdir, python=limits.python)
            if limits.python_path:  # set by the caller from its config, never from the model
                env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in limits.python_path)
            argv, popen_env = self._argv(inner, cwd, run_dir, env)
            return self._execute(argv, popen_env, cwd, run_dir, timeout)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def _execute(self, argv: list[str], env: dict[str, str], cwd: Path, run_dir: Path, timeout: float) -> Observation:
        limits = self.limits
        out_path, err_path = run_dir / "stdout", run_dir / "stderr"
        start = time.monotonic()
        timed_out = False
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=str(cwd),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=_rlimit_preexec(limits, timeout),
                    close_fds=True,
                )
            except OSError as e:
                raise SandboxError(f"{self.name} sandbox could not start {argv[0]!r}: {e}") from e
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)  # the leader is not reaped yet, so its pgid is still ours
                proc.wait()
            # Background processes left behind (`cmd &`) die with the action.
            _kill_group(proc.pid)
        duration_ms = int((time.monotonic() - start) * 1000)

        secrets = env_secrets() + self.secrets
        stdout, t1 = read_output(out_path, limits.max_output_chars, secrets)
        stderr, t2 = read_output(err_path, limits.max_output_chars, secrets)
        code = proc.returncode
        if timed_out:
            stderr += f"\n[timed out after {timeout:g} s; the process group was killed]"
        else:
            stderr += _signal_note(code)
        return Observation(
            exit_code=code,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            duration_ms=duration_ms,
            truncated=t1 or t2,
            backend=self.name,
        )


class SubprocessSandbox(_ProcessSandbox):
    """A plain child process in a new session with rlimits and a scrubbed environment.

    It does not isolate the file system or the network: ``limits.network`` is not enforced,
    and the process can read anything the agent's user can (e.g. /proc/<parent>/environ) --
    redaction of known secret values in the output is the remaining guard.
    """

    name = "subprocess"

    def __init__(self, limits: SandboxLimits | None = None, **kw):
        super().__init__(limits, **kw)
        if not self.limits.network:
            log.debug("subprocess sandbox: network=False is not enforced by this backend")

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        return str(run_dir / "code"), str(run_dir / "home"), str(run_dir / "tmp")

    def _argv(self, inner, cwd, run_dir, env):
        if self.limits.extra_ro_paths:
            env = dict(env)
            env["SANDBOX_RO_PATHS"] = os.pathsep.join(
                f"{inside}={os.path.abspath(host)}" for host, inside in self.limits.extra_ro_paths
            )
        return inner, env


# Paths inside the bubblewrap sandbox.
_BWRAP_HOME = "/tmp/home"
_BWRAP_CODE = "/tmp/.agent-code"


def _python_roots(python: str) -> list[str]:
    """Directories the interpreter needs: its virtualenv, its installation, and (for the
    interpreter running us) the prefixes and site-packages in use."""
    roots = set()
    for exe in {python, os.path.realpath(python)}:
        roots.add(os.path.dirname(os.path.dirname(os.path.abspath(exe))))  # <prefix>/bin/python -> <prefix>
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
        roots |= {p for p in sys.path if p and os.path.isdir(p)}
    return sorted(roots)


def _under_tmp(paths: list[str]) -> list[str]:
    """The paths under /tmp, minus those inside another one of them."""
    tmp = [os.path.realpath(p) for p in paths if os.path.realpath(p).startswith("/tmp/") and os.path.exists(p)]
    tmp = sorted(set(tmp))
    return [p for p in tmp if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in tmp)]


def _bwrap_base_args(network: bool) -> list[str]:
    args = [
        "bwrap",
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--tmpfs", "/tmp",
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--hostname", "sandbox",
    ]
    if network:
        args.append("--share-net")
    return args


class BubblewrapSandbox(_ProcessSandbox):
    """``bwrap``: read-only system, the working tree writable, private tmpfs /tmp and HOME,
    new namespaces (PID, IPC, UTS, cgroup, user, network unless ``limits.network``), all
    capabilities dropped, environment cleared and replaced by the scrubbed one, plus rlimits.

    On timeout the outer ``bwrap`` and its PID-namespace init are killed, which takes down every
    process inside the namespace (including ones that called setsid).
    """

    name = "bubblewrap"

    def __init__(self, limits: SandboxLimits | None = None, **kw):
        super().__init__(limits, **kw)
        self.bwrap = shutil.which("bwrap")
        if not self.bwrap:
            raise SandboxError("bubblewrap backend needs the 'bwrap' program, which is not on PATH")
        self.shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        return _BWRAP_CODE, _BWRAP_HOME, "/tmp"

    def _argv(self, inner, cwd, run_dir, env):
        if cwd == Path("/") or Path("/tmp") == cwd:
            raise SandboxError(f"bubblewrap sandbox cannot use {cwd} as the working tree (it would hide /tmp); use a subdirectory")
        args = _bwrap_base_args(self.limits.network)
        args[0] = self.bwrap
        args += ["--dir", _BWRAP_HOME, "--ro-bind", str(run_dir / "code"), _BWRAP_CODE]
        # The private /tmp would hide an interpreter or virtualenv that lives under /tmp (a
        # checkout there, a runner's temp dir): show those read-only again.
        for root in _under_tmp(_python_roots(self.limits.python)):
            args += ["--ro-bind", root, root]
        for host, inside in self.limits.extra_ro_paths:
            host_abs = os.path.abspath(host)
            if not os.path.exists(host_abs):
                raise SandboxError(f"extra read-only path {host_abs} does not exist")
            args += ["--ro-bind", host_abs, inside]
        # The working tree last, so nothing above can hide it (it may itself be under /tmp).
        args += ["--bind", str(cwd), str(cwd), "--chdir", str(cwd), "--clearenv"]
        for k, v in env.items():
            args += ["--setenv", k, v]
        args.append("--")
        return args + inner, env


class DockerSandbox:
    """TODO: run actions in a container (``docker run --network none --read-only``, the
    working tree bind-mounted, limits via --memory/--pids-limit/--cpus). Not implemented yet."""

    name = "docker"
    implemented = False

    def __init__(self, limits: SandboxLimits | None = None, **kw):
        raise SandboxError("docker backend not implemented yet")

    def run_python(self, code: str, cwd: Path, timeout: float | None = None) -> Observation:  # pragma: no cover
        raise SandboxError("docker backend not implemented yet")

    def run_shell(self, command: str, cwd: Path, timeout: float | None = None) -> Observation:  # pragma: no cover
        raise SandboxError("docker backend not implemented yet")


# --------------------------------------------------------------------------------------------
# Choosing a backend


@lru_cache(maxsize=None)
def docker_engine_answers() -> bool:
    """True if a docker engine answers ``docker info`` within a few seconds (cached)."""
    docker = shutil.which("docker")
    if not docker:
        return False
    try:
        r = subprocess.run(
            [docker, "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


@lru_cache(maxsize=None)
def bwrap_works() -> bool:
    """True if ``bwrap`` can start a sandbox with the options this module uses (cached).

    Some hosts have bwrap but forbid the namespaces it needs (e.g. unprivileged user
    namespaces restricted by AppArmor), so a real test run decides.
    """
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False
    true = shutil.which("true") or "/bin/true"
    argv = _bwrap_base_args(network=False)
    argv[0] = bwrap
    try:
        r = subprocess.run(
            argv + ["--", true],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("bwrap test run failed: %s", e)
        return False
    if r.returncode != 0:
        log.debug("bwrap test run failed (%s): %s", r.returncode, r.stderr.decode(errors="replace").strip())
    return r.returncode == 0


def available_backends() -> list[str]:
    """Backends that can run here, best first (docker is listed once it is implemented)."""
    out = []
    if DockerSandbox.implemented and docker_engine_answers():
        out.append("docker")
    if bwrap_works():
        out.append("bubblewrap")
    out.append("subprocess")
    return out


_CLASSES = {"subprocess": SubprocessSandbox, "bubblewrap": BubblewrapSandbox, "docker": DockerSandbox}


def make_sandbox(
    limits: SandboxLimits | None = None,
    *,
    env: dict[str, str] | None = None,
    secrets: list[str] | None = None,
) -> Sandbox:
    """The sandbox ``limits.backend`` asks for ('auto': the best available).

    ``env`` adds safe variables to the scrubbed environment; ``secrets`` adds values to redact
    from outputs (besides credential-looking variables of this process's environment).
    """
    limits = limits or SandboxLimits()
    available = available_backends()
    wanted = limits.backend
    if wanted == "auto":
        wanted = available[0]
    elif wanted not in available:
        if wanted == "docker":
            engine = "a docker engine answers" if docker_engine_answers() else "no docker engine answers here"
            raise SandboxError(
                f"docker backend not implemented yet ({engine}); available: {', '.join(available)}"
            )
        raise SandboxError(f"sandbox backend {wanted!r} is not available here; available: {', '.join(available)}")
    sandbox = _CLASSES[wanted](limits, env=env, secrets=secrets)
    if wanted == "subprocess" and not limits.network:
        log.warning("sandbox: using the subprocess backend; network access and writes outside the working tree are not blocked")
    return sandbox
