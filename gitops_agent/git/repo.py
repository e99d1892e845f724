"""Git as the whole state: ``GitRepo`` implements the ``GitStore`` seam with plumbing only.

It never touches a checkout, the repository's own index or HEAD: commits are built from trees
(``gitops_agent.git.commits``) and published with a compare-and-swap (``git update-ref <ref> <new>
<old>``) in local mode, or a plain, never forced ``git push`` in remote mode (``gitops_agent.git.sync``).
A lost race re-reads the tip, checks that nobody else changed the same paths since ``base`` and
re-applies the same change on the new tip (bounded, jittered back-off).

Two modes:

* local (``remote=None``): the branches are refs in ``repo`` (the user's own repository).
* remote (``remote="origin"``): ``repo`` is a job's (usually shallow) clone; branches live on the
  remote. A plain branch name given to a read (``read_file``, ``list_files``, ``log``,
  ``checkout``, ``create_branch``'s base) means the remote-tracking ref
  ``refs/remotes/<remote>/<name>``, i.e. the remote as of the last ``tip()`` or commit. Full
  ref names (``refs/...``), object ids and ``HEAD`` are used as given.

Every git command goes through ``gitops_agent.git.process`` (explicit git dir, no hooks, fsmonitor,
attribute drivers, system or global config, no secret in the environment). Identity always comes
from ``author_name``/``author_email`` through the environment. Credentials only ever travel in the
environment of network commands (``auth_env``), so no token is written to ``.git/config``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

from gitops_agent.core.errors import AgentError
from gitops_agent.git.checkout import Checkout
from gitops_agent.git.commits import Commits
from gitops_agent.git.export import Checkouts
from gitops_agent.git.messages import Commit, format_message, parse_trailers
from gitops_agent.git.process import GitRunner
from gitops_agent.git.reads import Reads
from gitops_agent.git.sync import Sync

__all__ = ["Commit", "GitRepo", "format_message", "parse_trailers"]


class GitRepo(GitRunner):
    """A repository used as the agent's store (implements ``gitops_agent.core.seams.GitStore``):
    the runner of its git commands, and four parts that each do one thing with it -- reading
    (``Reads``), committing (``Commits``), branches on a remote (``Sync``) and throwaway working
    trees (``Checkouts``). The methods below are the store's whole surface; each hands over to
    its part."""

    #: serialise commit_files on the same branch between threads of this process (the
    #: compare-and-swap still guards against other processes); tests turn it off to race.
    serialize_threads: bool = True
    #: applied to every file content a commit writes, (path, bytes) -> bytes; the Runtime sets
    #: it to the redaction of gitops_agent.safety, so no secret the process knows is ever committed
    redact: "Callable[[str, bytes], bytes] | None" = None

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.reads, self.commits, self.sync, self.checkouts = Reads(self), Commits(self), Sync(self), Checkouts(self)

    # -- reading
    def read_files(self, ref: str, paths: list[str]) -> dict[str, bytes | None]:
        return self.reads.read_files(ref, paths)

    def read_file(self, ref: str, path: str) -> bytes | None:
        return self.reads.read_file(ref, path)

    def list_files(self, ref: str, prefix: str = "") -> list[str]:
        return self.reads.list_files(ref, prefix)

    def list_blobs(self, ref: str, prefix: str = "") -> dict[str, str]:
        return self.reads.list_blobs(ref, prefix)

    def read_blobs(self, ids: list[str]) -> dict[str, bytes]:
        return self.reads.read_blobs(ids)

    def log(self, ref: str, max_count: int | None = None, grep_trailer: tuple[str, str] | None = None) -> list[Commit]:
        return self.reads.log(ref, max_count, grep_trailer)

    def find_commit(self, ref: str, trailers: dict[str, str]) -> Commit | None:
        return self.reads.find_commit(ref, trailers)

    # -- committing
    def commit_files(
        self,
        branch: str,
        changes: dict[str, bytes | None],
        message: str,
        trailers: dict[str, str],
        base: str | None = None,
        *,
        modes: dict[str, str] | None = None,
    ) -> str:
        return self.commits.commit_files(branch, changes, message, trailers, base, modes=modes)

    def checked_out(self, branch: str) -> bool:
        """Whether a worktree of this repository has ``branch`` checked out (a local commit to it
        is refused: it would change that checkout under its user)."""
        return self.commits.checked_out(branch)

    # -- branches on a remote
    def tip(self, branch: str, fetch: bool = True) -> str | None:
        return self.sync.tip(branch, fetch)

    def fetch_branches(self, prefix: str) -> dict[str, str]:
        return self.sync.fetch_branches(prefix)

    def fetch_deeper(self, branch: str, depth: int) -> None:
        self.sync.fetch_deeper(branch, depth)

    def fetch_commit(self, sha: str) -> bool:
        return self.sync.fetch_commit(sha)

    def create_branch(self, branch: str, base_ref: str | None, trailers: dict[str, str] | None = None) -> str:
        return self.sync.create_branch(branch, base_ref, trailers)

    def share_branch(self, branch: str) -> str:
        return self.sync.share_branch(branch)

    # -- throwaway working trees
    def checkouts_dir(self) -> Path:
        return self.checkouts.checkouts_dir()

    def checkout(
        self, ref: str, name: str, *, skip: tuple[str, ...] | list[str] = (), keep: tuple[str, ...] | list[str] = ()
    ) -> AbstractContextManager[Checkout]:
        return self.checkouts.checkout(ref, name, skip=skip, keep=keep)

    def export_files(self, ref: str, prefix: str, dest: Path, perms: dict[str, int] | None = None) -> list[str]:
        return self.checkouts.export_files(ref, prefix, dest, perms)

    @classmethod
    def clone(
        cls,
        url: str,
        dest: Path | str,
        branch: str | None = None,
        *,
        depth: int | None = 1,
        auth_env: dict[str, str] | None = None,
        filter: str | None = None,
        checkout: bool = False,
        **kw,
    ) -> "GitRepo":
        """Shallow (``depth``) single-branch clone of ``url`` into ``dest``, as a remote-mode
        GitRepo with remote "origin". Credentials go in ``auth_env``, never in the URL. No
        working tree is checked out unless ``checkout`` (the agent reads the object store only)."""
        parts = urlsplit(url)
        if parts.password:
            raise AgentError("the clone URL carries a password; pass credentials in auth_env instead")
        dest = Path(dest)
        args = ["clone", "--quiet", "--single-branch", "--no-tags"]
        if depth:
            args.append(f"--depth={int(depth)}")
        if branch:
            args += ["--branch", branch]
        if filter:
            args.append(f"--filter={filter}")
        if not checkout:
            args.append("--no-checkout")
        args += ["--", url, str(dest)]
        repo = cls(dest, remote="origin", auth_env=auth_env, **kw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        repo._run(args, network=True, cwd=dest.parent)
        return repo
