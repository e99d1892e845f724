"""A step's working tree: a plain directory exported from the object store, and the files the
model's code left in it, read back safely.

There is no ``.git`` in it and git never runs over it: whatever the code writes there (a ``.git``
entry of its own, hooks, ``core.fsmonitor``, ``.gitattributes`` drivers) is data to the host,
never configuration. Reading it back follows no link the code made: directories are opened with
``O_NOFOLLOW`` relative to their parent's descriptor, files with ``O_NOFOLLOW | O_NONBLOCK``, and
a file's size is checked (``fstat``) before anything of it is read. Unchanged files are found by
their stat data (inode, size, mtime, ctime: the code cannot set ctime) and, when that differs, by
their blob id, so a step that touches nothing costs one directory walk. New files that the
tree's ``.gitignore`` files ignore are left out, as git would (``pathspec``'s gitignore rules).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pathspec

from gitops_agent.git.names import path_problem

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
MAX_DEPTH = 64
MAX_IGNORE_LINES = 500


@dataclass(frozen=True)
class Entry:
    """A file as it was exported: git mode, blob id, and stat data to recognise it unchanged."""

    mode: str
    blob: str
    stat: tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns


@dataclass
class Output:
    """One change the code made: a file written (``data``, ``mode`` 100644/100755), a symbolic
    link made (``data`` is its target), or a file deleted (``data`` None)."""

    kind: Literal["file", "symlink", "deleted"]
    data: bytes | None = None
    mode: str = "100644"


@dataclass
class Collected:
    changes: dict[str, Output] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # "path: why", for step.json


@dataclass(frozen=True)
class Caps:
    """How much of a working tree is read back."""

    max_file_bytes: int = 10 * 1024 * 1024
    max_total_bytes: int = 100 * 1024 * 1024
    max_entries: int = 5000


@dataclass
class _Walk:
    """What one collect() carries through the walk of the tree."""

    caps: Caps
    out: Collected = field(default_factory=Collected)
    seen: set[str] = field(default_factory=set)
    walked: set[str] = field(default_factory=set)  # directories read to the end: only there can a file be "deleted"
    budget: list[int] = field(init=False)  # [bytes, entries] still allowed

    def __post_init__(self) -> None:
        self.budget = [self.caps.max_total_bytes, self.caps.max_entries]


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def blob_id(data: bytes, sha1: bool = True) -> str:
    h = hashlib.sha1() if sha1 else hashlib.sha256()
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


class Checkout:
    """An exported tree at ``path`` and its manifest ({path: Entry})."""

    def __init__(self, path: Path, manifest: dict[str, Entry], sha1: bool = True, ignores: dict[str, bytes] | None = None):
        self.path = Path(path)
        self.manifest = manifest
        self.sha1 = sha1
        # the .gitignore files as exported (before the code ran), by directory: what the code
        # writes into a .gitignore never decides what the host skips
        self.ignore_texts = dict(ignores or {})
        self._sorted = sorted(manifest)

    def __fspath__(self) -> str:
        return str(self.path)

    def collect(self, caps: Caps | None = None) -> Collected:
        """What differs from the manifest: written, linked and deleted files (paths relative to
        the root). Nothing is followed or read without its size checked first; what cannot be
        taken is in ``refused`` with the reason."""
        caps = caps or Caps()
        w = _Walk(caps)
        root = os.open(self.path, _DIR_FLAGS)
        try:
            self._walk(root, "", 0, w, [])
        finally:
            os.close(root)
        out = w.out
        for p in sorted(self.manifest):
            parent = p.rpartition("/")[0]
            if p not in w.seen and parent in w.walked:
                out.changes[p] = Output("deleted")
        return out

    # -- the walk ---------------------------------------------------------------------------

    def _walk(self, dfd: int, prefix: str, depth: int, w: _Walk, ignores: list[tuple[str, pathspec.GitIgnoreSpec]]) -> None:
        """Reads the directory open at ``dfd`` (``prefix`` in the tree) and what is under it."""
        try:
            with os.scandir(dfd) as it:
                names = sorted(e.name for e in it)
        except OSError as e:
            w.out.refused.append(f"{prefix or '.'}/: not read ({e.strerror})")
            return
        spec = self._ignore_spec(prefix)
        if spec is not None:
            ignores = ignores + [(prefix, spec)]
        complete = True
        for raw in names:
            name = raw if isinstance(raw, str) else os.fsdecode(raw)
            rel = f"{prefix}{name}"
            if w.budget[1] <= 0:
                w.out.refused.append(f"{rel}: not read (more than {w.caps.max_entries} changed entries in one step)")
                complete = False
                break
            self._take_entry(dfd, name, rel, depth, w, ignores)
        if complete:
            w.walked.add(prefix.rstrip("/"))

    def _take_entry(
        self, dfd: int, name: str, rel: str, depth: int, w: _Walk, ignores: list[tuple[str, pathspec.GitIgnoreSpec]]
    ) -> None:
        """One entry of a directory, by its lstat: refused, skipped, walked into or taken."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return  # gone meanwhile
        if self._refused_name(name, rel, w):
            return
        is_dir = stat.S_ISDIR(st.st_mode)
        if not is_dir:
            # a directory of the tree replaced by a file or a link: everything under it is gone
            for gone in self._under(rel):
                w.seen.add(gone)
                w.out.changes[gone] = Output("deleted")
        if ignores and rel not in self.manifest and _ignored(rel + ("/" if is_dir else ""), ignores):
            if not is_dir or not self._under(rel):
                w.budget[1] -= 1  # ignored entries still count: a million of them is not free
                return  # ignored, as git would ignore it (tracked files are never ignored)
        if is_dir:
            self._walk_into(dfd, name, rel, depth, w, ignores)
            return
        w.seen.add(rel)
        if stat.S_ISLNK(st.st_mode):
            self._take_symlink(dfd, name, rel, w)
            return
        self._take_file(dfd, name, rel, st, w)

    @staticmethod
    def _refused_name(name: str, rel: str, w: _Walk) -> bool:
        """A '.git' entry or a bad file name: refused (True), nothing of it read."""
        if name.lower() == ".git":
            w.out.refused.append(f"{rel}: refused ('.git' entries are never taken from the working tree)")
            w.seen.add(rel)
            return True
        problem = path_problem(rel)
        if problem:
            w.out.refused.append(f"{rel!r}: refused (bad file name: {problem})")
            return True
        return False

    def _walk_into(
        self, dfd: int, name: str, rel: str, depth: int, w: _Walk, ignores: list[tuple[str, pathspec.GitIgnoreSpec]]
    ) -> None:
        """A subdirectory: opened without following a link, at most MAX_DEPTH deep."""
        if depth + 1 >= MAX_DEPTH:
            w.out.refused.append(f"{rel}/: refused (nested more than {MAX_DEPTH} directories deep)")
            return
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
        except OSError as e:
            w.out.refused.append(f"{rel}/: not read ({e.strerror})")
            return
        try:
            self._walk(sub, rel + "/", depth + 1, w, ignores)
        finally:
            os.close(sub)

    def _take_symlink(self, dfd: int, name: str, rel: str, w: _Walk) -> None:
        """A symbolic link: its target is taken as data (never followed), unless it is as exported."""
        old = self.manifest.get(rel)
        try:
            target = os.readlink(name, dir_fd=dfd)
        except OSError:
            return
        data = os.fsencode(target)
        if old is not None and old.mode == "120000" and old.blob == blob_id(data, self.sha1):
            return
        w.budget[1] -= 1
        w.out.changes[rel] = Output("symlink", data, "120000")

    def _take_file(self, dfd: int, name: str, rel: str, st: os.stat_result, w: _Walk) -> None:
        """A regular file, read (by descriptor, within the caps) unless its stat data or its blob
        id shows it unchanged; anything else is refused."""
        old = self.manifest.get(rel)
        if not stat.S_ISREG(st.st_mode):
            w.budget[1] -= 1
            w.out.refused.append(f"{rel}: refused (not a regular file)")
            return
        mode = "100755" if st.st_mode & stat.S_IXUSR else "100644"
        if old is not None and old.mode == mode and old.stat == _stat_key(st):
            return  # untouched since the export
        if st.st_size > w.caps.max_file_bytes:
            w.budget[1] -= 1
            w.out.refused.append(
                f"{rel}: refused ({st.st_size / 1e6:.1f} MB is over the {w.caps.max_file_bytes / 2**20:g} MB cap)"
            )
            return
        if st.st_size > w.budget[0]:
            w.budget[1] -= 1
            w.out.refused.append(f"{rel}: refused (the step's files are over {w.caps.max_total_bytes / 2**20:g} MB in all)")
            return
        data = self._read(dfd, name, w.caps.max_file_bytes)
        if data is None:
            w.out.refused.append(f"{rel}: refused (not a regular file, or it changed while it was read)")
            return
        if old is not None and old.mode == mode and old.blob == blob_id(data, self.sha1):
            return  # rewritten with the same content
        w.budget[0] -= len(data)
        w.budget[1] -= 1
        w.out.changes[rel] = Output("file", data, mode)

    def _under(self, rel: str) -> list[str]:
        """Manifest paths strictly under directory ``rel``."""
        lo = bisect.bisect_left(self._sorted, rel + "/")
        hi = bisect.bisect_left(self._sorted, rel + "0")  # "0" sorts right after "/"
        return self._sorted[lo:hi]

    def _ignore_spec(self, prefix: str) -> "pathspec.GitIgnoreSpec | None":
        data = self.ignore_texts.get(prefix.rstrip("/"))
        if data is None:
            return None
        # patterns are compiled to Python regular expressions: keep them small, so no pattern
        # can make matching take exponential time
        lines = [
            line
            for line in data.decode("utf-8", "replace").splitlines()[:MAX_IGNORE_LINES]
            if len(line) <= 200 and line.count("*") <= 3 and line.count("?") <= 8
        ]
        try:
            return pathspec.GitIgnoreSpec.from_lines(lines)
        except Exception:  # noqa: BLE001 - a broken .gitignore ignores nothing
            return None

    @staticmethod
    def _read(dfd: int, name: str, cap: int) -> bytes | None:
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > cap:
                return None
            chunks, left = [], st.st_size + 1
            while left > 0:
                b = os.read(fd, min(left, 1 << 20))
                if not b:
                    break
                chunks.append(b)
                left -= len(b)
            data = b"".join(chunks)
            return data if len(data) <= cap else None
        finally:
            os.close(fd)


def _ignored(rel: str, ignores: list[tuple[str, "pathspec.GitIgnoreSpec"]]) -> bool:
    """gitignore semantics across nested files: the deepest .gitignore with a matching pattern decides."""
    for prefix, spec in reversed(ignores):
        res = spec.check_file(rel[len(prefix) :])
        if res.include is not None:
            return bool(res.include)
    return False


def remove_tree(path: Path) -> None:
    """Remove a directory the model's code may have made hard to remove (read-only directories,
    no permissions): links are removed, never followed."""

    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)
