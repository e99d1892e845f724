"""Sandbox backends: run the model's code with no credentials, inside limits, in a working tree.

Backends, in the order ``auto`` picks them:

* ``bubblewrap``  -- ``bwrap``: read-only system, writable working tree, private ``/tmp`` and
  ``HOME``, new PID/IPC/UTS/cgroup/user/network namespaces (no network unless asked), all
  capabilities dropped, dies with its parent, plus rlimits. Places that hold credentials are
  hidden behind empty tmpfs mounts (``hide_paths``: home directories, ``/run`` with the docker
  socket and mounted secrets, the Actions runner's own directory) -- the interpreter and its
  packages are shown again read-only where they live under one of them.
* ``docker``      -- ``docker run --rm --network none --read-only`` with a tmpfs ``/tmp``, the
  working tree bind-mounted at the same path, ``--memory/--cpus/--pids-limit``, ``--cap-drop
  ALL``, no new privileges, the caller's uid:gid, the scrubbed environment; on timeout ``docker
  kill``. It needs an image with ``python3`` and the libraries the code uses (``docker_image``),
  so ``auto`` prefers bubblewrap, which runs the agent's own interpreter.
* ``subprocess``  -- a plain child process with rlimits and a scrubbed environment. It cannot
  stop network access, writes outside the working tree or reads of other processes' files
  (``/proc/<agent pid>/environ`` is readable by the same user): never for untrusted input.
  ``require_isolation`` refuses it (the default on GitHub Actions).

Every backend shares the same output handling: stdout and stderr go to temporary *files* (not
pipes, so a flood of output cannot exhaust memory), then only a head and a tail of each are read
back (``max_output_chars`` per stream), known secret values and common token shapes are
redacted, and on timeout the whole process group is killed with SIGKILL.

Process limits: RLIMIT_NPROC does not apply to root. Where this process may create a ``pids``
cgroup (cgroup v1 ``pids`` hierarchy, or a delegated v2 subtree), each action runs in its own
one with ``pids.max = max_processes`` -- a fork bomb stops there, and every process of the
action (even one that left the process group) is killed when the action ends.
"""

from __future__ import annotations

import ctypes
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
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.core.errors import SandboxError
from agent.core.seams import Sandbox
from agent.core.state import Observation

log = logging.getLogger(__name__)

Backend = Literal["auto", "subprocess", "bubblewrap", "docker"]

# Preference order of real backends for "auto" (bubblewrap first: it runs the agent's own
# interpreter and packages; a docker image has to bring its own).
BACKEND_ORDER: tuple[str, ...] = ("bubblewrap", "docker", "subprocess")
ISOLATING: frozenset[str] = frozenset({"bubblewrap", "docker"})

# Where credentials live on a runner or a workstation: home directories (~/.ssh, ~/.git-credentials,
# ~/.docker/config.json, the runner's .credentials when it is installed there), /run (the docker
# socket -- a unix socket is reachable without a network -- and mounted secrets such as the
# Kubernetes service-account token), and the usual runner install places.
DEFAULT_HIDE_PATHS: tuple[str, ...] = (
    "/home", "/root", "/run", "/var/run", "/mnt", "/media", "/srv",
    "/opt/actions-runner", "/actions-runner", "/etc/shadow", "/etc/gshadow",
)


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
        description="Processes and threads of one action: its own pids cgroup where one can be made (also binds root), "
        "else RLIMIT_NPROC (per user, not enforced for root); docker: --pids-limit.",
    )
    max_output_chars: int = Field(
        12000, ge=200, description="Characters of stdout and of stderr (each) given back: head and tail halves."
    )
    network: bool = Field(False, description="Allow network access (only backends with a network namespace can deny it).")
    backend: Backend = Field("auto", description="Which backend to use; 'auto' picks the best available.")
    require_isolation: bool | None = Field(
        None,
        description="Refuse to run code without an isolating backend (bubblewrap or docker) instead of falling back to "
        "a plain subprocess. None: true for `gitops-agent step` on GitHub Actions (issue text is untrusted), false locally.",
    )
    hide_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HIDE_PATHS),
        description="bubblewrap: directories hidden behind an empty tmpfs (files: behind /dev/null); the Actions "
        "runner's directory and $GITHUB_WORKSPACE are added when set. The interpreter is shown again where it lives.",
    )
    cpus: float = Field(1.0, gt=0, description="docker: CPUs for the container (--cpus).")
    docker_image: str = Field("python:3.12-slim", min_length=1, description="docker: image to run the code in (needs python3, bash, timeout).")
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
    py = python or sys.executable
    # a bare name ("python3", inside a container) adds no directory
    py_dir = os.path.dirname(os.path.abspath(py)) if os.path.isabs(py) else None
    path_dirs = ([py_dir] if py_dir else []) + [d for d in SANE_PATH.split(":") if d != py_dir]
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


