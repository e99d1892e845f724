"""Memory: the orphan branch ``agent/memory`` (docs/design.md, "Memory and brain").

    agent/memory
      experiences/<task-id>.json     one per finished task (``Experience``), written by finish
      data/...                       shared data sets (``gitops-agent memory add-data``), mounted
                                     read-only into the sandbox

One file per task, so tasks finishing at the same moment never touch the same path: each one's
commit is re-applied on the new tip after a lost race (``GitRepo.commit_files``' fetch-rebase-
retry, with a generous retry count) and all of them land.

Two ways to reach the branch, like every other branch (``gitops_agent.git.repo``):

* local mode: the branch is a ref of the repository itself; nothing is fetched.
* remote mode: a small cache repository ``<git-common-dir>/gitops-agent/memory.git`` holds the
  remote's memory branch only, fetched shallow (depth 1), single-branch and blobless
  (``--filter=blob:none``, where the remote allows it). Reading the experiences then fetches
  only the experience blobs it does not have yet, in one request, and reads them all with one
  ``git cat-file --batch``. Data set blobs are fetched only when a step needs the data.

Retrieval (``gitops_agent.memory.retrieval``) runs over question + plan outline + summary + lessons; the
index is cached under ``<git-common-dir>/gitops-agent/memory-index/<memory tip>-<method>``.

Memory must never fail a task: the hooks used by the steps (``planner_memory``,
``record_experience``, ``attach_data``) catch everything and report it as an ``error`` event.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from gitops_agent.core.errors import AgentError, ConfigError, GitError, PushRetriesExhausted
from gitops_agent.core.state import TASK_ID_RE, check_task_id
from gitops_agent.git.process import run_git
from gitops_agent.git.repo import GitRepo

if TYPE_CHECKING:  # pragma: no cover
    pass

from gitops_agent.memory.data import DataSets, _prune, _rmtree_ro  # noqa: F401
from gitops_agent.memory.experience import (
    DEFAULT_K,
    EXPERIENCES_DIR,
    MEMORY_BRANCH,
    Experience,
    dump_experience,
    experience_path,
    parse_experience,
)
from gitops_agent.memory.index import Hit, IndexCache, MemoryIndex, _enabled, default_method  # noqa: F401

# ----------------------------------------------------------------------------- git plumbing


class _PartialCache(GitRepo):
    """The remote-mode cache repository: always fetched shallow (depth 1); commits are built
    with ``write-tree --missing-ok`` so blobs that were never fetched (blobless clone) are not
    fetched one by one just to write a tree that refers to them."""

    def is_shallow(self) -> bool:  # noqa: D401
        return True

    def _run(self, args, **kw):  # type: ignore[override]
        if list(args) == ["write-tree"]:
            args = ["write-tree", "--missing-ok"]
        return super()._run(args, **kw)


class MemoryStore:
    """The memory branch of one repository (local mode) or of its remote (remote mode)."""

    #: Memory writes never clash on paths, so losing a race only means that other tasks
    #: finished at the same moment: each round is one attempt (``push_retries`` extra ones
    #: inside the git store), then a jittered wait that grows linearly with the losses (capped),
    #: which spreads a crowd of writers better than the git store's exponential back-off.
    push_retries = 0
    rounds = 80
    CHUNK = 1000  # files per commit for bulk writes (add_data)

    def __init__(self, git: GitRepo, cache_dir: Path, *, partial: bool = False):
        self.git = git
        self.cache_dir = Path(cache_dir)
        self.partial = partial
        self.problems: list[str] = []  # experience files that did not validate (last load)
        #: False for a view of a remote's memory as last fetched (``open_read``): reads never fetch
        self.fetch = True
        self._lock = threading.Lock()
        self._index: MemoryIndex | None = None
        self.datasets, self.indexes = DataSets(self), IndexCache(self)

    # -- the shared data sets (gitops_agent/memory/data.py)
    def add_data(self, src: Path | str, name: str | None = None) -> tuple[str, list[str]]:
        return self.datasets.add_data(src, name)

    def data_files(self, tip: str | None = None) -> list[str]:
        return self.datasets.data_files(tip)

    def materialize_data(self) -> Path | None:
        return self.datasets.materialize_data()

    # -- the retrieval index (gitops_agent/memory/index.py)
    def index(self, method: str | None = None, tip: str | None = None, rebuild: bool = False) -> MemoryIndex:
        return self.indexes.index(method, tip, rebuild)

    def search(self, query: str, k: int = DEFAULT_K, method: str | None = None, exclude: Iterable[str] = ()) -> list[Hit]:
        return self.indexes.search(query, k, method, exclude)

    def reindex(self, method: str | None = None) -> MemoryIndex:
        return self.indexes.reindex(method)

    @classmethod
    def open(cls, git: GitRepo) -> "MemoryStore":
        """The memory of ``git``'s repository: its own refs in local mode, a blobless shallow
        cache of the remote's memory branch in remote mode."""
        cache = git.common_dir / "gitops-agent"
        kw = dict(author_name=git.author_name, author_email=git.author_email, push_retries=cls.push_retries)
        if git.remote is None:
            return cls(GitRepo(git.repo, remote=None, **kw), cache)
        url = git.git("remote", "get-url", git.remote).strip()
        if url and "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url) and not os.path.isabs(url):
            url = str((Path(git.repo) / url).resolve())  # a relative local path
        path = cache / "memory.git"
        _init_cache_repo(path, url)
        return cls(_PartialCache(path, remote="origin", auth_env=git.auth_env, **kw), cache, partial=True)

    @classmethod
    def open_read(cls, git: GitRepo) -> "MemoryStore":
        """For reading only (`memory list`, `search`, `show`): the memory of ``git``'s
        repository; in local mode without one, a remote's as last fetched (its remote-tracking
        ref, as in a fresh clone), the way `tasks` and `show` find tasks. Nothing is fetched."""
        store = cls.open(git)
        if git.remote is not None or store.tip(fetch=False) is not None:
            return store
        for remote in git.git("remote").split():
            view = GitRepo(git.repo, remote=remote, author_name=git.author_name, author_email=git.author_email)
            if view.tip(MEMORY_BRANCH, fetch=False) is not None:
                found = cls(view, store.cache_dir)
                found.fetch = False
                return found
        return store

    # ------------------------------------------------------------- the branch

    def tip(self, fetch: bool = True) -> str | None:
        return self.git.tip(MEMORY_BRANCH, fetch=fetch and self.fetch)

    def ensure(self) -> str:
        """The memory branch's tip, creating the branch (an orphan root commit with an empty
        tree) if it does not exist. Two creating it at once: one wins, both go on."""
        tip = self.tip()
        if tip is not None:
            return tip
        try:
            return self.git.create_branch(MEMORY_BRANCH, None, trailers={"Agent-Role": "memory"})
        except AgentError as e:
            if "already exists" not in str(e):
                raise
            tip = self.tip()
            if tip is None:
                raise
            return tip

    def commit(
        self,
        changes: dict[str, bytes | None],
        subject: str,
        trailers: dict[str, str] | None = None,
        body: str = "",
        modes: dict[str, str] | None = None,
    ) -> str:
        """One commit on the memory branch (created if missing), re-applied on the new tip as
        often as it takes while other writers win the race."""
        self.ensure()
        message = subject + ("\n\n" + body if body else "")
        trailers = {"Agent-Role": "memory", **(trailers or {})}
        for attempt in range(self.rounds):
            try:
                return self.git.commit_files(MEMORY_BRANCH, changes, message, trailers, modes=modes)
            except PushRetriesExhausted:
                if attempt == self.rounds - 1:
                    raise
                time.sleep(random.uniform(0.0, min(1.5, 0.15 * (attempt + 1))))
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------- experiences

    def add_experience(self, exp: Experience) -> str:
        return self.commit(
            {exp.path: dump_experience(exp)},
            f"memory: {exp.task_id} ({exp.outcome})",
            {"Agent-Task": exp.task_id, "Agent-Outcome": exp.outcome},
        )

    def _ls(self, tip: str, prefix: str) -> list[tuple[str, str, str, str]]:
        """(mode, type, oid, path) of every entry under ``prefix`` at ``tip`` (no blob is read)."""
        out = self.git._run(["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", tip, "--", prefix]).stdout
        rows = []
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, _, name = rec.partition(b"\t")
            mode, kind, oid = meta.decode().split()
            rows.append((mode, kind, oid, name.decode("utf-8", "surrogateescape")))
        return rows

    def experience_files(self, tip: str | None = None) -> dict[str, str]:
        """task id -> blob id of every experience at ``tip`` (default: the current tip)."""
        tip = tip or self.tip()
        if tip is None:
            return {}
        out = {}
        for mode, kind, oid, path in self._ls(tip, EXPERIENCES_DIR):
            name = path[len(EXPERIENCES_DIR) + 1 :]
            if kind == "blob" and name.endswith(".json") and "/" not in name and TASK_ID_RE.fullmatch(name[:-5]):
                out[name[:-5]] = oid
        return out

    def _missing(self, tip: str, oids: set[str]) -> list[str]:
        """Which of ``oids`` (blobs under ``tip``) are not in the cache yet (never fetches)."""
        if not self.partial or not oids:
            return []
        out = self.git._run(["rev-list", "--objects", "--missing=print", tip]).stdout.decode()
        return [line[1:] for line in out.splitlines() if line.startswith("?") and line[1:] in oids]

    def _prefetch(self, tip: str, oids: Iterable[str]) -> None:
        """Fetch the missing ones of ``oids`` in one request (remote mode, blobless cache)."""
        missing = self._missing(tip, set(oids))
        if not missing:
            return
        # what git's own lazy fetch runs, for all of them at once (object ids as refspecs)
        self.git._run(
            [
                "-c",
                "fetch.negotiationAlgorithm=noop",
                "fetch",
                "--quiet",
                "origin",
                "--no-tags",
                "--no-write-fetch-head",
                "--recurse-submodules=no",
                "--no-auto-maintenance",
                "--filter=blob:none",
                "--stdin",
            ],
            input=("\n".join(missing) + "\n").encode(),
            network=True,
        )

    def _cat(self, oids: list[str]) -> list[bytes]:
        """The contents of blobs ``oids``, in order, from one ``git cat-file --batch``."""
        if not oids:
            return []
        p = self.git._run(["cat-file", "--batch"], input=("\n".join(oids) + "\n").encode(), check=False)
        if p.returncode != 0:
            raise GitError(["cat-file", "--batch"], p.returncode, p.stderr.decode(errors="replace"))
        out, pos, buf = [], 0, p.stdout
        for oid in oids:
            nl = buf.index(b"\n", pos)
            header = buf[pos:nl].split()
            if len(header) != 3:
                raise GitError(["cat-file", "--batch"], 1, f"object {oid} is missing")
            size = int(header[2])
            out.append(buf[nl + 1 : nl + 1 + size])
            pos = nl + 1 + size + 1
        return out

    def read_raw(self, tip: str | None = None) -> tuple[str | None, list[tuple[str, str, bytes]]]:
        """(tip, [(task id, blob id, raw JSON)]) of every experience, sorted by task id."""
        tip = tip or self.tip()
        if tip is None:
            return None, []
        files = self.experience_files(tip)
        ids = sorted(files)
        self._prefetch(tip, files.values())
        blobs = self._cat([files[i] for i in ids])
        return tip, [(i, files[i], b) for i, b in zip(ids, blobs)]

    def experiences(self, tip: str | None = None, *, with_blobs: bool = False):
        """Every experience that validates (with its blob id if ``with_blobs``); the others are
        listed in ``self.problems``."""
        _, raw = self.read_raw(tip)
        out, problems = [], []
        for tid, oid, data in raw:
            try:
                e = parse_experience(data, f"{MEMORY_BRANCH}:{experience_path(tid)}")
                out.append((e, oid) if with_blobs else e)
            except ConfigError as e:
                problems.append(str(e))
        self.problems = problems
        return out

    def get(self, task_id: str) -> Experience | None:
        check_task_id(task_id)
        tip = self.tip()
        if tip is None:
            return None
        files = self.experience_files(tip)
        oid = files.get(task_id)
        if oid is None:
            return None
        self._prefetch(tip, [oid])
        return parse_experience(self._cat([oid])[0], f"{MEMORY_BRANCH}:{experience_path(task_id)}")


def _init_cache_repo(path: Path, url: str) -> None:
    """A bare partial-clone repository for the remote's memory branch (made once, atomically)."""
    if (path / "HEAD").exists():
        cur = run_git(["config", "--get", "remote.origin.url"], git_dir=path, check=False).stdout.decode().strip()
        if cur != url:
            run_git(["config", "remote.origin.url", url], git_dir=path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-memory-", dir=path.parent))
    try:
        run_git(["init", "-q", "--bare", str(tmp)])
        for args in (
            ["config", "remote.origin.url", url],
            ["config", "remote.origin.promisor", "true"],
            ["config", "remote.origin.partialclonefilter", "blob:none"],
            ["config", "gc.auto", "0"],
            ["config", "maintenance.auto", "false"],
        ):
            run_git(args, git_dir=tmp)
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / "HEAD").exists():
            raise
