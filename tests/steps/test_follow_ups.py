"""Follow-ups that arrive at once (two comments, two review lines) all land on task.json."""

from __future__ import annotations

import threading

from gitops_agent.app.local import make_runtime
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.steps.intake import add_instruction
from tests.helpers import agent_command, git


def test_follow_ups_at_the_same_time_all_land(tmp_path):
    demo = tmp_path / "demo"
    assert agent_command("demo", "--dir", str(demo), "-q").returncode == 0
    tid = git(demo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").strip().removeprefix("agent/task/")
    rt = make_runtime(demo)
    rt.git.serialize_threads = False  # as two jobs on two runners: only the branch's compare-and-swap orders them
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def one(i: int) -> None:
        try:
            start.wait()
            add_instruction(rt, tid, f"follow-up number {i}", "alice")
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = load_snapshot(rt.git, tid).task.instructions
    assert sorted(x.split(" (from")[0] for x in got) == [f"follow-up number {i}" for i in range(4)]
