"""Dispatchers: who runs the next step. Locally an in-process queue with a worker pool; on
GitHub a repository_dispatch per job (agent.github, later).

The local queue keeps the same rules the GitHub side gets from concurrency groups: one
planner per task at a time (a plan requested while one runs is run once more afterwards),
duplicate queued jobs are dropped, executors of different nodes run in parallel.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .seams import Job


def _key(job: Job) -> tuple:
    return (job.step, job.task, job.node, job.seq)


class LocalDispatcher:
    def __init__(self, handler: Callable[[Job], list[Job]], workers: int = 4) -> None:
        self.handler = handler
        self.workers = max(1, workers)
        self._queue: deque[Job] = deque()
        self._queued: set[tuple] = set()
        self._running: set[tuple] = set()
        self._serial_busy: set[tuple] = set()  # (step, task) for plan/finish in flight
        self._again: dict[tuple, Job] = {}
        self._cv = threading.Condition()
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
            self._queue.append(job)
            self._queued.add(k)
            self._cv.notify_all()

    def _next(self) -> Job | None:
        """Pop a job that may start now (caller holds the lock)."""
        for i, job in enumerate(self._queue):
            if job.step in ("plan", "finish") and (job.step, job.task) in self._serial_busy:
                continue
            del self._queue[i]
            self._queued.discard(_key(job))
            return job
        return None

    def run(self) -> None:
        """Run until no job is queued or running. Errors of the handler are collected."""
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="agent-step") as pool:
            inflight = 0
            while True:
                with self._cv:
                    job = self._next()
                    while job is None or inflight >= self.workers:
                        if job is not None:  # no free worker: put it back
                            self._queue.appendleft(job)
                            self._queued.add(_key(job))
                            job = None
                        if inflight == 0 and not self._queue:
                            return
                        self._cv.wait()
                        if inflight < self.workers:
                            job = self._next()
                    inflight += 1
                    if job.step in ("plan", "finish"):
                        self._serial_busy.add((job.step, job.task))

                def work(j: Job = job) -> None:
                    nonlocal inflight
                    nxt: list[Job] = []
                    try:
                        nxt = self.handler(j) or []
                    except BaseException as e:  # noqa: BLE001 - recorded, the run goes on
                        with self._cv:
                            self.errors.append(e)
                    finally:
                        with self._cv:
                            serial = (j.step, j.task)
                            self._serial_busy.discard(serial)
                            again = self._again.pop(serial, None)
                            if again is not None:
                                self._queue.append(again)
                                self._queued.add(_key(again))
                            # queue the next jobs before this one counts as done, so the loop
                            # never sees an idle moment between a step and its successors
                            for n in nxt:
                                self.dispatch(n)
                            inflight -= 1
                            self.handled.append(j)
                            self._cv.notify_all()

                pool.submit(work)
