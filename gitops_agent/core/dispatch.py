"""Dispatchers: who runs the next step. Locally an in-process queue with a worker pool; on
GitHub a repository_dispatch per job (gitops_agent.github, later).

The local queue keeps the same rules the GitHub side gets from concurrency groups: one
planner per task at a time (a plan requested while one runs is run once more afterwards),
duplicate queued jobs are dropped, executors of different nodes run in parallel.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from gitops_agent.core.cancel import CANCEL, Cancelled
from gitops_agent.core.seams import Job


def _key(job: Job) -> tuple:
    return (job.step, job.task, job.node, job.seq)


class LocalDispatcher:
    """The in-process queue and worker pool of local mode.

    ``coalesce_s``: a plan job of a task waits up to this long while executors of the same task
    are still running, so one planner call sees a whole wave of results instead of one call per
    result (each is a model call, serialised per task).
    """

    #: after a Ctrl-C, how long the steps in flight get to stop before the run ends without them
    grace_s = 3.0

    def __init__(self, handler: Callable[[Job], list[Job]], workers: int = 4, coalesce_s: float = 0.5) -> None:
        self.handler = handler
        self.workers = max(1, workers)
        self.coalesce_s = coalesce_s
        self._queue: deque[Job] = deque()
        self._queued: set[tuple] = set()
        self._since: dict[tuple, float] = {}
        self._serial_busy: set[tuple] = set()  # (step, task) for plan/finish in flight
        self._executing: dict[str, int] = {}  # task -> execute jobs in flight
        self._again: dict[tuple, Job] = {}
        self._cv = threading.Condition()
        self._inflight = 0
        self.errors: list[BaseException] = []
        self.handled: list[Job] = []

    def dispatch(self, job: Job) -> None:
        with self._cv:
            k = _key(job)
            if k in self._queued:
                return
            serial = (job.step, job.task)
            if job.step in ("plan", "finish") and serial in self._serial_busy:
                self._again[serial] = job  # run once more when the current one ends
                self._cv.notify_all()
                return
            self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        k = _key(job)
        self._queue.append(job)
        self._queued.add(k)
        self._since.setdefault(k, time.monotonic())
        self._cv.notify_all()

    def _next(self) -> tuple[Job | None, float | None]:
        """A job that may start now, or None and how long until a held one may (lock held)."""
        now = time.monotonic()
        wait: float | None = None
        for i, job in enumerate(self._queue):
            if job.step in ("plan", "finish") and (job.step, job.task) in self._serial_busy:
                continue
            if job.step == "plan" and self._executing.get(job.task):
                left = self.coalesce_s - (now - self._since.get(_key(job), now))
                if left > 0:
                    wait = left if wait is None else min(wait, left)
                    continue
            del self._queue[i]
            self._queued.discard(_key(job))
            self._since.pop(_key(job), None)
            return job, None
        return None, wait

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def run(self) -> None:
        """Run until no job is queued or running. Errors of the handler are collected. When the
        run is cancelled (Ctrl-C) nothing new starts; the steps in flight are stopped."""
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="agent-step")
        try:
            with CANCEL.on_cancel(self._wake):
                self._loop(pool)
        finally:
            # after a Ctrl-C, a model call that does not notice its closed connection is not
            # waited for: the process exits without it (the step is redone on --resume)
            pool.shutdown(wait=not CANCEL.is_set(), cancel_futures=True)

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        stop_by: float | None = None
        while True:
            with self._cv:
                while True:
                    if CANCEL.is_set():
                        stop_by = stop_by or time.monotonic() + self.grace_s
                        if self._inflight == 0 or time.monotonic() >= stop_by:
                            return
                        self._cv.wait(timeout=0.1)
                        continue
                    if self._inflight < self.workers:
                        job, wait = self._next()
                        if job is not None:
                            break
                    else:
                        wait = None
                    if self._inflight == 0 and not self._queue:
                        return
                    self._cv.wait(timeout=wait)
                self._inflight += 1
                if job.step in ("plan", "finish"):
                    self._serial_busy.add((job.step, job.task))
                if job.step == "execute":
                    self._executing[job.task] = self._executing.get(job.task, 0) + 1
            pool.submit(self._work, job)

    def _work(self, j: Job) -> None:
        nxt: list[Job] = []
        try:
            nxt = self.handler(j) or []
        except Cancelled:
            pass  # not an error of the step: it is redone on --resume
        except BaseException as e:  # noqa: BLE001 - recorded, the run goes on
            with self._cv:
                self.errors.append(e)
        finally:
            with self._cv:
                serial = (j.step, j.task)
                self._serial_busy.discard(serial)
                if j.step == "execute":
                    self._executing[j.task] -= 1
                again = self._again.pop(serial, None)
                if again is not None:
                    self._enqueue(again)
                # queue the next jobs before this one counts as done, so the loop never sees an
                # idle moment between a step and its successors
                for n in nxt if not CANCEL.is_set() else []:
                    self.dispatch(n)
                self._inflight -= 1
                self.handled.append(j)
                self._cv.notify_all()
