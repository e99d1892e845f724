"""`run --push REMOTE` as a user meets it: the task stays a local branch too, every local command
finds tasks that only a remote has, and the remote's memory continues the history that exists."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import agent_command, git

Q = "What is the average order value per region?"


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    """The demo repository (one finished task, a local agent/memory) and a bare origin holding
    only main."""
    demo = tmp_path / "demo"
    assert agent_command("demo", "--dir", str(demo), "-q").returncode == 0
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    git(demo, "remote", "add", "origin", origin.as_uri())
    git(demo, "push", "-q", "origin", "main")
    return demo, origin


def _tasks(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split()


def test_push_keeps_a_local_branch_and_one_memory_history(tmp_path):
    demo, origin = _setup(tmp_path)
    before = set(_tasks(demo))
    local_memory = git(demo, "rev-parse", "agent/memory").strip()

    r = agent_command("run", "--repo", str(demo), "--push", "origin", "--model", "scripted:demo", Q)
    assert r.returncode == 0, r.stderr
    new = set(_tasks(demo)) - before
    assert len(new) == 1, "the pushed task has a local branch"
    branch = new.pop()
    tid = branch.removeprefix("agent/task/")
    assert git(demo, "rev-parse", branch) == git(origin, "rev-parse", branch)

    # the commands the run printed, and every other local command, work on it
    report = next(line for line in r.stderr.splitlines() if line.startswith("report: "))
    assert "## Answer" in git(demo, *report.split(" -C ", 1)[1].split(" ", 1)[1].split())
    assert tid in agent_command("tasks", "--repo", str(demo)).stdout
    assert "## Answer" in agent_command("show", tid, "--repo", str(demo)).stdout
    assert agent_command("trace", tid, "--repo", str(demo)).returncode == 0

    # one memory history: the remote's includes what this repository had, and ours follows it
    remote_memory = git(origin, "rev-parse", "agent/memory").strip()
    assert git(origin, "merge-base", "--is-ancestor", local_memory, remote_memory, check=False) == ""
    assert len(git(origin, "rev-list", "--max-parents=0", "agent/memory").split()) == 1
    assert git(demo, "rev-parse", "agent/memory").strip() == remote_memory
    assert tid in git(origin, "log", "--format=%s", "agent/memory")


def test_tasks_only_a_remote_has_are_found(tmp_path):
    demo, origin = _setup(tmp_path)
    r = agent_command("run", "--repo", str(demo), "--push", "origin", "--model", "scripted:demo", "--max-steps", "1", Q)
    assert r.returncode != 0, "stopped by the step budget: a task to continue"
    tid = next(b for b in _tasks(demo) if git(origin, "rev-parse", "--verify", "-q", b, check=False)).removeprefix("agent/task/")

    other = tmp_path / "other"  # a second clone that has never fetched the task
    git(tmp_path, "clone", "-q", "--single-branch", "--branch", "main", origin.as_uri(), str(other))
    assert tid not in agent_command("tasks", "--repo", str(other)).stdout
    listed = agent_command("tasks", "--repo", str(other), "--fetch", "origin")
    assert tid in listed.stdout and "on origin only" in listed.stdout

    third = tmp_path / "third"  # show and trace fetch a task they do not know yet
    git(tmp_path, "clone", "-q", "--single-branch", "--branch", "main", origin.as_uri(), str(third))
    shown = agent_command("show", tid, "--repo", str(third))
    assert shown.returncode == 0 and f"# {Q}" in shown.stdout and "budget" in shown.stdout, shown.stderr
    assert agent_command("trace", tid[:18], "--repo", str(third)).returncode == 0

    # resumed without --push: continued locally from the remote's last commit
    r = agent_command("run", "--repo", str(other), "--model", "scripted:demo", "--resume", tid)
    assert "no task" not in r.stderr and f"branch agent/task/{tid}" in r.stderr, r.stderr
    assert (
        git(
            other,
            "merge-base",
            "--is-ancestor",
            git(origin, "rev-parse", f"agent/task/{tid}").strip(),
            f"agent/task/{tid}",
            check=False,
        )
        == ""
    )

    missing = agent_command("show", "20990101-000000-nosuch", "--repo", str(third))
    assert missing.returncode != 0 and "here or on origin" in missing.stderr and "gitops-agent tasks" in missing.stderr


def test_a_fresh_clone_reads_the_remotes_memory(tmp_path):
    """Issue 23: `memory list` and `memory search` in a fresh clone said there was no memory,
    although origin/agent/memory was there (`tasks` and `show` look at the remote)."""
    demo, origin = _setup(tmp_path)
    git(demo, "push", "-q", "origin", "agent/memory")
    tid = _tasks(demo)[0].removeprefix("agent/task/")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", origin.as_uri(), str(clone))

    listed = agent_command("memory", "list", "--repo", str(clone))
    assert listed.returncode == 0, listed.stderr
    assert tid in listed.stdout and "origin/agent/memory" in listed.stderr
    found = agent_command("memory", "search", "average order value per region", "--repo", str(clone))
    assert found.returncode == 0 and tid in found.stdout, found.stderr
    shown = agent_command("memory", "show", tid, "--repo", str(clone))
    assert shown.returncode == 0 and "question: What is the average order value per region" in shown.stdout, shown.stderr
    assert git(clone, "for-each-ref", "refs/heads/agent/") == "", "read only: no branch made here"


def test_push_to_a_remote_that_is_not_there_is_one_clear_line(tmp_path):
    """Issue 23: `--push nosuch` printed a raw `git fetch … failed (128)` command line."""
    demo, _origin = _setup(tmp_path)
    refs = git(demo, "for-each-ref")
    for args in (["--model", "scripted:demo", Q], ["--resume", _tasks(demo)[0].removeprefix("agent/task/")]):
        r = agent_command("run", "--repo", str(demo), "--push", "nosuch", *args)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "no remote 'nosuch' here" in lines[0] and "git remote -v" in lines[0] and "origin" in lines[0]
        assert "git fetch" not in r.stderr
    assert git(demo, "for-each-ref") == refs, "no branch was made or moved"
