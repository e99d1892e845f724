"""Red team F2: ``sandbox.disk_mb`` held per action, not per step. A node's turns all run on the
same working tree, so with ``disk_mb: 20`` six turns of 15 MiB each left 91 MiB and nothing was
killed. The budget is now the step's: what all the actions on one working tree added together.

The writers here write 256 KiB every 0.05 s (5 MiB/s): the watchdog polls every 0.1 s, so each
action it kills may overshoot by what it writes in one poll (about 0.5 MiB); an action that ends
before a poll is measured once more as it ends."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

import gitops_agent.sandbox.watchdog as watchdog
from gitops_agent.app.local import make_runtime, run_question
from gitops_agent.models.scripted import ScriptedModel
from gitops_agent.sandbox.bubblewrap import BubblewrapSandbox
from gitops_agent.sandbox.choose import bwrap_works
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.plain import SubprocessSandbox
from gitops_agent.settings.config import AgentConfig
from tests.helpers import make_repo

MiB = 2**20
PER_STEP = "to disk (sandbox.disk_mb) in this step"
BEST = "bubblewrap" if bwrap_works() else "subprocess"
CLASSES = {"subprocess": SubprocessSandbox, "bubblewrap": BubblewrapSandbox}


def write(name: str, mib: int = 15) -> str:
    return (
        "import time\n"
        f"with open({name!r}, 'wb') as f:\n"
        f"    for _ in range({mib * 4}):\n"
        "        f.write(b'\\1' * (256 << 10)); f.flush(); time.sleep(0.05)\n"
        f"print('wrote {mib} MiB')\n"
    )


def size(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


@pytest.fixture(
    params=["subprocess", pytest.param("bubblewrap", marks=pytest.mark.skipif(not bwrap_works(), reason="no bubblewrap"))]
)
def sandbox(request):
    return CLASSES[request.param](SandboxLimits(backend=request.param, disk_mb=20, timeout_s=30))


def tree(tmp_path: Path, name: str = "tree") -> Path:
    d = tmp_path / name
    d.mkdir()
    return d


def test_the_actions_of_a_step_share_its_disk_budget(sandbox, tmp_path):
    work = tree(tmp_path)
    first = sandbox.run_python(write("a.bin"), work)
    assert first.exit_code == 0 and "killed" not in first.stderr, first.stderr
    second = sandbox.run_python(write("b.bin"), work)  # 5 MiB left of the step's 20
    assert PER_STEP in second.stderr and second.exit_code != 0, second.stderr
    third = sandbox.run_python(write("c.bin"), work)  # nothing left
    assert PER_STEP in third.stderr
    assert size(work) <= 24 * MiB, size(work) / MiB
    # with the budget spent an action can still delete, and what it frees can be written again
    freed = sandbox.run_shell("rm a.bin && echo freed", work)
    assert freed.exit_code == 0 and "freed" in freed.stdout and "killed" not in freed.stderr, freed.stderr
    again = sandbox.run_python(write("d.bin", 5), work)
    assert again.exit_code == 0 and "killed" not in again.stderr, again.stderr


def test_an_action_that_writes_at_once_and_ends_before_a_tick_is_still_caught(tmp_path):
    sb = SubprocessSandbox(SandboxLimits(backend="subprocess", disk_mb=20, timeout_s=30))
    obs = sb.run_shell("head -c 30M /dev/zero > a.bin", tree(tmp_path))  # done in a few ms
    assert PER_STEP in obs.stderr, obs.stderr


def test_each_working_tree_is_its_own_step(tmp_path):
    """Parallel steps on the same file system do not share a budget, and a tree made again at the
    same path (the same inode number, on ext4) is a new step whose baseline is the tree as made."""
    sb = SubprocessSandbox(SandboxLimits(backend="subprocess", disk_mb=20, timeout_s=30))
    a, b = tree(tmp_path, "a"), tree(tmp_path, "b")
    out = {}
    runs = [threading.Thread(target=lambda t=t: out.__setitem__(t, sb.run_python(write("x.bin"), t))) for t in (a, b)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert all(o.exit_code == 0 and "killed" not in o.stderr for o in out.values()), [o.stderr for o in out.values()]
    shutil.rmtree(a)
    a.mkdir()
    (a / "exported.bin").write_bytes(b"\0" * (8 * MiB))  # the new step's checkout
    obs = sb.run_python(write("y.bin"), a)
    assert obs.exit_code == 0 and "killed" not in obs.stderr, obs.stderr


def test_a_tree_that_cannot_be_read_whole_leaves_no_budget(tmp_path, monkeypatch):
    """A directory the code made unreadable hides what it holds from the next action's measure:
    that action gets no budget (fail closed), deleting still works. (Simulated: root reads all.)"""
    real = watchdog.tree_bytes

    def hiding(path, stop_at):
        total, complete = real(path, stop_at)
        locked = Path(path) / "locked"
        return (total - real(locked, 1 << 62)[0], False) if locked.exists() else (total, complete)

    monkeypatch.setattr(watchdog, "tree_bytes", hiding)
    sb = SubprocessSandbox(SandboxLimits(backend="subprocess", disk_mb=20, timeout_s=30))
    work = tree(tmp_path)
    first = sb.run_python("import os; os.mkdir('d')\n" + write("d/a.bin") + "os.rename('d', 'locked')\n", work)
    assert PER_STEP in first.stderr, first.stderr  # measured as it ends: what it hid cannot be told apart
    obs = sb.run_python(write("b.bin"), work)
    assert PER_STEP in obs.stderr, obs.stderr
    assert sb.run_shell("rm -r locked b.bin", work).exit_code == 0


def test_a_node_writing_15_mib_a_turn_is_held_to_the_steps_20_mib(tmp_path):
    """Through the engine: six turns of one node each write 15 MiB, the seventh measures."""
    turns = [{"tool": "run_python", "input": {"code": write(f"fill{i}.bin")}} for i in range(6)]
    measure = "import os\nprint('TOTAL=%d' % sum(os.path.getsize(f) for f in os.listdir('.') if f.startswith('fill')))"
    script = {
        "planner": [
            {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "Fill", "goal": "fill the disk"}]}},
            {"tool": "finish", "input": {"answer": "{{ results.n1 }}", "summary": "fill"}},
        ],
        "executor:n1": [
            *turns,
            {"tool": "run_python", "input": {"code": measure}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
    }
    cfg = AgentConfig()
    cfg.sandbox.backend = BEST
    cfg.sandbox.disk_mb = 20
    model = ScriptedModel(script)
    rt = make_runtime(make_repo(tmp_path), config=cfg, models={"scripted:t": model})
    res = run_question(rt, "fill", planner_model="scripted:t", executor_model="scripted:t")
    told = json.dumps([m.model_dump() for c in model.calls if c.meta.get("node") == "n1" for m in c.messages])
    assert PER_STEP in told
    total = int(res.answer.split("TOTAL=")[1].split()[0])
    # 20 MiB and what each of the five killed turns wrote in its last poll
    assert 15 * MiB < total <= 24 * MiB, total / MiB


MMAP_HELD = """
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
SIZE = 64 << 20
fd = os.open('held.bin', os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
os.unlink('held.bin')
os.ftruncate(fd, SIZE)
addr = libc.mmap(None, SIZE, 3, 1, fd, 0)   # libc's mmap keeps no descriptor of its own
os.close(fd)                                # nothing in /proc/PID/fd shows the file now
for off in range(0, SIZE, 4 << 20):
    ctypes.memmove(addr + off, b'\\1' * (4 << 20), 4 << 20)
    libc.msync(addr + off, 4 << 20, 4)
    time.sleep(0.05)
libc.munmap(addr + 4096, SIZE - 4096)       # one page left mapped: the blocks stay
time.sleep(3)
print('held 64 MiB unseen')
"""


def test_a_deleted_file_held_by_a_mapping_alone_counts(sandbox, tmp_path):
    """Red team round 4, B3a: opened, unlinked, mapped, closed: no descriptor and no name show
    it, and the one page still mapped hides its size; the growth is the action's."""
    obs = sandbox.run_python(MMAP_HELD, tree(tmp_path))
    assert "held 64 MiB unseen" not in obs.stdout and PER_STEP in obs.stderr, (obs.stdout, obs.stderr)


def test_empty_files_by_the_thousand_count_against_the_budget(sandbox, tmp_path):
    """B3b: an empty file allocates no block, but inodes run out like disk: each entry costs
    4 KiB of the step's budget."""
    code = (
        "import os\nfor d in range(100):\n    os.mkdir(f'e{d}')\n"
        "    for i in range(100):\n        os.close(os.open(f'e{d}/{i}', os.O_CREAT | os.O_WRONLY, 0o600))\nprint('made 10000')\n"
    )
    obs = sandbox.run_python(code, tree(tmp_path))
    assert PER_STEP in obs.stderr, (obs.stdout, obs.stderr)  # killed as it runs, or measured as it ends
    small = sandbox.run_python(
        "import os\nfor i in range(200):\n    open(f'f{i}', 'w').close()\nprint('ok')", tree(tmp_path, "t2")
    )
    assert small.exit_code == 0 and "ok" in small.stdout  # a few hundred files are nothing
