"""Choosing a backend: ``auto`` takes the best one that works here; ``require_isolation``
refuses the plain subprocess."""

from __future__ import annotations

import logging
import shutil

from gitops_agent.core.errors import SandboxError
from gitops_agent.core.seams import Sandbox
from gitops_agent.sandbox import bubblewrap, docker
from gitops_agent.sandbox.bubblewrap import BubblewrapSandbox
from gitops_agent.sandbox.docker import DockerSandbox
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.plain import SubprocessSandbox

log = logging.getLogger("gitops_agent.sandbox")

# Preference order of real backends for "auto" (bubblewrap first: it runs the agent's own
# interpreter and packages; a docker image has to bring its own).
BACKEND_ORDER: tuple[str, ...] = ("bubblewrap", "docker", "subprocess")
ISOLATING: frozenset[str] = frozenset({"bubblewrap", "docker"})


def bwrap_works() -> bool:
    return bubblewrap.bwrap_works()


def docker_engine_answers() -> bool:
    return docker.docker_engine_answers()


def available_backends() -> list[str]:
    """Backends that can run here, in the order ``auto`` picks them (BACKEND_ORDER)."""
    found = {"subprocess"}
    if bwrap_works():
        found.add("bubblewrap")
    if DockerSandbox.implemented and docker_engine_answers():
        found.add("docker")
    return [b for b in BACKEND_ORDER if b in found]


_REFUSE = (
    "refusing to run the model's code: sandbox.require_isolation is set and no isolating backend "
    "(bubblewrap or docker) works here -- {why}. Install bubblewrap (apt-get install bubblewrap; "
    "it needs unprivileged user namespaces) or a docker engine, or set `sandbox: {{require_isolation: false}}` "
    "in .github/gitops-agent.yml to accept the risk for trusted questions only"
)

_CLASSES = {"subprocess": SubprocessSandbox, "bubblewrap": BubblewrapSandbox, "docker": DockerSandbox}

NO_ISOLATION = (
    "the subprocess sandbox does not isolate the model's code: it can open network connections, write outside "
    "the working tree and read what the agent's user can read (e.g. /proc/<agent pid>/environ, with the API keys)"
)


def check_backend(limits: SandboxLimits | None = None) -> str:
    """The backend ``limits`` would get here, or the SandboxError make_sandbox would raise --
    without starting anything (no image pulled)."""
    limits = limits or SandboxLimits()
    available = available_backends()
    wanted = available[0] if limits.backend == "auto" else limits.backend
    if wanted not in available:
        if wanted == "docker":
            engine = "the docker CLI is missing" if not shutil.which("docker") else "no docker engine answers here"
            raise SandboxError(f"sandbox backend 'docker' is not available ({engine}); available: {', '.join(available)}")
        raise SandboxError(f"sandbox backend {wanted!r} is not available here; available: {', '.join(available)}")
    if wanted not in ISOLATING and limits.require_isolation:
        raise SandboxError(_REFUSE.format(why=NO_ISOLATION))
    return wanted


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
    wanted = check_backend(limits)
    sandbox = _CLASSES[wanted](limits, env=env, secrets=secrets)
    if isinstance(sandbox, DockerSandbox):
        sandbox.ensure_image()
    if wanted not in ISOLATING:
        why = "asked for in the config" if limits.backend == "subprocess" else "no bubblewrap or docker works here"
        log.warning("sandbox: WARNING: falling back to the subprocess backend (%s); %s. Do not use it for untrusted "
                    "questions; install bubblewrap, or set sandbox.require_isolation: true to refuse.", why, NO_ISOLATION)
    return sandbox
