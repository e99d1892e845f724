"""Choosing a backend: ``auto`` takes the best one that works here; ``require_isolation``
refuses one that is not a boundary. The backends are the ProcessSandbox subclasses of this
package (each declares its name, preference, whether it isolates and whether it is available)."""

from __future__ import annotations

import logging

from gitops_agent.core.errors import SandboxError
from gitops_agent.core.seams import Sandbox
from gitops_agent.sandbox.bubblewrap import bwrap_works  # noqa: F401 - the questions every test and check asks
from gitops_agent.sandbox.docker import docker_engine_answers  # noqa: F401
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.registry import backends
from gitops_agent.sandbox.services import SocketService

log = logging.getLogger("gitops_agent.sandbox")


def available_backends() -> list[str]:
    """Backends that can run here, in the order ``auto`` picks them."""
    return [name for name, cls in backends().items() if cls.available()]


def isolating() -> list[str]:
    return [name for name, cls in backends().items() if cls.isolating]


_REFUSE = (
    "refusing to run the model's code: sandbox.require_isolation is set and no isolating backend "
    "({names}) works here -- {why}. Install bubblewrap (apt-get install bubblewrap; "
    "it needs unprivileged user namespaces) or a docker engine, or set `sandbox: {{require_isolation: false}}` "
    "in .github/gitops-agent.yml to accept the risk for trusted questions only"
)

NO_ISOLATION = (
    "the subprocess sandbox does not isolate the model's code: it can open network connections, write outside "
    "the working tree and read what the agent's user can read (e.g. /proc/<agent pid>/environ, with API keys and database URLs)"
)


def check_backend(limits: SandboxLimits | None = None) -> str:
    """The backend ``limits`` would get here, or the SandboxError make_sandbox would raise --
    without starting anything (no image pulled)."""
    limits = limits or SandboxLimits()
    available = available_backends()
    wanted = available[0] if limits.backend == "auto" else limits.backend
    if wanted not in available:
        why = backends()[wanted].unavailable_why() if wanted in backends() else f"sandbox backend {wanted!r} is unknown"
        raise SandboxError(f"{why}; available: {', '.join(available)}")
    if not backends()[wanted].isolating and limits.require_isolation:
        raise SandboxError(_REFUSE.format(names=" or ".join(isolating()), why=NO_ISOLATION))
    return wanted


def make_sandbox(
    limits: SandboxLimits | None = None,
    *,
    env: dict[str, str] | None = None,
    secrets: list[str] | None = None,
    services: list[SocketService] | None = None,
) -> Sandbox:
    """The sandbox ``limits.backend`` asks for ('auto': the best available).

    ``env`` adds safe variables to the scrubbed environment; ``secrets`` adds values to redact
    from outputs (besides credential-looking variables of this process's environment).
    ``services`` are host services each action reaches over a Unix socket (gitops_agent/sandbox/services.py).
    ``limits.require_isolation`` refuses a backend that is not a boundary (SandboxError, saying
    how to get bubblewrap); without it, falling back to subprocess is a loud warning.
    """
    limits = limits or SandboxLimits()
    wanted = check_backend(limits)
    sandbox = backends()[wanted](limits, env=env, secrets=secrets, services=services)
    sandbox.prepare()
    if not sandbox.isolating:
        why = "asked for in the config" if limits.backend == wanted else "no isolating backend works here"
        log.warning(
            "sandbox: WARNING: falling back to the %s backend (%s); %s. Do not use it for untrusted "
            "questions; install bubblewrap, or set sandbox.require_isolation: true to refuse.",
            wanted,
            why,
            NO_ISOLATION,
        )
    return sandbox
