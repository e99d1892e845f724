"""Stopping a run: the first Ctrl-C (or SIGTERM) cancels what is in flight -- the model call (its
connection is closed) and the sandbox run (every process of it is killed) -- within a second or
two; what was committed stays, the step in flight is redone on ``--resume``.

Code that can block registers how to stop itself (``on_cancel``) for as long as it blocks; code
between blocking calls asks ``check()``. ``Cancelled`` is a KeyboardInterrupt, so nothing that
catches errors to record them (a step's ``except Exception``) swallows it.
"""

from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Callable, Iterator


class Cancelled(KeyboardInterrupt):
    """The run was interrupted. ``task_id``: the task to resume, when known."""

    def __init__(self, reason: str = "interrupted", task_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.task_id = task_id


class _Cancel:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self.reason = ""

    def is_set(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = "interrupted") -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks.values())
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: BLE001 - stopping one thing must not stop stopping the others
                pass

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason)

    @contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """Run ``callback`` if the run is cancelled while inside this block (at once if it is)."""
        with self._lock:
            key = next(self._ids)
            self._callbacks[key] = callback
            already = self._event.is_set()
        if already:
            callback()
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.pop(key, None)

    def reset(self) -> None:
        """For a new run in the same process (tests, the in-process CLI)."""
        with self._lock:
            self._event.clear()
            self.reason = ""


CANCEL = _Cancel()
