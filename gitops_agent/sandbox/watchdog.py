"""Limits no rlimit can express, watched while an action runs: the disk its step fills and,
where no memory cgroup can be had, the memory of all its processes together.

* disk: ``disk_mb`` is what the actions of one step add to its working tree together (a node's
  turns all run on the same tree). ``StepDisk`` remembers each tree's size when its first action
  started; an action may add what its step has left. ``statvfs`` of the tree's file system every
  tick (free); when the file system grew by more than that, the tree itself is measured, with the
  files the action's processes deleted but hold open (so another job writing to the same disk
  does not kill this one) and the action is killed if it is over. A write between two ticks can
  overshoot by what is written in one tick.
* memory (fallback): the resident memory of every process of the action, summed every tick; over
  ``total_memory_mb`` the action is killed. A fast allocation can overshoot between two ticks;
  RLIMIT_AS still bounds each process.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

#: the processes of an action, or None while they cannot be known (a container not yet started)
Pids = Callable[[], list[int] | None]
# a descriptor that holds a directory without needing to read it (the code may chmod its tree 000)
_O_HOLD = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY

TICK_S = 0.1
# The tree is walked when the file system grew past what the action may add, and besides every
# ten times as long as a walk takes (between these bounds): others deleting files on the same file
# system can hide its growth from statvfs, and a small tree is cheap to walk often.
WALK_EVERY_S = (0.2, 2.0)
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
        rest = data[data.rfind(b")") + 2 :].split()
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


def tree_rss(pids: list[int]) -> int:
    """Resident bytes of the processes ``pids``."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def _maps_deleted_in(pid: int, tree: Path) -> bool:
    """Whether ``pid`` maps a file it deleted from ``tree`` (opened, unlinked, mapped, closed: no
    descriptor shows it, and what is still mapped may be one page of it). Only the tree counts:
    a library's own deleted temporary files (libffi's in /tmp) are not the step's."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    prefix = os.fsencode(str(tree)) + b"/"
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].endswith(b" (deleted)") and parts[5].startswith(prefix):
            return True
    return False


def maps_deleted(pids: list[int], tree: Path) -> bool:
    """Whether any of ``pids`` maps a file deleted from ``tree``: its blocks show nowhere."""
    return any(_maps_deleted_in(pid, tree) for pid in pids)


def deleted_open_bytes(pids: list[int], dev: int) -> int:
    """Bytes of files on device ``dev`` that the processes ``pids`` hold open after deleting
    them: disk the tree's size does not show."""
    total, counted = 0, set()
    for pid in pids:
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


# What one directory entry costs at the least: an inode and its directory slot. An empty file
# allocates no block, but a million of them exhaust a file system's inodes like a full disk.
ENTRY_BYTES = 4096


def tree_bytes(path: Path, stop_at: int) -> tuple[int, bool]:
    """(bytes allocated under ``path``, plus ENTRY_BYTES an entry, counted up to ``stop_at``;
    whether every directory could be read); links are not followed."""
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
                    total += (getattr(st, "st_blocks", 0) * 512 or st.st_size) + ENTRY_BYTES
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
        except OSError:
            complete = False  # a directory the code made unreadable hides nothing: fail closed
    return total, complete


def _used(path: Path) -> int:
    """What the file system holds, in the currency of tree_bytes: bytes, plus ENTRY_BYTES an
    inode (a file system that counts no inodes reports none)."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize + (st.f_files - st.f_ffree) * ENTRY_BYTES


class StepDisk:
    """The size of each working tree when its step's first action started (the checkout as
    exported), for the trees of the steps one sandbox serves (parallel workers, one after
    another). A tree is known by its (device, inode), and an open descriptor of it is kept: the
    inode number cannot be reused while it is open, so a tree made again at the same path is a
    new step (ext4 hands a freed inode number straight out again)."""

    def __init__(self, keep: int = 64):
        self.keep = keep
        self._trees: OrderedDict[tuple[int, int], tuple[int, int]] = OrderedDict()  # key -> (fd, size)
        self._lock = threading.Lock()

    def baseline(self, tree: Path, size: int) -> int:
        """The size ``tree`` had when its step began: ``size`` (its size now) if this is the
        step's first action."""
        fd = os.open(tree, _O_HOLD)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with self._lock:
            if key in self._trees:
                os.close(fd)
                self._trees.move_to_end(key)
                return self._trees[key][1]
            self._forget_removed()
            self._trees[key] = (fd, size)
            while len(self._trees) > self.keep:
                os.close(self._trees.popitem(last=False)[1][0])
        return size

    def _forget_removed(self) -> None:
        for key, (fd, _) in list(self._trees.items()):
            if os.fstat(fd).st_nlink == 0:  # the step's checkout was removed: the step is over
                os.close(fd)
                del self._trees[key]


