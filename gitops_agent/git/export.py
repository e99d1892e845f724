"""Exporting a tree into a checkout (a plain directory, no ``.git``): the files written by
descriptor, never through a link; the checkouts of this process removed on exit, those of a
killed one by the next checkout."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from gitops_agent.core.errors import AgentError
from gitops_agent.git.checkout import _DIR_FLAGS, _WRITE_FLAGS, Checkout, Entry, _stat_key, remove_tree
from gitops_agent.git.locks import named_lock
from gitops_agent.git.names import CHECKOUT_NAME, MODES, check_path, dec, path_problem
from gitops_agent.git.scratch import in_repo

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.git.repo import GitRepo

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
    """Part of ``GitRepo``: throwaway working trees, exported from the object store. It reaches
    the repository's runner and the other parts through ``self.g``, the GitRepo it belongs to."""

    def __init__(self, g: "GitRepo") -> None:
        self.g = g

    def checkouts_dir(self) -> Path:
        return self.g.common_dir / "gitops-agent" / "checkouts"

    @contextmanager
    def checkout(
        self, ref: str, name: str, *, skip: tuple[str, ...] | list[str] = (), keep: tuple[str, ...] | list[str] = ()
    ) -> Iterator[Checkout]:
        """The tree of ``ref`` as plain files in ``<git-common-dir>/gitops-agent/checkouts/<name>``
        (removed on exit; one left by a killed process is removed by the next checkout). Paths
        under a ``skip`` prefix (e.g. ``.agent/``) are left out, except those under a ``keep``
        prefix (a dependency's step folder), so the checkout does not grow with the task."""
        if not CHECKOUT_NAME.fullmatch(name or ""):
            raise AgentError(f"bad checkout name {name!r}")
        sha = self.g._resolve(ref)
        base = self.checkouts_dir()
        path = base / name
        with named_lock("checkout", str(self.g.common_dir)):
            base.mkdir(parents=True, exist_ok=True)
            sweep_stale(base)
            (base / f"{name}.pid").write_text(str(os.getpid()))  # before the directory: see sweep_stale
            if path.exists() or path.is_symlink():
                remove_tree(path)
            path.mkdir()
        with _ACTIVE_LOCK:
            _ACTIVE.add(path)
        try:
            manifest, ignores = self._export(sha, path, tuple(skip), tuple(keep))
            yield Checkout(path, manifest, self.g._sha1, ignores)
        finally:
            with named_lock("checkout", str(self.g.common_dir)):
                remove_tree(path)
                (base / f"{name}.pid").unlink(missing_ok=True)
            with _ACTIVE_LOCK:
                _ACTIVE.discard(path)

    def export_files(self, ref: str, prefix: str, dest: Path, perms: dict[str, int] | None = None) -> list[str]:
        """Write the regular files of ``ref`` under the folder ``prefix`` into the empty directory
        ``dest``, each at its path below ``prefix``, the way a checkout is written: by
        descriptor, never through a link. ``perms``: the permission bits per git mode (default:
        git's, less the umask). Symbolic links and submodules are left out; so is every entry
        whose path ``path_problem`` refuses, and those are returned as "'path': why"."""
        check_path(prefix, "prefix")
        sha = self.g._resolve(ref)
        entries, refused = self._files(sha, prefix)
        cut = len(prefix) + 1
        self._write_blobs(sha, dest, [(p[cut:], mode, oid) for p, mode, oid in entries if mode != "120000"], perms)
        return refused

    def _export(
        self, sha: str, dest: Path, skip: tuple[str, ...], keep: tuple[str, ...]
    ) -> tuple[dict[str, Entry], dict[str, bytes]]:
        files, _ = self._files(sha)  # refused paths are left out, as git's own checkout refuses them
        entries = [e for e in files if not any(e[0].startswith(s) for s in skip) or any(e[0].startswith(k) for k in keep)]
        manifest: dict[str, Entry] = {}
        ignores: dict[str, bytes] = {}
        for (path, mode, oid), st in zip(entries, self._write_blobs(sha, dest, entries)):
            manifest[path] = Entry(mode, oid, _stat_key(st))
            if path.rsplit("/", 1)[-1] == ".gitignore" and mode != "120000" and st.st_size <= 256 * 1024:
                ignores[path.rpartition("/")[0]] = (dest / path).read_bytes()
        return manifest, ignores

    def _files(self, sha: str, prefix: str = "") -> tuple[list[tuple[str, str, str]], list[str]]:
        """(path, mode, blob) of the files and links of ``sha`` (under the folder ``prefix``), in
        tree order, and "'path': why" for those ``path_problem`` refuses: git's object store takes
        any entry name (``git mktree`` makes ``..`` and ``.git``, ``hash-object --literally``
        ``/x``), which ``ls-tree -r`` joins into paths that leave the directory written to."""
        args = ["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", sha, *(["--", prefix] if prefix else [])]
        entries: list[tuple[str, str, str]] = []
        refused: list[str] = []
        for rec in self.g._run(args).stdout.split(b"\0"):
            meta, _, name = rec.partition(b"\t")
            fields, path = dec(meta).split(), dec(name)
            if len(fields) != 3 or fields[1] != "blob" or fields[0] not in MODES:
                continue  # submodules (and the empty record after the last NUL)
            if prefix and not path.startswith(prefix + "/"):
                continue  # a file named like the folder itself
            problem = path_problem(path)
            if problem:
                refused.append(f"{path!r}: {problem}")
            else:
                entries.append((path, fields[0], fields[2]))
        return entries, refused

    def _write_blobs(
        self, sha: str, dest: Path, entries: list[tuple[str, str, str]], perms: dict[str, int] | None = None
    ) -> list[os.stat_result]:
        """Write ``entries`` ((path, mode, blob) with checked paths) under ``dest``, from one
        ``git cat-file --batch``; their stat data, in order."""
        if not entries:
            return []
        stats: list[os.stat_result] = []
        with in_repo(self.g.common_dir) as td:
            ids = td / "ids"
            ids.write_text("".join(oid + "\n" for _, _, oid in entries))
            _, proc = self.g._spawn(["cat-file", "--batch"], stdin_path=ids)
            writer = _TreeWriter(dest, perms)
            try:
                for path, mode, oid in entries:
                    header = proc.stdout.readline().split()
                    if len(header) != 3:
                        raise AgentError(f"export of {sha[:12]}: blob {oid} of {path} is missing")
                    stats.append(writer.write(path, mode, proc.stdout, int(header[2])))
                    proc.stdout.read(1)  # the newline after each object
            finally:
                writer.close()
                proc.stdout.close()
                err = proc.stderr.read()
                proc.stderr.close()
                if proc.wait() != 0:
                    raise AgentError(f"export of {sha[:12]} failed: {dec(err)[-500:]}")
        return stats


class _TreeWriter:
    """Writes files of a tree in order, keeping open only the directories on the current path."""

    def __init__(self, root: Path, perms: dict[str, int] | None = None):
        self.stack: list[tuple[str, int]] = [("", os.open(root, _DIR_FLAGS))]
        self.perms = perms

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
                        view = view[os.write(fd, view) :]
                if self.perms:
                    os.fchmod(fd, self.perms[mode])  # exact bits (the umask only narrows O_CREAT's)
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
