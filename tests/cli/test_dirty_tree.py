"""Uncommitted edits: a run says they are not part of the task, and --include-changes takes
the working tree as it is, without touching the user's index or checkout."""

from __future__ import annotations

from tests.helpers import agent_command, git

Q = "What is the average order value per region?"


def _task(repo, before):
    new = set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split()) - before
    assert len(new) == 1
    return new.pop()


def test_a_dirty_tree_is_named_and_can_be_included(tmp_path):
    demo = tmp_path / "demo"
    assert agent_command("demo", "--dir", str(demo), "-q").returncode == 0
    (demo / "README.md").write_text("# Demo shop\n\nEdited, not committed.\n")
    (demo / "notes.txt").write_text("a new file\n")
    git(demo, "add", "notes.txt")
    (demo / "ignored.log").write_text("x\n")
    (demo / ".gitignore").write_text("*.log\n")
    status = git(demo, "status", "--porcelain")
    tasks = set(git(demo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agent/task/").split())

    r = agent_command("run", "--repo", str(demo), "--model", "scripted:demo", Q)
    assert r.returncode == 0, r.stderr
    assert "3 uncommitted change(s)" in r.stderr and "--include-changes" in r.stderr
    branch = _task(demo, tasks)
    assert "Edited" not in git(demo, "show", f"{branch}:README.md")
    assert git(demo, "ls-tree", "--name-only", branch, "notes.txt") == ""

    tasks.add(branch)
    r = agent_command("run", "--repo", str(demo), "--model", "scripted:demo", "--include-changes", Q)
    assert r.returncode == 0, r.stderr
    assert "including 3 uncommitted change(s)" in r.stderr
    branch = _task(demo, tasks)
    assert "Edited, not committed." in git(demo, "show", f"{branch}:README.md")
    assert git(demo, "show", f"{branch}:notes.txt") == "a new file\n"
    assert git(demo, "ls-tree", "--name-only", branch, "ignored.log") == "", ".gitignore is honoured"
    assert git(demo, "status", "--porcelain") == status, "the user's index and checkout are as they were"
    assert git(demo, "rev-parse", "HEAD") == git(demo, "rev-parse", "main")

    clean = tmp_path / "clean"
    assert agent_command("demo", "--dir", str(clean), "-q").returncode == 0
    r = agent_command("run", "--repo", str(clean), "--model", "scripted:demo", Q)
    assert "uncommitted" not in r.stderr


def test_quiet_still_says_that_the_working_tree_was_not_read(tmp_path):
    """Issue 23: under -q the note was gone, so an answer over the last commit read as one over
    the files on disk."""
    demo = tmp_path / "demo"
    assert agent_command("demo", "--dir", str(demo), "-q").returncode == 0
    (demo / "README.md").write_text("edited, not committed\n")
    r = agent_command("run", "-q", "--repo", str(demo), "--model", "scripted:demo", Q)
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("note ")]
    assert len(notes) == 1 and "1 uncommitted change(s)" in notes[0] and "--include-changes" in notes[0], r.stderr
    assert "plan v" not in r.stderr and "turn 1/" not in r.stderr, "still quiet otherwise"