class Watchdog:
    """Watches one running action; ``kill`` is called (once) with the reason when it is over.
    Made before the action starts, so what it writes at once is not taken for its step's tree."""

    def __init__(self, tree: Path, *, disk_bytes: int, memory_bytes: int | None, steps: StepDisk):
        self.tree, self.disk_bytes, self.memory_bytes = Path(tree), disk_bytes, memory_bytes
        self.reason: str | None = None
        self._pids: Pids = lambda: None
        self._kill: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._walked = time.monotonic()
        self._walk_every = WALK_EVERY_S[0]
        try:
            self._base_used = _used(self.tree)
            self._base_tree, complete = tree_bytes(self.tree, 1 << 62)
            self._dev = os.stat(self.tree).st_dev
            self._left = self._budget(steps.baseline(self.tree, self._base_tree), complete)
        except OSError:
            self._base_used, self._base_tree, self._dev, self._left = None, 0, -1, 0
        self._thread = threading.Thread(target=self._run, name="sandbox-watchdog", daemon=True)

    def _budget(self, step_base: int, complete: bool) -> int:
        """What this action may add: the step's limit less what its earlier actions added;
        nothing if part of the tree cannot be read (what it hides may be the step's: fail
        closed). Deleting never counts against it, so an action can always free space."""
        if not complete:
            return 0
        return max(0, self.disk_bytes - (self._base_tree - step_base))

    def watching(self, pids: Pids, kill: Callable[[], None]) -> "Watchdog":
        """The started action: its processes, and how to kill them all."""
        self._pids, self._kill = pids, kill
        return self

    def __enter__(self) -> "Watchdog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.reason is None:  # an action that wrote fast and ended before the next tick
            self.reason = self._disk_check(walk=True, ended=True)
            if self.reason:
                self._kill()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            why = self._memory_check() or self._disk_check()
            if why:
                self.reason = why
                self._kill()
                return

    def _memory_check(self) -> str | None:
        pids = self._pids() if self.memory_bytes is not None else None
        if pids is None:
            return None
        rss = tree_rss(pids)
        if rss > self.memory_bytes:
            return (
                f"its processes used {rss / 2**20:.0f} MiB of memory together, over the {self.memory_bytes / 2**20:.0f} MiB limit"
            )
        return None

    def _disk_check(self, walk: bool = False, ended: bool = False) -> str | None:
        """``ended``: the action's processes are gone (what they held open is freed, and their
        pids may already be another's)."""
        if self._base_used is None:
            return None
        try:
            grew = _used(self.tree) - self._base_used
        except OSError:
            grew = 0
        now = time.monotonic()
        if grew <= self._left and not walk and now - self._walked < self._walk_every:
            return None
        self._walked = now
        size, complete = tree_bytes(self.tree, self._base_tree + self._left + 1)
        lo, hi = WALK_EVERY_S
        self._walk_every = min(hi, max(lo, 10 * (time.monotonic() - now)))
        pids = [] if ended else self._pids()
        added = size - self._base_tree + (deleted_open_bytes(pids, self._dev) if pids else 0)
        if added > self._left or not complete:
            return (
                f"it wrote more than {self.disk_bytes / 2**20:.0f} MiB to disk (sandbox.disk_mb) in this step "
                "(all actions of a step together)"
            )
        # a deleted file held by a mapping alone: its size cannot be seen, so growth the tree does
        # not explain is taken for the action's, never for others' writes
        hidden = pids is not None and maps_deleted(pids, self.tree)
        if hidden and grew > self._left:
            return (
                f"it wrote more than {self.disk_bytes / 2**20:.0f} MiB to disk (sandbox.disk_mb) in this step "
                "(all actions of a step together; files it deleted but still maps count)"
            )
        if pids is not None and not hidden:  # with the processes unknown, what they hold could be taken for others' writes
            self._base_used += grew - max(added, 0)  # others' writes: not ours
        return None
