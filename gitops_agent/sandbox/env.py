"""The sandbox's environment: built from an allow-list, nothing copied from the agent's."""

from __future__ import annotations

import os
import sys
import tempfile

from gitops_agent.core.errors import SandboxError
from gitops_agent.safety.secrets import SECRET_NAME_RE

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
    variables the caller knows are safe (e.g. AGENT_DATA_DIR); a name that looks like a
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
        "PYTHONHASHSEED": "0",  # the same code prints the same set order: a replayed task can match its recording
        "MPLBACKEND": "Agg",
        # numpy's BLAS sizes a buffer per core it sees; under the per-process memory limit that
        # fails on a many-core runner ("OpenBLAS error: Memory allocation still failed"). An
        # action gets one CPU's worth anyway (sandbox.cpus).
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        # likewise glibc's malloc reserves an arena of address space per thread (64 MiB each): a
        # library that starts a thread per core (duckdb) runs out of the address-space limit
        "MALLOC_ARENA_MAX": "2",
    }
    for k, v in (extra or {}).items():
        if SECRET_NAME_RE.search(k):
            raise SandboxError(f"refusing to pass {k!r} into the sandbox: the name looks like a credential")
        if k == "PYTHONPATH":
            raise SandboxError("refusing to set PYTHONPATH in the sandbox")
        env[str(k)] = str(v)
    return env
