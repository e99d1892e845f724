"""What every process backend shares: a private run directory, the scrubbed environment, rlimits,
the action's cgroups and watchdog, the timeout, output to files read back redacted, and the kill
of every process of the action when it ends (its process group and its cgroups)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from gitops_agent.core.cancel import CANCEL
from gitops_agent.core.errors import SandboxError
from gitops_agent.core.state import Observation
from gitops_agent.safety.secrets import process_secrets
from gitops_agent.sandbox import cgroups, registry
from gitops_agent.sandbox.env import scrubbed_env
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.output import read_output
from gitops_agent.sandbox.services import SocketService, inside_path, socket_file
from gitops_agent.sandbox.watchdog import Pids, StepDisk, Watchdog, descendants

log = logging.getLogger("gitops_agent.sandbox")

_PR_SET_PDEATHSIG = 1
_warned: set[str] = set()


@lru_cache(maxsize=None)
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None


_PR_SET_DUMPABLE = 4


def not_dumpable() -> None:
    """No other process of this user may read this one's memory or ``/proc/<pid>/environ`` (which
    hold the token and the keys): PR_SET_DUMPABLE 0. Processes it starts are dumpable again after
    their exec; as root this changes nothing (the sandboxes' namespaces do the rest)."""
    libc = _libc() if sys.platform.startswith("linux") else None
    if libc is not None:
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def rlimit_preexec(
    limits: SandboxLimits,
    timeout: float,
    *,
    cgroup_procs: list[str] | None = None,
    die_with_parent: bool = False,
    rlimits: bool = True,
):
    """Build the preexec_fn run in the child before exec (values computed up front): join the
    action's cgroups, ask for SIGKILL when the parent dies, apply the rlimits."""
    cpu = limits.cpu_s if limits.cpu_s is not None else math.ceil(timeout) + 5
    settings = [
        (resource.RLIMIT_AS, limits.memory_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * 1024 * 1024),
        # RLIMIT_NPROC is not enforced for root: there the pids cgroup (or bubblewrap's PID
        # namespace and the timeout) is the fork-bomb guard.
        (resource.RLIMIT_NPROC, limits.max_processes),
        (resource.RLIMIT_CORE, 0),
    ]
    cpu_hard = cpu + 5  # soft limit sends SIGXCPU, the hard one SIGKILL
    libc = _libc() if die_with_parent and sys.platform.startswith("linux") else None
    procs = list(cgroup_procs or [])

    def preexec() -> None:
        for p in procs:
            # before anything else: every process this one starts is counted (and limited) there
            with open(p, "w") as f:
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


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def signal_note(code: int | None) -> str:
    if code is not None and code > 128 and code - 128 in (signal.SIGXCPU, signal.SIGXFSZ):
        code = 128 - code  # bwrap (and a shell) report a child killed by signal N as exit code 128+N
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


def warn_once(key: str, message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


RUN_DIR_PREFIX = "agent-sandbox-"


_ACTIVE_RUN_DIRS: set[Path] = set()


def remove_active_run_dirs() -> None:
    """Remove this process's sandbox run directories now (before a hard exit)."""
    for d in list(_ACTIVE_RUN_DIRS):
        shutil.rmtree(d, ignore_errors=True)


def sweep_run_dirs(tmp: str | None = None) -> None:
    """Remove the run directories of sandboxes whose agent process is gone (a kill -9)."""
    base = Path(tmp or tempfile.gettempdir())
    try:
        entries = list(base.glob(f"{RUN_DIR_PREFIX}*"))
    except OSError:
        return
    for d in entries:
        pid = d.name[len(RUN_DIR_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(d, ignore_errors=True)


class ProcessSandbox:
    """Shared machinery of the backends (``run_python``/``run_shell`` of the Sandbox seam). A
    subclass with a ``name`` is a backend (``sandbox.backend``), found by gitops_agent/sandbox/
    choose.py: declaring the class is all it takes."""

    name = "process"
    #: whether this backend's actions join the agent's cgroups (docker's have their own limits)
    uses_cgroups = True
    #: whether it is a boundary: untrusted questions run only on one that is (require_isolation)
    isolating = False
    #: ``auto`` takes the available backend with the lowest preference
    preference = 100

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            registry.BACKENDS[cls.name] = cls

    @classmethod
    def available(cls) -> bool:
        """Whether it can run here (a quick, cached check)."""
        return True

    @classmethod
    def unavailable_why(cls) -> str:
        return f"sandbox backend {cls.name!r} is not available here"

    def prepare(self) -> None:
        """Before the first action (docker: pull the image, so no action's time goes to it)."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        env: dict[str, str] | None = None,
        secrets: list[str] | None = None,
        services: list[SocketService] | None = None,
    ):
        self.limits = limits or SandboxLimits()
        self.extra_env = dict(env or {})
        self.secrets = list(secrets or [])
        # host services each action reaches over its own Unix socket (gitops_agent/sandbox/services.py)
        self.services = list(services or [])
        scrubbed_env({**self.extra_env, **{s.env: "/" for s in self.services}}, home="/", tmpdir="/")  # validate the names now
        self.shell = shutil.which("bash") or "/bin/sh"
        self.step_disk = StepDisk()  # disk_mb is per step: what the actions on one working tree added together
        sweep_run_dirs()

    # -- public API (the Sandbox protocol) ---------------------------------------------------

    def run_python(self, code: str, cwd: Path, timeout: float | None = None) -> Observation:
        return self._run("python", code, cwd, timeout)

    def run_shell(self, command: str, cwd: Path, timeout: float | None = None) -> Observation:
        return self._run("shell", command, cwd, timeout)

    # -- backend hooks --------------------------------------------------------------------------

    def _argv(
        self, inner: list[str], cwd: Path, run_dir: Path, env: dict[str, str], timeout: float
    ) -> tuple[list[str], dict[str, str]]:
        """Wrap the inner command; returns (argv, env for Popen)."""
        raise NotImplementedError

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        """(code dir, HOME, TMPDIR) as seen by the sandboxed process."""
        raise NotImplementedError

    def _socket_path(self, run_dir: Path, service: SocketService) -> str:
        """A service's socket as the sandboxed process sees it (a backend that mounts it: inside)."""
        return inside_path(service)

    def _python(self) -> str:
        """The interpreter as the sandboxed process runs it."""
        return self.limits.python

    def _preexec(self, timeout: float, cgroup: cgroups.ActionCgroup | None):
        return rlimit_preexec(self.limits, timeout, cgroup_procs=cgroup.procs_files if cgroup else None, die_with_parent=True)

    def _on_timeout(self, proc: subprocess.Popen, argv: list[str]) -> None:
        """Extra clean-up when an action is killed (the process group is killed anyway)."""

    def _action_pids(self, proc: subprocess.Popen, argv: list[str]) -> Pids:
        """The processes of the action (their memory, the deleted files they hold open)."""
        return lambda: descendants(proc.pid)

    def _cgroup(self) -> cgroups.ActionCgroup | None:
        """This action's cgroups (pids: max_processes; memory: the total), where they can be made."""
        if not self.uses_cgroups:
            return None
        cg = cgroups.ActionCgroup(self.limits.max_processes, self.limits.total_memory_bytes)
        if "memory" not in cg.has:
            warn_once(
                "memory",
                "sandbox: no memory cgroup can be made here (%s); the total memory of an action's "
                "processes is watched by polling instead (a fast allocation can overshoot between polls). "
                "Run the agent in a delegated cgroup v2 subtree or a writable cgroup v1 memory hierarchy "
                "for a hard limit.",
                cgroups.describe()["memory"],
            )
        return cg

    # -- machinery ------------------------------------------------------------------------------

    def _run(self, kind: str, source: str, cwd: Path, timeout: float | None) -> Observation:
        limits = self.limits
        timeout = float(timeout) if timeout is not None else float(limits.timeout_s)
        if timeout <= 0:
            raise SandboxError(f"timeout must be positive, got {timeout}")
        cwd = Path(cwd).resolve()
        if not cwd.is_dir():
            raise SandboxError(f"working directory {cwd} does not exist")

        run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
        _ACTIVE_RUN_DIRS.add(run_dir)
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
            with contextlib.ExitStack() as serving:
                # each service listens for this action only: when it ends, what it started is cancelled
                for service in self.services:
                    socket_file(run_dir, service).parent.mkdir(exist_ok=True)
                    serving.enter_context(service.serve(socket_file(run_dir, service)))
                    env[service.env] = self._socket_path(run_dir, service)
                argv, popen_env = self._argv(inner, cwd, run_dir, env, timeout)
                return self._execute(argv, popen_env, cwd, run_dir, timeout)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            _ACTIVE_RUN_DIRS.discard(run_dir)

    def _execute(self, argv: list[str], env: dict[str, str], cwd: Path, run_dir: Path, timeout: float) -> Observation:
        limits = self.limits
        out_path, err_path = run_dir / "stdout", run_dir / "stderr"
        start = time.monotonic()
        timed_out = False
        cgroup = self._cgroup()
        killed_by: str | None = None
        memory_watch = (
            None if (cgroup is not None and "memory" in cgroup.has) or not self.uses_cgroups else limits.total_memory_bytes
        )
        try:
            # the tree is measured before the action starts: what it writes at once is its own
            watch = Watchdog(cwd, disk_bytes=limits.disk_mb * 2**20, memory_bytes=memory_watch, steps=self.step_disk)
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

                def kill() -> None:
                    kill_group(proc.pid)
                    if cgroup is not None:
                        cgroup.kill()
                    self._on_timeout(proc, argv)

                with (
                    watch.watching(self._action_pids(proc, argv), kill),
                    CANCEL.on_cancel(kill),
                ):  # Ctrl-C: every process of the action dies now
                    try:
                        proc.wait(timeout=timeout)
                    except subprocess.TimeoutExpired:
                        timed_out = True
                        kill()
                        proc.wait()
                killed_by = watch.reason
                # Background processes left behind (`cmd &`) die with the action.
                kill_group(proc.pid)
        finally:
            oom = cgroup is not None and cgroup.oom_killed()
            if cgroup is not None:
                cgroup.close()  # and those that left the process group (setsid, double fork)
        duration_ms = int((time.monotonic() - start) * 1000)

        secrets = process_secrets() + self.secrets
        stdout, t1 = read_output(out_path, limits.max_output_chars, secrets)
        stderr, t2 = read_output(err_path, limits.max_output_chars, secrets)
        code = proc.returncode
        if timed_out:
            stderr += f"\n[timed out after {timeout:g} s; every process of the action was killed]"
        elif killed_by:
            stderr += f"\n[killed: {killed_by}; every process of the action was killed]"
        elif oom:
            stderr += (
                f"\n[killed: out of memory; the action's processes may use {limits.total_memory_bytes / 2**20:.0f} MiB together]"
            )
        else:
            stderr += signal_note(code)
        return Observation(
            exit_code=code,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            duration_ms=duration_ms,
            truncated=t1 or t2,
            backend=self.name,
        )
