"""Services of the host that an action reaches over a Unix socket, and nothing else: the socket is
made in the action's private run directory, bound into the sandbox at ``/run/<name>.sock``, and
named to the code by an environment variable. The network stays off (the warehouse broker,
gitops_agent/data/broker.py, is the first such service)."""

from __future__ import annotations

from pathlib import Path
from typing import ContextManager, Protocol, runtime_checkable

INSIDE_DIR = "/run"


@runtime_checkable
class SocketService(Protocol):
    """Serves one Unix socket for the length of one action."""

    name: str  # the socket's name: /run/<name>.sock inside
    env: str  # the variable that gives the code the socket's path (never a credential's name)

    def serve(self, path: Path) -> ContextManager[None]:
        """Listen on ``path`` until the context ends; then stop, and cancel what is still running."""
        ...


def socket_file(run_dir: Path, service: SocketService) -> Path:
    """Where the action's socket of ``service`` lives on the host (short: sun_path holds 107 bytes)."""
    return run_dir / "sockets" / f"{service.name}.sock"


def inside_path(service: SocketService) -> str:
    return f"{INSIDE_DIR}/{service.name}.sock"
