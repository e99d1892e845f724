"""Scratch directories that never outlive their process for long.

Each is named ``<prefix><pid>-<random>``: removed when its work is done; by ``remove_active``
before a hard exit (a second Ctrl-C); and, when its process was killed (kill -9), by the next
process that makes one in the same place (``sweep``). Git work keeps its scratch (a commit's
blobs, an export's object list) under ``<git-common-dir>/gitops-agent/tmp/`` (``in_repo``), so
nothing of a repository is left in the system temp directory; the throwaway repositories of
``eval`` and ``replay`` are made in the system temp directory with their own prefix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterator

_ACTIVE: set[Path] = set()  # this process's scratch directories, for a quit that cannot unwind
_LOCK = threading.Lock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(base: Path, prefix: str = "") -> None:
    """Remove the ``prefix<pid>-*`` directories under ``base`` whose process is gone."""
    try:
        entries = [d for d in base.iterdir() if d.name.startswith(prefix)]
    except OSError:
        return
    me = os.getuid()
    for d in entries:
        pid = d.name[len(prefix) :].split("-", 1)[0]
        try:
            mine = d.is_dir() and not d.is_symlink() and d.stat().st_uid == me
        except OSError:
            continue
        if mine and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def make(base: Path | None = None, prefix: str = "") -> Path:
    """A new scratch directory under ``base`` (default: the system temp directory), after
    removing those a killed process left there."""
    base = Path(base or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    sweep(base, prefix)
    d = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    with _LOCK:
        _ACTIVE.add(d)
    return d


def remove(d: Path) -> None:
    shutil.rmtree(d, ignore_errors=True)
    with _LOCK:
        _ACTIVE.discard(d)


@contextmanager
def scratch(base: Path | None = None, prefix: str = "") -> Iterator[Path]:
    d = make(base, prefix)
    try:
        yield d
    finally:
        remove(d)


def in_repo(common_dir: Path) -> AbstractContextManager[Path]:
    """A scratch directory of a repository's git work: ``<common_dir>/gitops-agent/tmp/<pid>-…``."""
    return scratch(Path(common_dir) / "gitops-agent" / "tmp")


def remove_active() -> None:
    """Remove this process's scratch directories now (before a hard exit)."""
    with _LOCK:
        paths = list(_ACTIVE)
    for d in paths:
        remove(d)
