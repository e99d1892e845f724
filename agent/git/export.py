"""Exporting a tree into a checkout (a plain directory, no ``.git``): the files written by
descriptor, never through a link; the checkouts of this process removed on exit, those of a
killed one by the next checkout."""

from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agent.core.errors import AgentError
from agent.git.checkout import _DIR_FLAGS, _WRITE_FLAGS, Checkout, Entry, _stat_key, remove_tree
from agent.git.locks import named_lock
from agent.git.names import CHECKOUT_NAME, dec, path_problem


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
            manifest, ignores = self._export(sha, path, tuple(skip), tuple(keep))
            yield Checkout(path, manifest, self._sha1, ignores)
        finally:
            with named_lock("checkout", str(self.common_dir)):
                remove_tree(path)
                (base / f"{name}.pid").unlink(missing_ok=True)
            with _ACTIVE_LOCK:
                _ACTIVE.discard(path)

    def _export(self, sha: str, dest: Path, skip: tuple[str, ...], keep: tuple[str, ...]) -> tuple[dict[str, Entry], dict[str, bytes]]:
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
        ignores: dict[str, bytes] = {}
        if not entries:
            return manifest, ignores
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
                    if path.rsplit("/", 1)[-1] == ".gitignore" and mode != "120000" and size <= 256 * 1024:
                        ignores[path.rpartition("/")[0]] = (dest / path).read_bytes()
            finally:
                writer.close()
                proc.stdout.close()
                err = proc.stderr.read()
                proc.stderr.close()
                if proc.wait() != 0:
                    raise AgentError(f"export of {sha[:12]} failed: {dec(err)[-500:]}")
        return manifest, ignores


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
