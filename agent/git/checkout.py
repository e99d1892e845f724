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

import hashlib
import os
import shutil
import stat
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import pathspec

from agent.core.errors import AgentError
from agent.git.locks import named_lock
from agent.git.names import CHECKOUT_NAME, dec, path_problem

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
MAX_DEPTH = 64


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


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def blob_id(data: bytes, sha1: bool = True) -> str:
    h = hashlib.sha1() if sha1 else hashlib.sha256()
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


class Checkout:
    """An exported tree at ``path`` and its manifest ({path: Entry})."""

    def __init__(self, path: Path, manifest: dict[str, Entry], sha1: bool = True):
        self.path = Path(path)
        self.manifest = manifest
        self.sha1 = sha1

    def __fspath__(self) -> str:
        return str(self.path)

    def collect(self, caps: Caps | None = None) -> Collected:
        """What differs from the manifest: written, linked and deleted files (paths relative to
        the root). Nothing is followed or read without its size checked first; what cannot be
        taken is in ``refused`` with the reason."""
        caps = caps or Caps()
        out = Collected()
        seen: set[str] = set()
        walked: set[str] = set()  # directories read to the end: only there can a file be "deleted"
        budget = [caps.max_total_bytes, caps.max_entries]
        root = os.open(self.path, _DIR_FLAGS)
        try:
            self._walk(root, "", 0, caps, out, seen, walked, budget, [])
        finally:
            os.close(root)
        for p in sorted(self.manifest):
            parent = p.rpartition("/")[0]
            if p not in seen and parent in walked:
                out.changes[p] = Output("deleted")
        return out

    # -- the walk ---------------------------------------------------------------------------

    def _walk(self, dfd: int, prefix: str, depth: int, caps: Caps, out: Collected, seen: set[str],
              walked: set[str], budget: list[int], ignores: list[tuple[str, pathspec.GitIgnoreSpec]]) -> None:
        try:
            with os.scandir(dfd) as it:
                names = sorted(e.name for e in it)
        except OSError as e:
            out.refused.append(f"{prefix or '.'}/: not read ({e.strerror})")
            return
        if ".gitignore" in names:
            spec = self._ignore_spec(dfd)
            if spec is not None:
                ignores = ignores + [(prefix, spec)]
        complete = True
        for raw in names:
            name = raw if isinstance(raw, str) else os.fsdecode(raw)
            rel = f"{prefix}{name}"
            if budget[1] <= 0:
                out.refused.append(f"{rel}: not read (more than {caps.max_entries} changed entries in one step)")
                complete = False
                break
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if name.lower() == ".git":
                out.refused.append(f"{rel}: refused ('.git' entries are never taken from the working tree)")
                seen.add(rel)
                continue
            problem = path_problem(rel)
            if problem:
                out.refused.append(f"{rel!r}: refused (bad file name: {problem})")
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if ignores and rel not in self.manifest and _ignored(rel + ("/" if is_dir else ""), ignores):
                if not is_dir or not any(p.startswith(rel + "/") for p in self.manifest):
                    continue  # ignored, as git would ignore it (tracked files are never ignored)
            if is_dir:
                if depth + 1 >= MAX_DEPTH:
                    out.refused.append(f"{rel}/: refused (nested more than {MAX_DEPTH} directories deep)")
                    continue
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                except OSError as e:
                    out.refused.append(f"{rel}/: not read ({e.strerror})")
                    continue
                try:
                    self._walk(sub, rel + "/", depth + 1, caps, out, seen, walked, budget, ignores)
                finally:
                    os.close(sub)
                continue
            seen.add(rel)
            old = self.manifest.get(rel)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(name, dir_fd=dfd)
                except OSError:
                    continue
                data = os.fsencode(target)
                if old is not None and old.mode == "120000" and old.blob == blob_id(data, self.sha1):
                    continue
                budget[1] -= 1
                out.changes[rel] = Output("symlink", data, "120000")
                continue
            if not stat.S_ISREG(st.st_mode):
                budget[1] -= 1
                out.refused.append(f"{rel}: refused (not a regular file)")
                continue
            mode = "100755" if st.st_mode & stat.S_IXUSR else "100644"
            if old is not None and old.mode == mode and old.stat == _stat_key(st):
                continue  # untouched since the export
            if st.st_size > caps.max_file_bytes:
                budget[1] -= 1
                out.refused.append(f"{rel}: refused ({st.st_size / 1e6:.1f} MB is over the {caps.max_file_bytes / 2**20:g} MB cap)")
                continue
            if st.st_size > budget[0]:
                budget[1] -= 1
                out.refused.append(f"{rel}: refused (the step's files are over {caps.max_total_bytes / 2**20:g} MB in all)")
                continue
            data = self._read(dfd, name, caps.max_file_bytes)
            if data is None:
                out.refused.append(f"{rel}: refused (not a regular file, or it changed while it was read)")
                continue
            if old is not None and old.mode == mode and old.blob == blob_id(data, self.sha1):
                continue  # rewritten with the same content
            budget[0] -= len(data)
            budget[1] -= 1
            out.changes[rel] = Output("file", data, mode)
        if complete:
            walked.add(prefix.rstrip("/"))

    @classmethod
    def _ignore_spec(cls, dfd: int) -> "pathspec.GitIgnoreSpec | None":
        data = cls._read(dfd, ".gitignore", 256 * 1024)
        if data is None:
            return None
        try:
            return pathspec.GitIgnoreSpec.from_lines(data.decode("utf-8", "replace").splitlines())
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
        res = spec.check_file(rel[len(prefix):])
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


