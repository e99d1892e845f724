"""Shared data sets under ``data/`` on ``agent/memory``: added by people, shown read-only to the
model's code (``$AGENT_DATA_DIR``)."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_agent.core.errors import AgentError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.memory.store import MemoryStore

from gitops_agent.memory.experience import _DATA_NAME, DATA_DIR, MAX_DATA_FILE_BYTES, MEMORY_BRANCH

log = logging.getLogger("gitops_agent.memory")


class DataSets:
    """Part of ``MemoryStore`` (``self.m``): data sets."""

    def __init__(self, m: "MemoryStore") -> None:
        self.m = m

    # ------------------------------------------------------------- data sets

    def add_data(self, src: Path | str, name: str | None = None) -> tuple[str, list[str]]:
        """Commit a file, or a directory's files, under data/<name> on the memory branch.
        Returns (commit, paths written)."""
        src = Path(src)
        if not src.exists():
            raise ConfigError(f"{src} does not exist")
        name = (name or src.resolve().name).strip().strip("/")
        if not _DATA_NAME.fullmatch(name) or any(p in ("..", ".git") for p in name.split("/")):
            raise ConfigError(f"bad data set name {name!r}: use letters, digits, '.', '_', '-' and '/' between parts")
        files: dict[str, bytes | None] = {}
        modes: dict[str, str] = {}
        if src.is_file():
            items = [(src, f"{DATA_DIR}/{name}")]
        else:
            items = []
            for root, dirs, names in os.walk(src):
                dirs[:] = sorted(d for d in dirs if d != ".git")
                for n in sorted(names):
                    p = Path(root) / n
                    if p.is_file() and not p.is_symlink():
                        items.append((p, f"{DATA_DIR}/{name}/{p.relative_to(src).as_posix()}"))
            if not items:
                raise ConfigError(f"{src} holds no files")
        for p, dest in items:
            size = p.stat().st_size
            if size > MAX_DATA_FILE_BYTES:
                raise ConfigError(
                    f"{p} is {size / 1e6:.0f} MB; files over {MAX_DATA_FILE_BYTES // 2**20} MiB cannot be pushed to GitHub"
                )
            files[dest] = p.read_bytes()
            if os.access(p, os.X_OK):
                modes[dest] = "100755"
        # At most CHUNK files per commit: GitRepo.commit_files feeds `git hash-object
        # --stdin-paths` through a pipe without reading its output meanwhile, which deadlocks
        # somewhere past a few thousand files.
        paths = sorted(files)
        sha = ""
        for i in range(0, len(paths), self.m.CHUNK):
            part = {p: files[p] for p in paths[i : i + self.m.CHUNK]}
            n = f" ({i // self.m.CHUNK + 1}/{(len(paths) - 1) // self.m.CHUNK + 1})" if len(paths) > self.m.CHUNK else ""
            sha = self.m.commit(
                part, f"memory: add data {name}{n}", {"Agent-Data": name}, modes={p: m for p, m in modes.items() if p in part}
            )
        return sha, paths

    def data_files(self, tip: str | None = None) -> list[str]:
        tip = tip or self.m.tip()
        if tip is None:
            return []
        return [path for mode, kind, oid, path in self.m._ls(tip, DATA_DIR) if kind == "blob"]

    def materialize_data(self) -> Path | None:
        """The data/ folder of the memory tip as plain read-only files in a local cache directory
        (keyed by the data tree, so new experiences do not copy the data again); None if
        the memory branch has no data."""
        tip = self.m.tip()
        if tip is None:
            return None
        p = self.m.git._run(["rev-parse", "--verify", "--quiet", f"{tip}:{DATA_DIR}"], check=False)
        tree = p.stdout.decode().strip()
        if p.returncode != 0 or not tree:
            return None
        dest = self.m.cache_dir / "memory-data" / tree
        if (dest / ".complete").exists():
            return dest
        # remote mode: every missing blob in one request, before the export reads them
        self.m._prefetch(
            tip, {oid for mode, kind, oid, _ in self.m._ls(tip, DATA_DIR) if kind == "blob" and mode in ("100644", "100755")}
        )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
        try:
            # the safe export: a crafted data/ tree (entries named "..", ".git", "/x") must not
            # write outside tmp; such entries are left out and named, links are never written
            _warn_left_out(self.m.git.export_files(tip, DATA_DIR, tmp, perms={"100644": 0o444, "100755": 0o555}))
            (tmp / ".complete").write_text(tip + "\n")
            (tmp / ".complete").chmod(0o444)
            for root, dirs, _ in os.walk(tmp):
                for d in dirs:
                    os.chmod(Path(root) / d, 0o555)
            os.chmod(tmp, 0o555)
            os.rename(tmp, dest)
        except (OSError, AgentError):
            _rmtree_ro(tmp)
            if not dest.exists():
                raise
        _prune(dest.parent, keep=3, ro=True)
        return dest


def _warn_left_out(refused: list[str], shown: int = 20) -> None:
    """Name the data entries the export refused (a crafted branch can hold any number of them)."""
    for bad in refused[:shown]:
        log.warning("%s: data entry left out, not written: %s", MEMORY_BRANCH, bad)
    if len(refused) > shown:
        log.warning("%s: %d more data entries left out", MEMORY_BRANCH, len(refused) - shown)


def _rmtree_ro(d: Path) -> None:
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
            func(p)
        except OSError:
            pass

    if d.exists():
        for root, dirs, _ in os.walk(d):
            for x in dirs:
                try:
                    os.chmod(Path(root) / x, 0o755)
                except OSError:
                    pass
        try:
            os.chmod(d, 0o755)
        except OSError:
            pass
        shutil.rmtree(d, onerror=onerror)


def _prune(parent: Path, keep: int, ro: bool = False) -> None:
    """Keep the ``keep`` newest cache entries in ``parent``; older ones are removed (best effort)."""
    try:
        entries = sorted(
            (p for p in parent.iterdir() if not p.name.startswith(".tmp-")), key=lambda p: p.stat().st_mtime, reverse=True
        )
    except OSError:
        return
    for old in entries[keep:]:
        if time.time() - old.stat().st_mtime < 600:  # maybe in use by a running step
            continue
        _rmtree_ro(old) if ro else shutil.rmtree(old, ignore_errors=True)
