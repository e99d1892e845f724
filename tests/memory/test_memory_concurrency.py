"""Tasks finishing at the same moment all land on the memory branch: one file per task, with
the branch itself created by whoever gets there first. Local mode with 20 processes (pure
compare-and-swap: 4 processes x 5 threads), remote mode with 20 runners (threads, each in its own clone) pushing to a
bare repository; the remote-mode cache stays blobless for data it does not need."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from gitops_agent.git.repo import GitRepo
from gitops_agent.memory.experience import MEMORY_BRANCH
from gitops_agent.memory.store import MemoryStore
from tests.memory.helpers import GIT_ENV, ROOT, experience, git, make_repo

N = 20

WRITER = """
import sys, threading, time
from pathlib import Path
from gitops_agent.git.repo import GitRepo
from gitops_agent.memory.experience import Experience
from gitops_agent.memory.store import MemoryStore
from gitops_agent.core.state import utcnow
GitRepo.serialize_threads = False  # threads of one process race through compare-and-swap too
repo, first, count, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
store = MemoryStore.open(GitRepo(repo))
def write(i):
    tid = f"{i:02d}-task"
    store.add_experience(Experience(task_id=tid, branch="agent/task/" + tid, question=f"question number {i} about order values",
                                    outcome="done", date=utcnow()))
threads = [threading.Thread(target=write, args=(i,)) for i in range(first, first + count)]
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok", flush=True)
"""


def test_twenty_tasks_finishing_at_once_in_four_processes_leave_twenty_experiences(tmp_path):
    repo = make_repo(tmp_path)
    go = tmp_path / "go"
    env = {**GIT_ENV, "PYTHONPATH": str(ROOT)}
    per = N // 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(repo), str(k * per), str(per), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    for p in procs:  # everyone at the starting line, then all at once
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    go.write_text("go")
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    files = git(repo, "ls-tree", "-r", "--name-only", MEMORY_BRANCH).split()
    assert files == [f"experiences/{i:02d}-task.json" for i in range(N)]
    # one root (the branch was created once), one commit per task on top of it
    assert len(git(repo, "rev-list", "--max-parents=0", MEMORY_BRANCH).split()) == 1
    assert len(git(repo, "rev-list", MEMORY_BRANCH).split()) == N + 1
    assert len(MemoryStore.open(GitRepo(repo)).experiences()) == N


def _bare(tmp_path: Path, allow_filter: bool = True) -> Path:
    src = make_repo(tmp_path, "src")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    if allow_filter:
        git(bare, "config", "uploadpack.allowFilter", "true")
    return bare


def _clone(tmp_path: Path, bare: Path, name: str) -> GitRepo:
    return GitRepo.clone(f"file://{bare}", tmp_path / "runners" / name, "main", depth=1)


def test_twenty_runners_pushing_experiences_at_once_all_land_on_the_remote(tmp_path):
    bare = _bare(tmp_path)
    # a shared data set already on the memory branch: runners that only write must not fetch it
    seed = _clone(tmp_path, bare, "seed")
    big = tmp_path / "big.csv"
    big.write_text("x\n" + "1\n" * 200_000)
    MemoryStore.open(seed).add_data(big)
    data_blob = git(bare, "rev-parse", f"{MEMORY_BRANCH}:data/big.csv").strip()

    runners = [_clone(tmp_path, bare, f"r{i}") for i in range(N)]
    barrier = threading.Barrier(N)
    errors: list[BaseException] = []

    def finish(i: int) -> None:
        try:
            store = MemoryStore.open(runners[i])
            exp = experience(f"{i:02d}-remote", f"remote question {i}")
            barrier.wait(timeout=30)
            store.add_experience(exp)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    files = git(bare, "ls-tree", "-r", "--name-only", MEMORY_BRANCH).split()
    assert sorted(f for f in files if f.startswith("experiences/")) == [f"experiences/{i:02d}-remote.json" for i in range(N)]
    assert "data/big.csv" in files

    # each runner's memory cache is shallow and blobless: the data blob was never fetched
    cache = runners[0].common_dir / "gitops-agent" / "memory.git"
    assert (cache / "shallow").exists()
    missing = git(cache, "rev-list", "--objects", "--missing=print", f"refs/remotes/origin/{MEMORY_BRANCH}").split()
    assert f"?{data_blob}" in missing
    # reading every experience fetches their blobs in one go, and still not the data
    store = MemoryStore.open(runners[0])
    assert len(store.experiences()) == N
    missing = git(cache, "rev-list", "--objects", "--missing=print", f"refs/remotes/origin/{MEMORY_BRANCH}").split()
    assert [m for m in missing if m.startswith("?")] == [f"?{data_blob}"]
    # the data is fetched when a step needs it, read-only
    d = store.materialize_data()
    assert d is not None and (d / "big.csv").read_text().startswith("x\n1\n")
    assert not (d / "big.csv").stat().st_mode & 0o222


def test_a_remote_without_filter_support_still_works(tmp_path):
    bare = _bare(tmp_path, allow_filter=False)
    r = _clone(tmp_path, bare, "r")
    store = MemoryStore.open(r)
    store.add_experience(experience("1-a", "first"))
    store2 = MemoryStore.open(_clone(tmp_path, bare, "r2"))
    store2.add_experience(experience("2-b", "second"))
    assert sorted(e.task_id for e in MemoryStore.open(r).experiences()) == ["1-a", "2-b"]
    assert MemoryStore.open(r).get("2-b").question == "second"
