"""The four seams of gitops-agent, named once, and the optional capabilities of a model (small
protocols, checked with isinstance).

Everything else is plain classes that take these. Swapping one implementation (another model
provider, another sandbox backend, GitHub's repository_dispatch instead of the local queue,
another place to keep Git) touches nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.git.checkout import Checkout
    from gitops_agent.git.messages import Commit

from gitops_agent.core.messages import ModelRequest, ModelResponse
from gitops_agent.core.state import Observation


@runtime_checkable
class Model(Protocol):
    """A language model behind one provider."""

    name: str  # the model id used for pricing and trailers, e.g. "claude-haiku-4-5"

    def query(self, request: ModelRequest) -> ModelResponse: ...


@runtime_checkable
class Sandbox(Protocol):
    """Runs the model's code with no credentials, inside limits, in the task's working tree."""

    name: str  # backend name: "subprocess", "bubblewrap", "docker"

    def run_python(self, code: str, cwd: Path, timeout: float | None = None) -> Observation: ...

    def run_shell(self, command: str, cwd: Path, timeout: float | None = None) -> Observation: ...


StepKind = Literal["plan", "execute", "finish"]


class Job(BaseModel):
    """One step to run next. On GitHub this is a repository_dispatch (event type
    ``agent-<step>``, the rest as client_payload); locally an item on the in-process queue."""

    model_config = ConfigDict(extra="forbid")
    step: StepKind
    task: str
    branch: str
    node: str | None = None
    seq: int | None = Field(None, description="Step number reserved for an execute job.")
    hop: int = 0
    reason: str | None = Field(None, description="Why a finish was requested early, in words.")
    stop: Literal["budget", "error"] | None = Field(
        None, description="Why a finish was requested early: the budget is spent, or an error the task cannot go on from."
    )


@runtime_checkable
class Dispatcher(Protocol):
    """Hands the next step over to whoever runs it."""

    def dispatch(self, job: Job) -> None: ...


@runtime_checkable
class Preflight(Protocol):
    """A model that can check, without spending tokens, that its endpoint, key and model work."""

    def preflight(self) -> None: ...


@runtime_checkable
class Abortable(Protocol):
    """A model whose call in flight can be stopped from another thread (Ctrl-C, a cancel)."""

    def abort(self) -> None: ...


@runtime_checkable
class Served(Protocol):
    """A model served at an endpoint (an HTTP provider): where, for the wait line and for
    pricing a server on this machine or a private network at nothing."""

    @property
    def base_url(self) -> str: ...


@runtime_checkable
class GitStore(Protocol):
    """Git as the whole state: read files at refs, commit file sets with trailers, publish
    branches with fetch-rebase-retry, and export throwaway working trees (plain directories with
    no ``.git``; ``Checkout.collect()`` reads back what changed without following links). This
    is everything the steps, the runtime and memory use of it."""

    repo: Path
    #: the remote it publishes to (None: the repository itself is the store)
    remote: str | None
    #: applied to every file committed (the runtime sets the redaction of secrets)
    redact: Callable[[str, bytes], bytes] | None

    def tip(self, branch: str, fetch: bool = True) -> str | None: ...

    def read_file(self, ref: str, path: str) -> bytes | None: ...

    def list_files(self, ref: str, prefix: str = "") -> list[str]: ...

    def list_blobs(self, ref: str, prefix: str = "") -> dict[str, str]: ...

    def read_files(self, ref: str, paths: list[str]) -> dict[str, bytes | None]: ...

    def read_blobs(self, ids: list[str]) -> dict[str, bytes]: ...

    def commit_files(
        self,
        branch: str,
        changes: dict[str, bytes | None],
        message: str,
        trailers: dict[str, str],
        base: str | None = None,
        *,
        modes: dict[str, str] | None = None,
    ) -> str: ...

    def create_branch(self, branch: str, base_ref: str | None, trailers: dict[str, str] | None = None) -> str: ...

    def share_branch(self, branch: str) -> str: ...

    def fetch_commit(self, sha: str) -> bool: ...

    def log(self, ref: str, max_count: int | None = None, grep_trailer: tuple[str, str] | None = None) -> list["Commit"]: ...

    def git(
        self, *args: str, input: bytes | None = None, env: dict | None = None, check: bool = True, network: bool = False
    ) -> str: ...

    def checkout(
        self, ref: str, name: str, *, skip: tuple[str, ...] | list[str] = (), keep: tuple[str, ...] | list[str] = ()
    ) -> AbstractContextManager["Checkout"]: ...