_ACTIVE: set[Path] = set()  # this process's checkouts, for a quit that cannot unwind (Ctrl-C twice)
_ACTIVE_LOCK = threading.Lock()


def remove_active() -> None:
    """Remove this process's checkouts now (before a hard exit)."""
    with _ACTIVE_LOCK:
        paths = list(_ACTIVE)
    for path in paths:
        remove_tree(path)
        Path(f"{path}.pid").unlink(missing_ok=True)


class Checkouts:
    """Mixin of ``GitRepo``: throwaway working trees, exported from the object store."""

    def checkouts_dir(self) -> Path:
        return self.common_dir / "gitops-agent" / "checkouts"

    @contextmanager
    def checkout(self, ref: str, name: str, *, skip: tuple[str, ...] | list[str] = (),
                 keep: tuple[str, ...] | list[str] = ()) -> Iterator[Checkout]:
        """The tree of ``ref`` as plain files in ``<git-common-dir>/gitops-agent/checkouts/<name>``
        (removed on exit; one left by a killed process is removed by the next checkout). Paths
        under a ``skip`` prefix (e.g. ``.agent/``) are left out, except those under a ``keep``
        prefix (a dependency's step folder), so the checkout does not grow with the task."""
        if not CHECKOUT_NAME.fullmatch(name or ""):
            raise AgentError(f"bad checkout name {name!r}")
        sha = self._resolve(ref)
        base = self.checkouts_dir()
        path = base / name
        with named_lock("checkout", str(self.common_dir)):
            base.mkdir(parents=True, exist_ok=True)
            sweep_stale(base)
            (base / f"{name}.pid").write_text(str(os.getpid()))  # before the directory: see sweep_stale
            if path.exists() or path.is_symlink():
                remove_tree(path)
            path.mkdir()
        with _ACTIVE_LOCK:
            _ACTIVE.add(path)
        try:
            manifest = self._export(sha, path, tuple(skip), tuple(keep))
            yield Checkout(path, manifest, self._sha1)
        finally:
            with named_lock("checkout", str(self.common_dir)):
                remove_tree(path)
                (base / f"{name}.pid").unlink(missing_ok=True)
            with _ACTIVE_LOCK:
                _ACTIVE.discard(path)

    def _export(self, sha: str, dest: Path, skip: tuple[str, ...], keep: tuple[str, ...]) -> dict[str, Entry]:
        listing = self._run(["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", sha]).stdout
        entries: list[tuple[str, str, bytes]] = []
        for rec in listing.split(b"\0"):
            if not rec:
                continue
            meta, _, name = rec.partition(b"\t")
            mode, kind, oid = meta.split()
            path = dec(name)
            if kind != b"blob" or mode.decode() not in ("100644", "100755", "120000") or path_problem(path):
                continue  # submodules, and names nobody could commit
            if any(path.startswith(s) for s in skip) and not any(path.startswith(k) for k in keep):
                continue
            entries.append((path, mode.decode(), oid.decode()))
        manifest: dict[str, Entry] = {}
        if not entries:
            return manifest
        with tempfile.TemporaryDirectory(prefix="gitops-agent-export-") as td:
            ids = Path(td) / "ids"
            ids.write_text("".join(oid + "\n" for _, _, oid in entries))
            args, proc = self._spawn(["cat-file", "--batch"], stdin_path=ids)
            writer = _TreeWriter(dest)
            try:
                for path, mode, oid in entries:
                    header = proc.stdout.readline().split()
                    if len(header) != 3:
                        raise AgentError(f"export of {sha[:12]}: blob {oid} of {path} is missing")
                    size = int(header[2])
                    st = writer.write(path, mode, proc.stdout, size)
                    proc.stdout.read(1)  # the newline after each object
                    manifest[path] = Entry(mode, oid, _stat_key(st))
            finally:
                writer.close()
                proc.stdout.close()
                err = proc.stderr.read()
                proc.stderr.close()
                if proc.wait() != 0:
                    raise AgentError(f"export of {sha[:12]} failed: {dec(err)[-500:]}")
        return manifest


