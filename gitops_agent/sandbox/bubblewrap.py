"""The ``bubblewrap`` backend: the model's code in new namespaces, seeing only an allow-list of
the host (``gitops_agent.sandbox.mounts``)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from gitops_agent.core.errors import SandboxError
from gitops_agent.sandbox import mounts
from gitops_agent.sandbox.base import ProcessSandbox, warn_once
from gitops_agent.sandbox.services import inside_path, socket_file

log = logging.getLogger("gitops_agent.sandbox")

# Paths inside the sandbox.
HOME = "/tmp/home"
CODE = "/tmp/.agent-code"


def base_args(bwrap: str, network: bool) -> list[str]:
    args = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--hostname", "sandbox"]
    if network:
        args.append("--share-net")
    return args


@lru_cache(maxsize=None)
def _bwrap_help(bwrap: str) -> str:
    try:
        r = subprocess.run([bwrap, "--help"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout + r.stderr


def has_option(bwrap: str, option: str) -> bool:
    """Whether this bwrap takes ``option`` (``--perms`` since 0.5, ``--size`` since 0.7)."""
    return option in _bwrap_help(bwrap)


@lru_cache(maxsize=None)
def bwrap_works() -> bool:
    """True if ``bwrap`` can start a sandbox with the options this module uses (cached). Some
    hosts have bwrap but forbid the namespaces it needs (e.g. unprivileged user namespaces
    restricted by AppArmor), so a real test run decides."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return False
    true = "/usr/bin/true" if os.path.exists("/usr/bin/true") else "/bin/true"
    argv = base_args(bwrap, network=False) + mounts.system_args() + ["--proc", "/proc", "--dev", "/dev", "--", true]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        log.debug("bwrap test run failed: %s", e)
        return False
    if r.returncode != 0:
        log.debug("bwrap test run failed (%s): %s", r.returncode, r.stderr.decode(errors="replace").strip())
    return r.returncode == 0


class BubblewrapSandbox(ProcessSandbox):
    """``bwrap``: an allow-list of the host read-only (``gitops_agent.sandbox.mounts``), the working tree
    writable, a private size-capped tmpfs ``/tmp`` (also HOME) and ``/dev/shm``, new namespaces
    (PID, IPC, UTS, cgroup, user, network unless ``limits.network``), all capabilities dropped,
    environment cleared and replaced by the scrubbed one, plus rlimits, the action's cgroups and
    the watchdog. Other processes are invisible (a fresh /proc in the new PID namespace: no
    /proc/<agent pid>/environ), and everything inside dies with the namespace's first process."""

    name = "bubblewrap"
    isolating = True
    preference = 10  # first: it runs the agent's own interpreter and packages

    @classmethod
    def available(cls) -> bool:
        return bwrap_works()

    def __init__(self, limits=None, **kw):
        super().__init__(limits, **kw)
        self.bwrap = shutil.which("bwrap")
        if not self.bwrap:
            raise SandboxError("bubblewrap backend needs the 'bwrap' program, which is not on PATH")
        self.shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        self.roots = mounts.safe_roots(mounts.python_roots(self.limits.python))
        self.unused_sites = mounts.unused_site_dirs(self.limits.python)

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        return CODE, HOME, "/tmp"

    def argv(self, inner: list[str], cwd: Path, run_dir: Path, env: dict[str, str]) -> list[str]:
        """The exact bwrap command line of one action."""
        if cwd == Path("/") or cwd == Path("/tmp"):
            raise SandboxError(f"bubblewrap sandbox cannot use {cwd} as the working tree; use a subdirectory")
        lim = self.limits
        size = has_option(self.bwrap, "--size")
        if not size:
            warn_once(
                "bwrap-size",
                "sandbox: this bwrap cannot cap the size of /tmp (--size needs bubblewrap 0.7); only the memory limit bounds it",
            )
        tmp_size = ["--size", str(lim.tmp_mb * 2**20)] if size else []
        args = base_args(self.bwrap, lim.network)
        args += mounts.system_args()
        args += mounts.etc_args(run_dir, lim.network)
        args += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            *tmp_size,
            "--tmpfs",
            "/dev/shm",
            *tmp_size,
            "--tmpfs",
            "/tmp",
            "--dir",
            "/var",
            "--symlink",
            "../tmp",
            "/var/tmp",
        ]
        # what is bound from the host, for hide_paths (the /etc entries are listed one by one)
        shown = [d for d in mounts.SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
        shown += [a for i, a in enumerate(args) if i and args[i - 1] == "--ro-bind" and a.startswith("/etc/")]
        for root in self.roots:
            args += ["--ro-bind", root, root]
        shown += self.roots
        for host, inside in lim.extra_ro_paths:
            host_abs = os.path.abspath(host)
            if not os.path.exists(host_abs):
                raise SandboxError(f"extra read-only path {host_abs} does not exist")
            args += ["--ro-bind", host_abs, inside]
        hidden = lim.hide_paths + self.unused_sites
        args += mounts.hide_args(hidden, shown, has_option(self.bwrap, "--perms"))
        args += ["--dir", HOME, "--ro-bind", str(run_dir / "code"), CODE]
        for service in self.services:  # the socket alone; the network namespace stays unshared
            args += ["--bind", str(socket_file(run_dir, service)), inside_path(service)]
        # The working tree last, so nothing above can hide it (it may itself be under /tmp).
        args += ["--bind", str(cwd), str(cwd), "--remount-ro", "/", "--chdir", str(cwd), "--clearenv"]
        for k, v in env.items():
            args += ["--setenv", k, v]
        return args + ["--"] + inner

    def _argv(self, inner, cwd, run_dir, env, timeout):
        return self.argv(inner, cwd, run_dir, env), env
