"""One cgroup per action: ``pids`` (a real process limit, also for root) and ``memory`` (all the
action's processes together, its tmpfs pages included), where this process may make them.

Either cgroup v1 (one hierarchy per controller, e.g. ``/sys/fs/cgroup/pids``) or a delegated
cgroup v2 subtree. What can be made is probed once, by making one. Where a controller cannot be
had, the action still runs: the process limit falls back to RLIMIT_NPROC (not for root), the
memory limit to a watchdog that polls the processes' resident memory (``gitops_agent.sandbox.watchdog``),
and ``describe()`` says so, so the agent can warn once.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("gitops_agent.sandbox")

PREFIX = "gitops-agent-"
CONTROLLERS = ("pids", "memory")
_LIMIT_FILE = {"pids": "pids.max", "memory": ("memory.limit_in_bytes", "memory.max")}


def _own_cgroups() -> dict[str, str]:
    """{controller list or '' (v2): path} of this process, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _id, ctrls, path = line.split(":", 2)
            out[ctrls] = path
    except (OSError, ValueError):
        pass
    return out


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


def _candidates(controller: str) -> list[Path]:
    own = _own_cgroups()
    cands: list[Path] = []
    for ctrls, path in own.items():
        if controller in ctrls.split(","):  # cgroup v1: the controller's own hierarchy
            for mount in Path("/sys/fs/cgroup").glob(f"*{controller}*"):
                if mount.is_dir() and controller in mount.name.split(","):
                    cands.append(Path(str(mount) + path.rstrip("/")))
                    cands.append(mount)
    if "" in own and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # cgroup v2: a delegated subtree
        base = Path("/sys/fs/cgroup" + own[""].rstrip("/"))
        cands += [base, base.parent]
    seen, out = set(), []
    for c in cands:
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


def _limit_file(d: Path, controller: str) -> Path | None:
    names = _LIMIT_FILE[controller]
    for n in (names,) if isinstance(names, str) else names:
        if (d / n).exists():
            return d / n
    return None


@lru_cache(maxsize=None)
def cgroup_parent(controller: str) -> str | None:
    """A cgroup directory under which this process can make child cgroups with a working limit
    of ``controller`` ("pids" or "memory"), probed once by making one; or None."""
    for parent in _candidates(controller):
        if not (parent / "cgroup.procs").exists():
            continue
        probe = parent / f"{PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            probe.mkdir()
        except OSError:
            continue
        ok = False
        try:
            f = _limit_file(probe, controller)
            if f is not None:
                f.write_text("8" if controller == "pids" else str(64 * 1024 * 1024))
                ok = True
        except OSError:
            ok = False
        finally:
            try:
                probe.rmdir()
            except OSError:
                pass
        if ok:
            remove_stale(parent)
            return str(parent)
    return None


def pids_cgroup_parent() -> str | None:
    return cgroup_parent("pids")


def describe() -> dict[str, str]:
    """{controller: where its cgroups are made, or why not} for warnings and the docs."""
    return {c: (cgroup_parent(c) or "unavailable") for c in CONTROLLERS}


def remove_stale(parent: Path, older_than_s: float = 600) -> None:
    """Empty cgroups left by a killed agent: its pid (in the name) is gone, or they are old
    (rmdir fails on a cgroup still in use, so a live one is never removed)."""
    now = time.time()
    try:
        for d in Path(parent).iterdir():
            if not (d.name.startswith(PREFIX) and d.is_dir()):
                continue
            pid = d.name[len(PREFIX) :].split("-", 1)[0]
            dead = pid.isdigit() and not os.path.exists(f"/proc/{pid}")
            if dead or now - d.stat().st_mtime > older_than_s:
                try:
                    d.rmdir()
                except OSError:
                    pass
    except OSError:
        pass


class ActionCgroup:
    """The cgroups of one action: ``procs`` files the child joins before it execs, the limits set,
    and ``close()`` kills whatever is still inside and removes them."""

    def __init__(self, max_processes: int | None, memory_bytes: int | None):
        self.dirs: dict[str, Path] = {}
        name = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:10]}"
        wanted = {"pids": max_processes, "memory": memory_bytes}
        try:
            for controller, limit in wanted.items():
                if limit is None:
                    continue
                parent = cgroup_parent(controller)
                if parent is None:
                    continue
                d = Path(parent) / name
                if d in self.dirs.values():  # cgroup v2: one directory holds both
                    self.dirs[controller] = d
                    self._set(d, controller, limit)
                    continue
                d.mkdir()
                self.dirs[controller] = d
                self._set(d, controller, limit)
        except OSError as e:
            log.debug("sandbox: cgroup for this action incomplete: %s", e)
            self.close()
            self.dirs = {}

    @staticmethod
    def _set(d: Path, controller: str, limit: int) -> None:
        f = _limit_file(d, controller)
        if f is None:
            raise OSError(f"{d}: no limit file for {controller}")
        f.write_text(str(int(limit)))
        if controller == "memory":
            for extra, value in (
                ("memory.memsw.limit_in_bytes", str(int(limit))),
                ("memory.swap.max", "0"),
                ("memory.oom.group", "1"),
            ):
                try:
                    (d / extra).write_text(value)
                except OSError:
                    pass  # no swap accounting here: the memory limit alone

    @property
    def has(self) -> set[str]:
        return set(self.dirs)

    @property
    def procs_files(self) -> list[str]:
        return sorted({str(d / "cgroup.procs") for d in self.dirs.values()})

    def pids(self) -> list[int]:
        out: set[int] = set()
        for d in set(self.dirs.values()):
            out |= {int(x) for x in _read(d / "cgroup.procs").split() if x.strip().isdigit()}
        return sorted(out)

    def oom_killed(self) -> bool:
        d = self.dirs.get("memory")
        if d is None:
            return False
        for f in ("memory.events", "memory.oom_control"):
            for line in _read(d / f).splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill" and v.strip().isdigit() and int(v) > 0:
                    return True
        return False

    def kill(self) -> None:
        for d in set(self.dirs.values()):
            try:
                (d / "cgroup.kill").write_text("1")  # cgroup v2 (5.14+): the whole subtree at once
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        deadline = time.monotonic() + 5
        for d in sorted(set(self.dirs.values())):
            while time.monotonic() < deadline:
                if not [x for x in _read(d / "cgroup.procs").split() if x.strip()]:
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:  # a process just exiting
                        time.sleep(0.01)
                        continue
                self.kill()
                time.sleep(0.01)
            else:
                log.warning("sandbox: could not empty and remove cgroup %s", d)