# Redaction: one place for it (agent/safety/secrets.py); the old names stay for callers.
from agent.safety.secrets import REDACTED, SECRET_NAME_RE, process_secrets as env_secrets, redact  # noqa: E402,F401


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


_PR_SET_PDEATHSIG = 1


@lru_cache(maxsize=None)
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None


def _rlimit_preexec(limits: SandboxLimits, timeout: float, *, cgroup_procs: str | None = None,
                    die_with_parent: bool = False, rlimits: bool = True):
    """Build the preexec_fn run in the child before exec (values computed up front): join the
    action's pids cgroup, ask for SIGKILL when the parent dies, apply the rlimits."""
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
    libc = _libc() if die_with_parent and sys.platform.startswith("linux") else None

    def preexec() -> None:
        if cgroup_procs is not None:
            # before anything else: every process this one starts is counted (and limited) there
            with open(cgroup_procs, "w") as f:
                f.write(str(os.getpid()))
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if not rlimits:
            return
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


# --------------------------------------------------------------------------------------------
# pids cgroups (a real process limit, also for root)

_CGROUP_PREFIX = "gitops-agent-"


def _own_cgroups() -> dict[str, str]:
    """{controller list or '' (v2): path} of this process, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _id, ctrls, path = line.split(":", 2)
            out[ctrls] = path
    except (OSError, ValueError):
        pass
    return out


def _cgroup_candidates() -> list[Path]:
    own = _own_cgroups()
    cands: list[Path] = []
    for ctrls, path in own.items():
        if "pids" in ctrls.split(","):  # cgroup v1: the pids hierarchy
            for mount in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/pids,cpuset"):
                if os.path.isdir(mount):
                    cands.append(Path(mount + path.rstrip("/")))
                    cands.append(Path(mount))
    if "" in own and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # cgroup v2: a delegated subtree
        base = Path("/sys/fs/cgroup" + own[""].rstrip("/"))
        cands += [base, base.parent]
    seen, out = set(), []
    for c in cands:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


@lru_cache(maxsize=None)
def pids_cgroup_parent() -> str | None:
    """A cgroup directory under which this process can make child cgroups with a working
    ``pids.max`` (probed once, by making one), or None."""
    for parent in _cgroup_candidates():
        if not (parent / "cgroup.procs").exists():
            continue
        if parent.name != "pids" and not (parent / "pids.max").exists() and "pids" not in _read(parent / "cgroup.subtree_control"):
            continue
        probe = parent / f"{_CGROUP_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            probe.mkdir()
        except OSError:
            continue
        try:
            (probe / "pids.max").write_text("8")
            ok = True
        except OSError:
            ok = False
        finally:
            try:
                probe.rmdir()
            except OSError:
                pass
        if ok:
            _remove_stale_cgroups(parent)
            return str(parent)
    return None


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


def _remove_stale_cgroups(parent: Path, older_than_s: float = 600) -> None:
    """Empty cgroups left by a killed agent: its pid (in the name) is gone, or they are old
    (rmdir fails on a cgroup still in use, so a live one is never removed)."""
    now = time.time()
    try:
        for d in parent.iterdir():
            if not (d.name.startswith(_CGROUP_PREFIX) and d.is_dir()):
                continue
            pid = d.name[len(_CGROUP_PREFIX):].split("-", 1)[0]
            dead = pid.isdigit() and not os.path.exists(f"/proc/{pid}")
            if dead or now - d.stat().st_mtime > older_than_s:
                try:
                    d.rmdir()
                except OSError:
                    pass
    except OSError:
        pass


class _PidsCgroup:
    """One action's pids cgroup: ``pids.max`` processes (and threads) at most; ``close()`` kills
    whatever is still in it and removes it."""

    def __init__(self, parent: str, limit: int):
        self.path = Path(parent) / f"{_CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self.path.mkdir()
        try:
            (self.path / "pids.max").write_text(str(int(limit)))
        except OSError:
            self.path.rmdir()
            raise

    @property
    def procs(self) -> str:
        return str(self.path / "cgroup.procs")

    def pids(self) -> list[int]:
        return [int(x) for x in _read(self.path / "cgroup.procs").split() if x.strip().isdigit()]

    def close(self) -> None:
        kill = self.path / "cgroup.kill"  # cgroup v2 (5.14+): kills the whole subtree at once
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                try:
                    self.path.rmdir()
                    return
                except OSError:  # a process just exiting
                    time.sleep(0.01)
                    continue
            if kill.exists():
                try:
                    kill.write_text("1")
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)
        log.warning("sandbox: could not empty and remove cgroup %s", self.path)


def _make_cgroup(limit: int) -> _PidsCgroup | None:
    parent = pids_cgroup_parent()
    if parent is None:
        return None
    try:
        return _PidsCgroup(parent, limit)
    except OSError as e:
        log.debug("sandbox: no pids cgroup for this action: %s", e)
        return None


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

    def _argv(self, inner: list[str], cwd: Path, run_dir: Path, env: dict[str, str], timeout: float) -> tuple[list[str], dict[str, str]]:
        """Wrap the inner command; returns (argv, env for Popen)."""
        raise NotImplementedError

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        """(code dir, HOME, TMPDIR) as seen by the sandboxed process."""
        raise NotImplementedError

    def _python(self) -> str:
        """The interpreter as the sandboxed process runs it."""
        return self.limits.python

    def _preexec(self, timeout: float, cgroup: "_PidsCgroup | None"):
        return _rlimit_preexec(self.limits, timeout, cgroup_procs=cgroup.procs if cgroup else None, die_with_parent=True)

    def _on_timeout(self, proc: subprocess.Popen, argv: list[str]) -> None:
        """Extra clean-up when an action times out (the process group is killed anyway)."""

    def _cgroup(self) -> "_PidsCgroup | None":
        """This action's pids cgroup (max_processes), where one can be made."""
        return _make_cgroup(self.limits.max_processes)

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
                inner = [self._python(), "-u", f"{code_dir}/cell.py"]
            else:
                inner = [self.shell, "-c", source]
            env = scrubbed_env(self.extra_env, home=home, tmpdir=tmpdir, python=self._python())
            if limits.python_path:  # set by the caller from its config, never from the model
                env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in limits.python_path)
            argv, popen_env = self._argv(inner, cwd, run_dir, env, timeout)
            return self._execute(argv, popen_env, cwd, run_dir, timeout)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def _execute(self, argv: list[str], env: dict[str, str], cwd: Path, run_dir: Path, timeout: float) -> Observation:
        limits = self.limits
        out_path, err_path = run_dir / "stdout", run_dir / "stderr"
        start = time.monotonic()
        timed_out = False
        cgroup = self._cgroup()
        try:
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
                        preexec_fn=self._preexec(timeout, cgroup),
                        close_fds=True,
                    )
                except (OSError, subprocess.SubprocessError) as e:
                    raise SandboxError(f"{self.name} sandbox could not start {argv[0]!r}: {e}") from e
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    _kill_group(proc.pid)  # the leader is not reaped yet, so its pgid is still ours
                    self._on_timeout(proc, argv)
                    proc.wait()
                # Background processes left behind (`cmd &`) die with the action.
                _kill_group(proc.pid)
        finally:
            if cgroup is not None:
                cgroup.close()  # and those that left the process group (setsid, double fork)
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
    redaction of known secret values in the output is the remaining guard. Never use it for
    untrusted input (``require_isolation`` refuses it). The child gets SIGKILL when the agent
    dies; its own children only if a pids cgroup is available (see the module docstring).
    """

    name = "subprocess"

    def __init__(self, limits: SandboxLimits | None = None, **kw):
        super().__init__(limits, **kw)
        if not self.limits.network:
            log.debug("subprocess sandbox: network=False is not enforced by this backend")

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        return str(run_dir / "code"), str(run_dir / "home"), str(run_dir / "tmp")

    def _argv(self, inner, cwd, run_dir, env, timeout):
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


def _package_roots(python: str) -> list[str]:
    """Of :func:`_python_roots`, what an interpreter needs to run with its packages -- its
    prefixes and site-packages -- and not any other directory on sys.path (a home directory
    on PYTHONPATH is not shown again from behind ``hide_paths``)."""
    out = []
    for r in _python_roots(python):
        parts = Path(r).parts
        if "site-packages" in parts or "dist-packages" in parts or (Path(r) / "bin").is_dir() or (Path(r) / "pyvenv.cfg").exists():
            out.append(r)
    return out


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def _under(paths: list[str], roots: list[str]) -> list[str]:
    """The existing ``paths`` (resolved) that lie under one of ``roots``, minus those inside
    another one of them."""
    got = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})
    got = [p for p in got if any(_inside(p, r) and p != r.rstrip("/") for r in roots)]
    return [p for p in got if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in got)]


def _under_tmp(paths: list[str]) -> list[str]:
    """The paths under /tmp, minus those inside another one of them."""
    return _under(paths, ["/tmp"])


def _runner_dirs(environ: dict[str, str] | None = None) -> list[str]:
    """On GitHub Actions: the runner's own directory (the parent of ``_work``: .credentials,
    .runner, the job's file commands) and the user's checkout ($GITHUB_WORKSPACE, whose
    .git/config may hold a persisted token)."""
    e = os.environ if environ is None else environ
    out = []
    for var in ("RUNNER_TEMP", "RUNNER_WORKSPACE", "RUNNER_TOOL_CACHE"):
        v = e.get(var)
        if v and os.path.isabs(v):
            parts = Path(v).parts
            if "_work" in parts:
                out.append(str(Path(*parts[: parts.index("_work")])))
    ws = e.get("GITHUB_WORKSPACE")
    if ws and os.path.isabs(ws):
        out.append(ws)
    return sorted(set(out))


def hidden_paths(limits: "SandboxLimits", environ: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(directories, files) bubblewrap hides: ``limits.hide_paths`` plus the runner's own
    directories, resolved, existing, nested ones dropped; never ``/`` or a system directory."""
    keep_visible = {"/", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/proc", "/dev", "/sys", "/tmp", "/var", "/opt"}
    dirs, files = set(), set()
    for p in list(limits.hide_paths) + _runner_dirs(environ):
        if not os.path.isabs(p):
            continue
        real = os.path.realpath(p)
        if real in keep_visible or not os.path.lexists(real):
            continue
        (dirs if os.path.isdir(real) else files).add(real)
    dirs_list = sorted(d for d in dirs if not any(d != q and d.startswith(q + "/") for q in dirs))
    return dirs_list, sorted(f for f in files if not any(f.startswith(q + "/") for q in dirs_list))


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
    Credential places are hidden (``hide_paths``); other processes are invisible (a fresh
    /proc in the new PID namespace: no /proc/<agent pid>/environ).

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

    def _argv(self, inner, cwd, run_dir, env, timeout):
        if cwd == Path("/") or Path("/tmp") == cwd:
            raise SandboxError(f"bubblewrap sandbox cannot use {cwd} as the working tree (it would hide /tmp); use a subdirectory")
        args = _bwrap_base_args(self.limits.network)
        args[0] = self.bwrap
        # Hide where credentials live (home directories, /run with the docker socket and mounted
        # secrets, the runner's directory); a file is hidden behind /dev/null.
        hide_dirs, hide_files = hidden_paths(self.limits)
        for d in hide_dirs:  # empty and (bwrap >= 0.5) read-only
            args += (["--perms", "0555"] if _bwrap_has_perms(self.bwrap) else []) + ["--tmpfs", d]
        for f in hide_files:
            args += ["--ro-bind", "/dev/null", f]
        args += ["--dir", _BWRAP_HOME, "--ro-bind", str(run_dir / "code"), _BWRAP_CODE]
        # The private /tmp or a hidden directory would hide an interpreter or virtualenv that
        # lives there (a checkout under /tmp, a runner's tool cache, ~/.pyenv): show those
        # read-only again.
        for root in _under(_python_roots(self.limits.python), ["/tmp"]) + _under(_package_roots(self.limits.python), hide_dirs):
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


# Paths inside the docker container.
_DOCKER_CODE = "/.agent-code"
_DOCKER_TMP = "/tmp"


class DockerSandbox(_ProcessSandbox):
    """``docker run``: a throwaway container per action (``--rm``), no network (``--network
    none`` unless ``limits.network``), a read-only root file system with a private tmpfs
    ``/tmp`` (also HOME), the working tree bind-mounted read-write at the same path (so paths in
    outputs match), the code file and ``extra_ro_paths`` read-only, ``--memory`` (no swap),
    ``--cpus``, ``--pids-limit``, fsize/cpu/core ulimits, all capabilities dropped, no new
    privileges, the caller's uid:gid (files it writes belong to the agent's user), ``--init``,
    and the scrubbed environment. The command runs under ``timeout -s KILL`` inside, so the
    container ends even if the agent dies; on timeout the agent also ``docker kill``s it.

    The image (``limits.docker_image``) needs ``python3``, ``bash`` and ``timeout``, plus the
    libraries the model's code imports.
    """

    name = "docker"
    implemented = True

    def __init__(self, limits: SandboxLimits | None = None, *, docker: str | None = None, **kw):
        super().__init__(limits, **kw)
        self.docker = docker or shutil.which("docker")
        if not self.docker:
            raise SandboxError("docker backend needs the 'docker' program, which is not on PATH")
        self.shell = "bash"

    def _python(self) -> str:
        return "python3"

    def ensure_image(self, timeout: float = 900) -> None:
        """Pull ``docker_image`` now if the engine does not have it, so the first action's
        time limit is not spent on a download."""
        quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if subprocess.run([self.docker, "image", "inspect", self.limits.docker_image], timeout=60, **quiet).returncode == 0:
                return
            r = subprocess.run([self.docker, "pull", self.limits.docker_image], timeout=timeout, **quiet)
        except (OSError, subprocess.SubprocessError) as e:
            raise SandboxError(f"docker sandbox: cannot get image {self.limits.docker_image!r}: {e}") from e
        if r.returncode != 0:
            raise SandboxError(f"docker sandbox: cannot pull {self.limits.docker_image!r}: "
                               f"{r.stderr.decode(errors='replace').strip()[-500:]}")

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        return _DOCKER_CODE, _DOCKER_TMP, _DOCKER_TMP

    def _cgroup(self) -> "_PidsCgroup | None":
        return None  # the container has --pids-limit; the docker client's threads must not count

    def _preexec(self, timeout: float, cgroup: "_PidsCgroup | None"):
        # the limits are the container's; the docker client itself only dies with the agent
        return _rlimit_preexec(self.limits, timeout, cgroup_procs=None, die_with_parent=True, rlimits=False)

    @staticmethod
    def _mount(src: str, dst: str, readonly: bool) -> str:
        for p in (src, dst):
            if "," in p or "=" in p or "\n" in p:
                raise SandboxError(f"docker sandbox cannot mount {p!r} (',', '=' or a newline in the path)")
        return f"type=bind,source={src},target={dst}" + (",readonly" if readonly else "")

    def container_argv(self, inner: list[str], cwd: Path, code_dir: Path, env: dict[str, str], timeout: float,
                       name: str, uid: int | None = None, gid: int | None = None) -> list[str]:
        """The exact ``docker run`` command line of one action (no I/O)."""
        lim = self.limits
        uid = os.getuid() if uid is None else uid
        gid = os.getgid() if gid is None else gid
        fsize = lim.file_size_mb * 1024 * 1024
        cpu = lim.cpu_s if lim.cpu_s is not None else math.ceil(timeout) + 5
        args = [
            self.docker, "run", "--rm", "--name", name, "--init",
            "--network", "bridge" if lim.network else "none",
            "--read-only", "--tmpfs", f"{_DOCKER_TMP}:rw,nosuid,nodev,size={lim.file_size_mb}m",
            "--memory", f"{lim.memory_mb}m", "--memory-swap", f"{lim.memory_mb}m",
            "--cpus", f"{lim.cpus:g}", "--pids-limit", str(lim.max_processes),
            "--ulimit", f"fsize={fsize}:{fsize}", "--ulimit", f"cpu={cpu}:{cpu + 5}", "--ulimit", "core=0:0",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", f"{uid}:{gid}", "--hostname", "sandbox", "--label", "gitops-agent.sandbox=1",
            "--mount", self._mount(str(code_dir), _DOCKER_CODE, True),
        ]
        for host, inside in lim.extra_ro_paths:
            host_abs = os.path.abspath(host)
            if not os.path.exists(host_abs):
                raise SandboxError(f"extra read-only path {host_abs} does not exist")
            args += ["--mount", self._mount(host_abs, inside, True)]
        args += ["--mount", self._mount(str(cwd), str(cwd), False), "--workdir", str(cwd)]
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        args += [lim.docker_image, "timeout", "-s", "KILL", str(math.ceil(timeout) + 5)]
        return args + inner

    def _argv(self, inner, cwd, run_dir, env, timeout):
        name = f"gitops-agent-{uuid.uuid4().hex[:16]}"
        # the client gets only PATH: it must not pass anything of the agent's environment on
        client_env = {"PATH": os.environ.get("PATH", SANE_PATH)}
        for k in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "HOME"):  # where the engine is
            if os.environ.get(k):
                client_env[k] = os.environ[k]
        return self.container_argv(inner, cwd, run_dir / "code", env, timeout, name), client_env

    def _on_timeout(self, proc: subprocess.Popen, argv: list[str]) -> None:
        name = argv[argv.index("--name") + 1] if "--name" in argv else None
        if name:
            try:
                subprocess.run([self.docker, "kill", name], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
            except (OSError, subprocess.SubprocessError):
                pass


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
def _bwrap_has_perms(bwrap: str) -> bool:
    """bwrap >= 0.5 takes ``--perms`` (a read-only empty tmpfs for hidden directories)."""
    try:
        r = subprocess.run([bwrap, "--help"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--perms" in (r.stdout + r.stderr)


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
    """Backends that can run here, in the order ``auto`` picks them (BACKEND_ORDER)."""
    found = {"subprocess"}
    if bwrap_works():
        found.add("bubblewrap")
    if DockerSandbox.implemented and docker_engine_answers():
        found.add("docker")
    return [b for b in BACKEND_ORDER if b in found]


_CLASSES = {"subprocess": SubprocessSandbox, "bubblewrap": BubblewrapSandbox, "docker": DockerSandbox}

NO_ISOLATION = (
    "the subprocess sandbox does not isolate the model's code: it can open network connections, write outside "
    "the working tree and read what the agent's user can read (e.g. /proc/<agent pid>/environ, with the API keys)"
)


def make_sandbox(
    limits: SandboxLimits | None = None,
    *,
    env: dict[str, str] | None = None,
    secrets: list[str] | None = None,
) -> Sandbox:
    """The sandbox ``limits.backend`` asks for ('auto': the best available).

    ``env`` adds safe variables to the scrubbed environment; ``secrets`` adds values to redact
    from outputs (besides credential-looking variables of this process's environment).
    ``limits.require_isolation`` refuses the subprocess backend (SandboxError, saying how to
    get bubblewrap); without it, falling back to subprocess is a loud warning.
    """
    limits = limits or SandboxLimits()
    available = available_backends()
    wanted = limits.backend
    if wanted == "auto":
        wanted = available[0]
    elif wanted not in available:
        if wanted == "docker":
            engine = "the docker CLI is missing" if not shutil.which("docker") else "no docker engine answers here"
            raise SandboxError(f"sandbox backend 'docker' is not available ({engine}); available: {', '.join(available)}")
        raise SandboxError(f"sandbox backend {wanted!r} is not available here; available: {', '.join(available)}")
    if wanted not in ISOLATING and limits.require_isolation:
        raise SandboxError(
            f"refusing to run the model's code: sandbox.require_isolation is set and no isolating backend "
            f"(bubblewrap or docker) works here -- {NO_ISOLATION}. Install bubblewrap (apt-get install bubblewrap; "
            "it needs unprivileged user namespaces) or a docker engine, or set `sandbox: {require_isolation: false}` "
            "in .github/gitops-agent.yml to accept the risk for trusted questions only"
        )
    sandbox = _CLASSES[wanted](limits, env=env, secrets=secrets)
    if isinstance(sandbox, DockerSandbox):
        sandbox.ensure_image()
    if wanted not in ISOLATING:
        why = "asked for in the config" if limits.backend == "subprocess" else "no bubblewrap or docker works here"
        log.warning("sandbox: WARNING: falling back to the subprocess backend (%s); %s. Do not use it for untrusted "
                    "questions; install bubblewrap, or set sandbox.require_isolation: true to refuse.", why, NO_ISOLATION)
    return sandbox
