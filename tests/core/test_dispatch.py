"""The local queue: one planner per task at a time, duplicates dropped, a plan job held briefly
while the task's executors run so one planner call sees a wave of results."""

import threading
import time

from gitops_agent.core.dispatch import LocalDispatcher
from gitops_agent.core.seams import Job


def J(step, node=None, task="t", seq=None):
    return Job(step=step, task=task, branch=f"agent/task/{task}", node=node, seq=seq)


def test_a_wave_of_results_reaches_one_planner_call():
    calls: list[str] = []
    lock = threading.Lock()

    def handler(job):
        with lock:
            calls.append(f"{job.step}:{job.node or ''}")
        if job.step == "execute":
            time.sleep(0.05 if job.node == "a" else 0.15)  # b and c finish a little later
            return [J("plan")]
        if job.step == "plan" and calls.count("plan:") == 1:
            return [J("execute", n, seq=i) for i, n in enumerate("abc")]
        return []

    d = LocalDispatcher(handler, workers=4, coalesce_s=2.0)
    d.dispatch(J("plan"))
    d.run()
    assert calls.count("plan:") == 2  # the first plan, then one for the whole wave
    assert not d.errors


def test_plan_jobs_of_a_task_never_overlap_and_duplicates_are_dropped():
    active, peak = 0, 0
    lock = threading.Lock()
    seen = []

    def handler(job):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            seen.append(job)
        time.sleep(0.02)
        with lock:
            active -= 1
        return []

    d = LocalDispatcher(handler, workers=4, coalesce_s=0)
    for _ in range(5):
        d.dispatch(J("plan"))
    d.run()
    assert peak == 1 and len(seen) == 1


def test_a_failing_handler_is_recorded_and_the_run_ends():
    def handler(job):
        raise RuntimeError("boom")

    d = LocalDispatcher(handler, workers=2)
    d.dispatch(J("plan"))
    d.run()
    assert len(d.errors) == 1 and "boom" in str(d.errors[0])
