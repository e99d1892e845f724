"""Limits no rlimit can express, watched while an action runs: the disk it fills and, where no
memory cgroup can be had, the memory of all its processes together.

* disk: ``statvfs`` of the working tree's file system every tick (free); when the file system
  grew by more than ``disk_mb`` since the action started, the working tree itself is measured
  (so another job writing to the same disk does not kill this one) and the action is killed if
  it is over.
* memory (fallback): the resident memory of every process descended from the action's first
  process, summed every tick; over ``total_memory_mb`` the action is killed. A fast allocation
  can overshoot between two ticks; RLIMIT_AS still bounds each process.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Callable

TICK_S = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2:].split()
        if len(rest) > 1:
            kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    kids = _children_map()
    out, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants."""
    total = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def deleted_open_bytes(root: int, dev: int) -> int:
    """Bytes of files on device ``dev`` that the processes below ``root`` hold open after
    deleting them: disk the tree's size does not show."""
    total, counted = 0, set()
    for pid in descendants(root):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(path).endswith(" (deleted)"):
                    continue
                st = os.stat(path)
            except OSError:
                continue
            if st.st_dev == dev and stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in counted:
                counted.add((st.st_dev, st.st_ino))
                total += getattr(st, "st_blocks", 0) * 512 or st.st_size
    return total


def tree_bytes(path: Path, stop_at: int) -> tuple[int, bool]:
    """(bytes allocated under ``path`` counted up to ``stop_at``, whether every directory could
    be read); links are not followed."""
    total, complete = 0, True
    stack = [str(path)]
    while stack and total <= stop_at:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += getattr(st, "st_blocks", 0) * 512 or st.st_size
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
        except OSError:
            complete = False  # a directory the code made unreadable hides nothing: fail closed
    return total, complete


def _used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class Watchdog:
    """Watches one running action; ``kill`` is called (once) with the reason when it is over."""

    def __init__(self, pid: int, tree: Path, *, disk_bytes: int, memory_bytes: int | None,
                 kill: Callable[[], None]):
        self.pid, self.tree, self.disk_bytes, self.memory_bytes, self._kill = pid, Path(tree), disk_bytes, memory_bytes, kill
        self.reason: str | None = None
        self._stop = threading.Event()
        try:
            self._base_used = _used(self.tree)
            self._base_tree = tree_bytes(self.tree, 1 << 62)[0]
            self._dev = os.stat(self.tree).st_dev
        except OSError:
            self._base_used, self._base_tree, self._dev = None, 0, -1
        self._thread = threading.Thread(target=self._run, name="sandbox-watchdog", daemon=True)

    def __enter__(self) -> "Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            why = self._check()
            if why:
                self.reason = why
                self._kill()
                return

    def _check(self) -> str | None:
        if self.memory_bytes is not None:
            rss = tree_rss(self.pid)
            if rss > self.memory_bytes:
                return f"its processes used {rss / 2**20:.0f} MiB of memory together, over the {self.memory_bytes / 2**20:.0f} MiB limit"
        if self._base_used is not None:
            try:
                grew = _used(self.tree) - self._base_used
            except OSError:
                grew = 0
            if grew > self.disk_bytes:
                size, complete = tree_bytes(self.tree, self._base_tree + self.disk_bytes + 1)
                added = size - self._base_tree + deleted_open_bytes(self.pid, self._dev)
                if added > self.disk_bytes or not complete:
                    return f"it wrote more than {self.disk_bytes / 2**20:.0f} MiB to disk (sandbox.disk_mb)"
                self._base_used += grew - max(added, 0)  # others' writes: not ours
        return None
