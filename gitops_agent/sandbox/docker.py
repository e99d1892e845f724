"""The ``docker`` backend: a throwaway container per action. Only what is mounted is visible:
the working tree (read-write, at its own path), the code file and ``extra_ro_paths`` read-only;
the image brings the rest (``docker_image``: bash, timeout, a C library the workbench's
interpreter runs on; its python3 only when the workbench is off). The workbench is mounted
read-only at its own path, with the interpreter it links to. Nothing else of the host's file
system, and no credential place, is in the container."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import uuid
from functools import lru_cache
from pathlib import Path

from gitops_agent.core.errors import SandboxError
from gitops_agent.sandbox.base import ProcessSandbox, rlimit_preexec
from gitops_agent.sandbox.env import SANE_PATH
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.mounts import python_roots, unused_site_dirs
from gitops_agent.sandbox.services import inside_path, socket_file
from gitops_agent.sandbox.watchdog import Pids, descendants
from gitops_agent.sandbox.workbench import is_workbench


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


# Paths inside the docker container.
_DOCKER_CODE = "/.agent-code"
_DOCKER_TMP = "/tmp"
_NOFILE = 1024


class DockerSandbox(ProcessSandbox):
    """``docker run``: a throwaway container per action (``--rm``), no network (``--network
    none`` unless ``limits.network``), a read-only root file system with a private tmpfs
    ``/tmp`` (also HOME), the working tree bind-mounted read-write at the same path (so paths in
    outputs match), the code file and ``extra_ro_paths`` read-only, ``--memory`` (no swap),
    ``--cpus``, ``--pids-limit``, fsize/cpu/core/nofile ulimits, all capabilities dropped, no new
    privileges, the caller's uid:gid (files it writes belong to the agent's user), ``--init``,
    and the scrubbed environment. The command runs under ``timeout -s KILL`` inside, so the
    container ends even if the agent dies; on timeout the agent also ``docker kill``s it.

    The image (``limits.docker_image``) needs ``python3``, ``bash`` and ``timeout``, plus the
    libraries the model's code imports.
    """

    name = "docker"
    isolating = True
    preference = 20  # an image has to bring python3 and every library the code imports

    @classmethod
    def available(cls) -> bool:
        return docker_engine_answers()

    @classmethod
    def unavailable_why(cls) -> str:
        engine = "the docker CLI is missing" if not shutil.which("docker") else "no docker engine answers here"
        return f"sandbox backend 'docker' is not available ({engine})"

    def prepare(self) -> None:
        self.ensure_image()

    uses_cgroups = False  # the container has --memory and --pids-limit; the client's threads must not count

    def __init__(self, limits: SandboxLimits | None = None, *, docker: str | None = None, **kw):
        super().__init__(limits, **kw)
        self.docker = docker or shutil.which("docker")
        if not self.docker:
            raise SandboxError("docker backend needs the 'docker' program, which is not on PATH")
        self.shell = "bash"

    def _python(self) -> str:
        # the workbench (its virtualenv and the interpreter it links to, mounted read-only at the
        # same paths): the same packages as under bubblewrap; else the image's own python3
        return self.limits.python if is_workbench(self.limits.python) else "python3"

    def _python_mounts(self) -> list[str]:
        if not is_workbench(self.limits.python):
            return []
        roots = python_roots(self.limits.python)
        args = [arg for root in roots for arg in ("--mount", self._mount(root, root, True))]
        # the base installation's own packages, inside a prefix mounted above: an empty directory
        hidden = [d for d in unused_site_dirs(self.limits.python) if any(d.startswith(r.rstrip("/") + "/") for r in roots)]
        return args + [a for d in hidden for a in ("--mount", f"type=tmpfs,destination={d}")]

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
            raise SandboxError(
                f"docker sandbox: cannot pull {self.limits.docker_image!r}: {r.stderr.decode(errors='replace').strip()[-500:]}"
            )

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        return _DOCKER_CODE, _DOCKER_TMP, _DOCKER_TMP

    def _preexec(self, timeout: float, cgroup):
        # the limits are the container's; the docker client itself only dies with the agent
        return rlimit_preexec(self.limits, timeout, cgroup_procs=None, die_with_parent=True, rlimits=False)

    @staticmethod
    def _mount(src: str, dst: str, readonly: bool) -> str:
        for p in (src, dst):
            if "," in p or "=" in p or "\n" in p:
                raise SandboxError(f"docker sandbox cannot mount {p!r} (',', '=' or a newline in the path)")
        return f"type=bind,source={src},target={dst}" + (",readonly" if readonly else "")

    def container_argv(
        self,
        inner: list[str],
        cwd: Path,
        code_dir: Path,
        env: dict[str, str],
        timeout: float,
        name: str,
        uid: int | None = None,
        gid: int | None = None,
    ) -> list[str]:
        """The exact ``docker run`` command line of one action (no I/O)."""
        lim = self.limits
        uid = os.getuid() if uid is None else uid
        gid = os.getgid() if gid is None else gid
        fsize = lim.file_size_mb * 1024 * 1024
        total_mb = lim.total_memory_mb or lim.memory_mb
        cpu = lim.cpu_s if lim.cpu_s is not None else math.ceil(timeout) + 5
        args = [
            self.docker,
            "run",
            "--rm",
            "--name",
            name,
            "--init",
            "--network",
            "bridge" if lim.network else "none",
            "--read-only",
            "--tmpfs",
            f"{_DOCKER_TMP}:rw,nosuid,nodev,size={lim.tmp_mb}m",
            "--memory",
            f"{total_mb}m",
            "--memory-swap",
            f"{total_mb}m",
            "--cpus",
            f"{lim.cpus:g}",
            "--pids-limit",
            str(lim.max_processes),
            "--ulimit",
            f"fsize={fsize}:{fsize}",
            "--ulimit",
            f"cpu={cpu}:{cpu + 5}",
            "--ulimit",
            "core=0:0",
            # few descriptors: the deleted-but-open files the watchdog looks for in /proc stay few
            "--ulimit",
            f"nofile={_NOFILE}:{_NOFILE}",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--user",
            f"{uid}:{gid}",
            "--hostname",
            "sandbox",
            "--label",
            "gitops-agent.sandbox=1",
            "--mount",
            self._mount(str(code_dir), _DOCKER_CODE, True),
        ]
        args += self._python_mounts()
        for host, inside in lim.extra_ro_paths:
            host_abs = os.path.abspath(host)
            if not os.path.exists(host_abs):
                raise SandboxError(f"extra read-only path {host_abs} does not exist")
            args += ["--mount", self._mount(host_abs, inside, True)]
        for service in self.services:  # the socket alone; --network stays none
            args += ["--mount", self._mount(str(socket_file(code_dir.parent, service)), inside_path(service), False)]
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
        name = _container_name(argv)
        if name:
            try:
                subprocess.run(
                    [self.docker, "kill", name],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=20,
                )
            except (OSError, subprocess.SubprocessError):
                pass

    def _action_pids(self, proc: subprocess.Popen, argv: list[str]) -> Pids:
        """The container's processes: children of containerd-shim, not of the client this agent
        started, so the watchdog looks them up from the container's first process on the host
        (found once the container runs: it starts after the client)."""
        name, init = _container_name(argv), []

        def pids() -> list[int] | None:
            if not init:
                pid = self._container_pid(name) if name else None
                if pid is None:
                    return None
                init.append(pid)
            return descendants(init[0])

        return pids

    def _container_pid(self, name: str) -> int | None:
        """The host pid of the running container's first process (None before it starts, after
        it ends, or if the engine does not answer)."""
        try:
            r = subprocess.run(
                [self.docker, "inspect", "-f", "{{.State.Pid}}", name],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        out = r.stdout.strip()
        return int(out) if r.returncode == 0 and out.isdigit() and int(out) > 0 else None


def _container_name(argv: list[str]) -> str | None:
    return argv[argv.index("--name") + 1] if "--name" in argv else None
