"""Finding 6: limits for the sandbox as a whole, not per process. Four children that each stay
under the per-process limit but together exceed the total; a private /tmp filled past its size;
a working tree filled past the disk budget with files each under the file-size limit. The agent
stays small (it never reads what it will not commit) and the host keeps its disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.security.harness import Attack, World, attacker

CONFIG = """sandbox: {memory_mb: 1024, total_memory_mb: 512, tmp_mb: 64, disk_mb: 96, timeout_s: 60}
"""

CHILDREN = """import os, time
pids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        b = bytearray(300 * 1024 * 1024)
        for j in range(0, len(b), 4096):
            b[j] = 1
        time.sleep(2)
        os._exit(0)
    pids.append(pid)
print('children', [os.waitpid(p, 0)[1] for p in pids])
"""

TMP = """import os
n = 0
try:
    with open('/tmp/fill', 'wb') as f:
        for _ in range(400):
            f.write(b'x' * (1 << 20)); n += 1
except OSError as e:
    print('tmp full after', n, 'MiB:', e.strerror)
"""

DISK = """import time
for i in range(40):
    with open(f'fill{i:02d}.bin', 'wb') as f:
        f.write(b'\\1' * (12 << 20))
    time.sleep(0.05)
print('wrote 480 MiB')
"""


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, config=CONFIG)
    yield w
    w.close()


def test_limits_hold_for_the_sandbox_as_a_whole(world):
    w = world
    # the jobs' temporary files inside the world, so what they leave is measured there alone
    # (the free space of a disk that other tests share says nothing)
    (w.tmp / "systmp").mkdir()
    w.job_env["TMPDIR"] = str(w.tmp / "systmp")
    used_before = _disk_used(w.tmp)
    w.model(attacker([Attack("n1", CHILDREN), Attack("n2", TMP), Attack("n3", DISK)]))
    w.run_issue()
    w.assert_nothing_leaked()
    seen = w.observations()
    # the four children did not all get their 300 MiB: the action's total is 512 MiB
    assert "out of memory" in seen or "used" in seen and "MiB of memory together" in seen
    assert "tmp full after" in seen and "No space left on device" in seen
    assert "to disk (sandbox.disk_mb)" in seen
    # the 12 MiB files are over the file cap (refused unread); only the one cut short by the kill may be committed
    assert len(_debug(w)) <= 1 and all(size < 12 << 20 for _, size in _debug(w)), _debug(w)
    peak = max(j.peak_rss_kb for j in w.jobs)
    assert peak < 400 * 1024, f"the agent itself grew to {peak // 1024} MiB"
    left = _disk_used(w.tmp) - used_before
    assert left < 32 * 2**20, f"{left >> 20} MiB left behind: the checkout and its files must be gone"


def _disk_used(root: Path) -> int:
    """Bytes the files under ``root`` take on disk."""
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return total


def _debug(w):
    return [(f, len(w.show(f) or "")) for f in w.files() if f.startswith("fill")]