class _TreeWriter:
    """Writes files of a tree in order, keeping open only the directories on the current path."""

    def __init__(self, root: Path):
        self.stack: list[tuple[str, int]] = [("", os.open(root, _DIR_FLAGS))]

    def _dir(self, parent: str) -> int:
        parts = parent.split("/") if parent else []
        # close what is not on the new path
        keep = 1
        while keep < len(self.stack) and keep - 1 < len(parts) and self.stack[keep][0] == "/".join(parts[:keep]):
            keep += 1
        for _, fd in self.stack[keep:]:
            os.close(fd)
        del self.stack[keep:]
        for i in range(len(self.stack) - 1, len(parts)):
            name = parts[i]
            fd = self.stack[-1][1]
            try:
                os.mkdir(name, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            self.stack.append(("/".join(parts[: i + 1]), os.open(name, _DIR_FLAGS, dir_fd=fd)))
        return self.stack[-1][1]

    def write(self, path: str, mode: str, src, size: int) -> os.stat_result:
        parent, _, name = path.rpartition("/")
        dfd = self._dir(parent)
        if mode == "120000":
            target = src.read(size)
            os.symlink(os.fsdecode(target), name, dir_fd=dfd)
        else:
            fd = os.open(name, _WRITE_FLAGS, 0o755 if mode == "100755" else 0o644, dir_fd=dfd)
            try:
                left = size
                while left > 0:
                    chunk = src.read(min(left, 1 << 20))
                    if not chunk:
                        raise AgentError(f"export: {path} was cut short")
                    left -= len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)

    def close(self) -> None:
        for _, fd in self.stack:
            os.close(fd)
        self.stack = []


def sweep_stale(base: Path) -> None:
    """Remove checkouts whose process is gone (killed with -9: nothing else could clean up)."""
    for marker in base.glob("*.pid"):
        try:
            pid = int(marker.read_text().strip() or "0")
        except (OSError, ValueError):
            pid = 0
        if pid == os.getpid() or (pid > 0 and _alive(pid)):
            continue
        remove_tree(base / marker.name[: -len(".pid")])
        marker.unlink(missing_ok=True)
    for d in base.iterdir():  # a checkout without a marker (made by an older version)
        if d.is_dir() and not (base / f"{d.name}.pid").exists():
            remove_tree(d)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
