"""The limits and options of a sandbox (``sandbox:`` in the trusted config)."""

from __future__ import annotations

import posixpath
import sys

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gitops_agent.sandbox.registry import backends

# Deny-list applied inside what bubblewrap shows (its allow-list already leaves out home
# directories, /run, /mnt, /srv, /opt, /var and every runner directory): places under the
# mounted system directories that may still hold credentials.
DEFAULT_HIDE_PATHS: tuple[str, ...] = (
    "/home",
    "/root",
    "/run",
    "/var/run",
    "/mnt",
    "/media",
    "/srv",
    "/opt/actions-runner",
    "/actions-runner",
    "/etc/shadow",
    "/etc/gshadow",
    "/usr/local/etc",
)


class SandboxLimits(BaseModel):
    """Limits and options for one sandbox; every action run in it gets the same limits."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(120, gt=0, description="Wall-clock seconds per action before all its processes are killed.")
    memory_mb: int = Field(
        4096,
        ge=16,
        description="Address-space limit per process in MiB (RLIMIT_AS). Virtual: above what a process may really use "
        "(total_memory_mb), because the data libraries reserve address space they never touch (duckdb's threads "
        "reserve over 1 GiB to run a one-row query).",
    )
    total_memory_mb: int | None = Field(
        2048,
        ge=16,
        description="Memory of all the action's processes together, /tmp included, in MiB: a memory cgroup "
        "where one can be made, else the sum of their resident memory polled every 0.1 s. None: memory_mb.",
    )
    cpu_s: int | None = Field(
        None, ge=1, description="CPU seconds per process (RLIMIT_CPU); None means the action's timeout + 5."
    )
    file_size_mb: int = Field(256, ge=1, description="Largest file a process may write, in MiB (RLIMIT_FSIZE).")
    disk_mb: int = Field(
        1024,
        ge=1,
        description="What one step may add to its working tree in all, in MiB: every "
        "action of the step (a node's turns share the tree) together, files deleted but still open "
        "included; past it the action is killed. Deleting is always allowed.",
    )
    tmp_mb: int = Field(512, ge=1, description="Size of the private /tmp (and /dev/shm) in MiB (bubblewrap, docker).")
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
    backend: str = Field(
        "auto", description="Which backend to use (subprocess, bubblewrap, docker); 'auto' picks the best available."
    )
    require_isolation: bool | None = Field(
        None,
        description="Refuse to run code without an isolating backend (bubblewrap or docker) instead of falling back to "
        "a plain subprocess. None: true for `gitops-agent step` on GitHub Actions (issue text is untrusted), false locally.",
    )
    hide_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_HIDE_PATHS),
        description="bubblewrap: places hidden even where they lie inside a directory the sandbox shows (an empty "
        "tmpfs; files: /dev/null).",
    )
    cpus: float = Field(1.0, gt=0, description="docker: CPUs for the container (--cpus).")
    docker_image: str = Field(
        "python:3.12-slim", min_length=1, description="docker: image to run the code in (needs python3, bash, timeout)."
    )
    extra_ro_paths: list[tuple[str, str]] = Field(
        default_factory=list,
        description="(host path, path inside) pairs mounted read-only where the backend can; "
        "the subprocess backend only lists them in $SANDBOX_RO_PATHS.",
    )
    python: str = Field(
        default_factory=lambda: sys.executable,
        description="Python interpreter used by run_python when the workbench is off (an expert's escape hatch).",
    )
    workbench: bool = Field(
        True,
        description="Run the model's code with the workbench: its own environment of the data stack "
        "(requirements/workbench.txt) plus `requirements`, never the agent's packages. Off: `python`.",
    )
    requirements: str | None = Field(
        None,
        description="A requirements file in the repository, pinned with hashes (uv pip compile --generate-hashes), "
        "whose packages are added to the workbench.",
    )
    # brain tools (gitops_agent/brain/branch.py): helper modules the model's code may import
    python_path: list[str] = Field(
        default_factory=list,
        description="Directories put on PYTHONPATH inside the sandbox (trusted helper modules; mount them read-only "
        "with extra_ro_paths where they are not visible).",
    )

    @field_validator("requirements")
    @classmethod
    def _inside_the_repository(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = v.split("/")
        norm = posixpath.normpath(v) if v.strip() else ""  # ./a//b.txt is a/b.txt: read and protected as one path
        if not norm or v.startswith("/") or ".." in parts or norm.split("/")[0] in (".git", ".") or "\0" in v or "\\" in v:
            raise ValueError(f"{v!r} must be a path inside the repository, e.g. requirements/workbench.txt")
        return norm

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v != "auto" and v not in backends():
            raise ValueError(f"unknown backend {v!r}; use auto, {', '.join(backends())}")
        return v

    @property
    def total_memory_bytes(self) -> int:
        return (self.total_memory_mb or self.memory_mb) * 1024 * 1024
