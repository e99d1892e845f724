"""50 writers on one remote at once -- executors of ten tasks finishing together on their task
branches, then every one of them adding its experience to the memory branch (which does not
exist when they start) -- and nothing is lost: every commit each writer made is on the remote
afterwards, counted."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from gitops_agent.core.state import utcnow
from gitops_agent.git.repo import GitRepo
from gitops_agent.memory.experience import MEMORY_BRANCH, Experience
from gitops_agent.memory.store import MemoryStore
from tests.reliability.rhelpers import git, make_repo

WRITERS = 50
TASKS = 10  # 5 writers per task branch (a task's executors finishing at the same moment)


def test_50_concurrent_writers_on_task_branches_and_the_memory_branch_lose_nothing(tmp_path):
    src = make_repo(tmp_path, "src")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    branches = [f"agent/task/{t}-concurrent" for t in range(TASKS)]
    for b in branches:
        git(bare, "branch", b, "main")
    assert git(bare, "branch", "--list", MEMORY_BRANCH) == ""

    def clone(i: int) -> GitRepo:  # each writer is a runner with its own shallow clone of its task branch
        c = GitRepo.clone(f"file://{bare}", tmp_path / "runners" / f"r{i}", branches[i % TASKS], depth=1)
        return GitRepo(c.repo, remote="origin")

    with ThreadPoolExecutor(8) as pool:
        runners = list(pool.map(clone, range(WRITERS)))

    barrier = threading.Barrier(WRITERS)
    made: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            g = runners[i]
            branch = branches[i % TASKS]
            task = branch.removeprefix("agent/task/")
            store = MemoryStore.open(g)
            barrier.wait(timeout=60)
            tip = g.tip(branch)
            step = g.commit_files(
                branch,
                {f".agent/tasks/{task}/steps/{i:04d}-n{i}/result.md": f"writer {i}\n".encode()},
                f"agent(execute): n{i}",
                {"Agent-Task": task, "Agent-Step": str(i), "Agent-Role": "executor", "Agent-Node": f"n{i}"},
                base=tip,
            )
            exp = store.add_experience(
                Experience(task_id=f"{i:02d}-writer", branch=branch, question=f"question {i}", outcome="done", date=utcnow())
            )
            made[i] = (step, exp)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:3]
    assert len(made) == WRITERS

    # every task branch: its base plus exactly its writers' commits, each one reachable, each file there
    for t, b in enumerate(branches):
        on_remote = set(git(bare, "rev-list", f"main..{b}").split())
        mine = {made[i][0] for i in range(WRITERS) if i % TASKS == t}
        assert len(mine) == WRITERS // TASKS and on_remote == mine, b
        files = git(bare, "ls-tree", "-r", "--name-only", b).split()
        assert sorted(f for f in files if f.startswith(".agent/")) == sorted(
            f".agent/tasks/{b.removeprefix('agent/task/')}/steps/{i:04d}-n{i}/result.md" for i in range(WRITERS) if i % TASKS == t
        )

    # the memory branch: created once (one root), then one commit per writer, all reachable
    mem = git(bare, "rev-list", MEMORY_BRANCH).split()
    assert len(git(bare, "rev-list", "--max-parents=0", MEMORY_BRANCH).split()) == 1
    assert len(mem) == WRITERS + 1 and {made[i][1] for i in range(WRITERS)} <= set(mem)
    exps = sorted(f for f in git(bare, "ls-tree", "-r", "--name-only", MEMORY_BRANCH).split() if f.startswith("experiences/"))
    assert exps == [f"experiences/{i:02d}-writer.json" for i in range(WRITERS)]
    total = sum(len(git(bare, "rev-list", f"main..{b}").split()) for b in branches) + len(mem) - 1
    assert total == 2 * WRITERS  # 100 commits made, 100 on the remote
    assert json.loads(git(bare, "show", f"{MEMORY_BRANCH}:experiences/07-writer.json"))["question"] == "question 7"
