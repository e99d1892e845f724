"""Process-wide locks, keyed by repository (git common dir) and branch."""

from __future__ import annotations

import threading

_locks_guard = threading.Lock()
_locks: dict[tuple, threading.Lock] = {}


def named_lock(*key: object) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.Lock()
        return lock
