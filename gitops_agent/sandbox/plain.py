"""The ``subprocess`` backend: a plain child process. Not a security boundary."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from gitops_agent.sandbox.base import ProcessSandbox
from gitops_agent.sandbox.services import socket_file

log = logging.getLogger("gitops_agent.sandbox")


class SubprocessSandbox(ProcessSandbox):
    """A plain child process in a new session with rlimits, cgroups where they can be made, the
    watchdog and a scrubbed environment.

    It does not isolate the file system or the network: ``limits.network`` is not enforced,
    and the process can read anything the agent's user can (e.g. /proc/<parent>/environ) --
    redaction of known secret values in the output is the remaining guard. Never use it for
    untrusted input (``require_isolation`` refuses it). The child gets SIGKILL when the agent
    dies; its own children only if a pids cgroup is available.
    """

    name = "subprocess"
    preference = 90  # the last resort: it isolates nothing

    def __init__(self, limits=None, **kw):
        super().__init__(limits, **kw)
        if not self.limits.network:
            log.debug("subprocess sandbox: network=False is not enforced by this backend")

    def _paths(self, run_dir: Path) -> tuple[str, str, str]:
        return str(run_dir / "code"), str(run_dir / "home"), str(run_dir / "tmp")

    def _socket_path(self, run_dir, service):
        return str(socket_file(run_dir, service))  # nothing is mounted: the host's path

    def _argv(self, inner, cwd, run_dir, env, timeout):
        if self.limits.extra_ro_paths:
            env = dict(env)
            env["SANDBOX_RO_PATHS"] = os.pathsep.join(
                f"{inside}={os.path.abspath(host)}" for host, inside in self.limits.extra_ro_paths
            )
        return inner, env
