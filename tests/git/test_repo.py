"""gitops_agent/git/repo.py: what a user would check with plain git."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gitops_agent.core.errors import AgentError, GitError, PushConflict, PushRetriesExhausted
from gitops_agent.git.commits import Commits
from gitops_agent.git.repo import Commit, GitRepo, format_message, parse_trailers
from tests.helpers import ROOT

BRANCH = "agent/task/42-avg"
TRAILERS = {"Agent-Task": "42-avg", "Agent-Step": "1", "Agent-Role": "planner"}


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch, tmp_path_factory):
    """No global/system git config of the machine running the tests leaks in (and none is
    written): an empty HOME and no system config."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.delenv(k, raising=False)


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "User",
        "GIT_AUTHOR_EMAIL": "user@example.com",
        "GIT_COMMITTER_NAME": "User",
        "GIT_COMMITTER_EMAIL": "user@example.com",
    }
    p = subprocess.run(["git", "-C", str(cwd), *args], input=input, capture_output=True, env=env)
    assert p.returncode == 0, (args, p.stderr.decode())
    return p.stdout.decode()


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hello\n")
    (path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (path / "run.sh").chmod(0o755)
    (path / "data").mkdir()
    (path / "data" / "orders.csv").write_text("id,amount\n1,10\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "user")


@pytest.fixture
def store(repo) -> GitRepo:
    s = GitRepo(repo)
    s.create_branch(BRANCH, "main")
    return s


def external_commit(repo: Path, branch: str, path: str, content: bytes) -> str:
    """Somebody else (another process, plain git) commits to ``branch`` meanwhile."""
    idx = repo / ".git" / "other-index"

    def env_git(*a, input=None):
        return (
            subprocess.run(  # noqa: E731
                ["git", "-C", str(repo), *a],
                input=input,
                capture_output=True,
                check=True,
                env={
                    **os.environ,
                    "GIT_INDEX_FILE": str(idx),
                    "GIT_AUTHOR_NAME": "Other",
                    "GIT_AUTHOR_EMAIL": "o@x",
                    "GIT_COMMITTER_NAME": "Other",
                    "GIT_COMMITTER_EMAIL": "o@x",
                },
            )
            .stdout.decode()
            .strip()
        )

    tip = env_git("rev-parse", f"refs/heads/{branch}")
    env_git("read-tree", tip)
    blob = env_git("hash-object", "-w", "--stdin", input=content)
    env_git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
    tree = env_git("write-tree")
    new = env_git("commit-tree", tree, "-p", tip, "-m", f"other: {path}")
    env_git("update-ref", f"refs/heads/{branch}", new, tip)
    idx.unlink()
    return new


# ------------------------------------------------------------------ messages


def test_format_message_parses_with_git(tmp_path):
    msg = format_message(
        "agent(execute): n2 compute\naverage", {"Agent-Task": "42", "Agent-Usage": "in=1 out=2\nx"}, "Body line.\n\nSecond: para"
    )
    assert msg.startswith("agent(execute): n2 compute average\n\nBody line.\n\nSecond: para\n\nAgent-Task: 42\n")
    p = subprocess.run(["git", "interpret-trailers", "--parse"], input=msg.encode(), capture_output=True, check=True)
    assert p.stdout.decode() == "Agent-Task: 42\nAgent-Usage: in=1 out=2 x\n"
    assert parse_trailers(msg) == {"Agent-Task": "42", "Agent-Usage": "in=1 out=2 x"}
    assert parse_trailers("only a subject: here\n") == {}
    assert parse_trailers("s\n\nnot a trailer line\nKey: v\n") == {}
    assert parse_trailers("s\n\nKey: a\n  folded\nOther:b\n") == {"Key": "a folded", "Other": "b"}
    with pytest.raises(ValueError):
        format_message("s", {"bad key": "v"})


# ------------------------------------------------------------------ local mode


def test_commit_visible_to_git_and_checkout_untouched(repo, store):
    # a dirty user tree: modified tracked file, staged change, untracked file
    (repo / "README.md").write_text("user edit\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "scratch.txt").write_text("untracked\n")
    before = (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        (repo / ".git" / "index").read_bytes(),
        git(repo, "status", "--porcelain"),
        git(repo, "ls-files", "-s"),
    )

    sha = store.commit_files(
        BRANCH,
        {".agent/tasks/42-avg/task.json": b'{"q": 1}\n', "data/out file.txt": "ünïcode\n".encode()},
        "agent(intake): 42-avg\n\nWhy: a question.",
        TRAILERS,
    )
    assert git(repo, "rev-parse", BRANCH).strip() == sha
    assert (
        git(repo, "log", "-1", "--format=%(trailers:unfold)", BRANCH)
        == "".join(f"{k}: {v}\n" for k, v in TRAILERS.items()) + "\n"
    )
    raw = git(repo, "log", "-1", "--format=%B", BRANCH)
    assert raw.startswith("agent(intake): 42-avg\n\nWhy: a question.\n\nAgent-Task: 42-avg\n")
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=raw.encode(), capture_output=True).stdout.decode()
    assert "Agent-Step: 1\n" in parsed
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn", BRANCH) == "gitops-agent <gitops-agent@localhost>|gitops-agent\n"

    assert store.read_file(BRANCH, ".agent/tasks/42-avg/task.json") == b'{"q": 1}\n'
    assert store.read_file(BRANCH, "data/out file.txt") == "ünïcode\n".encode()
    assert store.read_file(BRANCH, "nope.txt") is None
    assert store.read_file(BRANCH, "data") is None  # a directory is not a file
    assert store.read_file("main", "README.md") == b"hello\n"  # the committed one, not the dirty tree
    assert store.read_files(sha, ["README.md", "missing", "data/orders.csv"]) == {
        "README.md": b"hello\n",
        "missing": None,
        "data/orders.csv": b"id,amount\n1,10\n",
    }
    assert store.list_files(BRANCH, ".agent/tasks/42-avg/") == [".agent/tasks/42-avg/task.json"]
    assert store.list_files(BRANCH, "data/") == ["data/orders.csv", "data/out file.txt"]
    assert set(store.list_files(BRANCH)) == {
        "README.md",
        "run.sh",
        "data/orders.csv",
        "data/out file.txt",
        ".agent/tasks/42-avg/task.json",
    }
    assert store.list_files(BRANCH, "nothing/here/") == []
    with pytest.raises(GitError):
        store.read_file("no-such-branch", "README.md")

    after = (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        (repo / ".git" / "index").read_bytes(),
        git(repo, "status", "--porcelain"),
        git(repo, "ls-files", "-s"),
    )
    assert after == before
    assert (repo / "README.md").read_text() == "user edit\n"
    assert not (repo / ".agent").exists()


def test_identity_never_from_user_config(repo, store):
    git(repo, "config", "user.name", "Someone Else")
    git(repo, "config", "user.email", "else@example.com")
    git(repo, "config", "commit.gpgSign", "true")  # would need a key: never used
    git(repo, "config", "gpg.program", "false")
    hooks = repo / "hooks"
    hooks.mkdir()
    ran = repo / "hook-ran"
    # reference-transaction runs on every ref update (commit_files moves the branch with
    # update-ref): a hook that fails would abort it, and one that runs could do anything
    for h in ("reference-transaction", "post-checkout", "pre-push"):
        (hooks / h).write_text(f"#!/bin/sh\necho {h} >> '{ran}'\nexit 1\n")
        (hooks / h).chmod(0o755)
    git(repo, "config", "core.hooksPath", str(hooks))
    store.commit_files(BRANCH, {"a.txt": b"a"}, "s", {})
    with store.checkout(BRANCH, "hooked") as co:
        assert (co.path / "a.txt").read_bytes() == b"a"
    assert store.read_file(BRANCH, "a.txt") == b"a"
    assert not ran.exists(), f"a hook from the user's config ran: {ran.read_text()}"
    assert git(repo, "log", "-1", "--format=%an %ae %cn %ce", BRANCH).split() == ["gitops-agent", "gitops-agent@localhost"] * 2


def test_deletes_and_modes(repo, store):
    store.commit_files(
        BRANCH, {"run.sh": b"#!/bin/sh\necho changed\n", "new.sh": b"x", "tool.py": b"y"}, "edit", {}, modes={"tool.py": "100755"}
    )
    ls = git(repo, "ls-tree", "-r", BRANCH)
    modes = {line.split("\t")[1]: line.split()[0] for line in ls.splitlines()}
    assert modes["run.sh"] == "100755"  # kept
    assert modes["new.sh"] == "100644"
    assert modes["tool.py"] == "100755"
    assert store.read_file(BRANCH, "run.sh") == b"#!/bin/sh\necho changed\n"

    store.commit_files(BRANCH, {"README.md": None, "data": None, "not-there.txt": None}, "delete", {})
    files = store.list_files(BRANCH)
    assert "README.md" not in files and not any(f.startswith("data/") for f in files)
    assert store.read_file(BRANCH, "README.md") is None
    assert store.read_file("main", "README.md") == b"hello\n"


def test_missing_branch_and_existing_branch(repo, store):
    assert store.tip("agent/task/none") is None
    with pytest.raises(AgentError, match="already exists"):
        store.create_branch(BRANCH, "main")
    with pytest.raises(AgentError, match="does not exist"):
        store.commit_files("agent/task/none", {"a": b"a"}, "s", {})
    with pytest.raises(AgentError):
        store.create_branch("bad..name", "main")
    with pytest.raises(AgentError):
        store.commit_files(BRANCH, {"../escape": b"x"}, "s", {})
    with pytest.raises(AgentError):
        store.commit_files(BRANCH, {".git/config": b"x"}, "s", {})
    # an orphan branch (agent/memory)
    root = store.create_branch("agent/memory", None)
    assert git(repo, "rev-list", "--count", root).strip() == "1"
    assert store.list_files("agent/memory") == []


def test_refuses_checked_out_branch(repo, store):
    git(repo, "switch", "-q", BRANCH)
    with pytest.raises(AgentError, match="checked out"):
        store.commit_files(BRANCH, {"a": b"a"}, "s", {})


@pytest.mark.parametrize("serialize", [True, False], ids=["locked", "raw-cas"])
def test_threads_race_on_one_branch(repo, store, serialize, monkeypatch):
    monkeypatch.setattr(GitRepo, "serialize_threads", serialize)
    if not serialize:
        store.push_retries = 60  # pure CAS with 4 hot writers: losing streaks are expected
    start = store.tip(BRANCH)
    errors = []

    def writer(t):
        try:
            for i in range(15):
                store.commit_files(
                    BRANCH, {f"t{t}/f{i}.txt": f"{t}-{i}".encode()}, f"t{t} c{i}", {"Agent-Node": f"t{t}", "Agent-Step": str(i)}
                )
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert git(repo, "rev-list", "--count", f"{start}..{BRANCH}").strip() == "60"
    assert git(repo, "rev-list", "--merges", BRANCH).strip() == ""
    assert git(repo, "rev-list", "--first-parent", "--count", BRANCH) == git(repo, "rev-list", "--count", BRANCH)
    files = store.list_files(BRANCH)
    assert all(f"t{t}/f{i}.txt" in files for t in range(4) for i in range(15))
    assert store.read_file(BRANCH, "t3/f14.txt") == b"3-14"


def test_processes_race_locally(repo, store):
    script = (
        "import sys; from gitops_agent.git.repo import GitRepo\n"
        "s = GitRepo(sys.argv[1])\n"
        "for i in range(10): s.commit_files(sys.argv[2], {f'p{sys.argv[3]}/{i}': b'x'}, f'p{i}', {'Agent-Node': sys.argv[3]})\n"
    )
    start = store.tip(BRANCH)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(repo), BRANCH, str(n)], cwd=ROOT) for n in range(2)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert git(repo, "rev-list", "--count", f"{start}..{BRANCH}").strip() == "20"
    assert git(repo, "rev-list", "--merges", BRANCH).strip() == ""


def test_conflict_same_path_vs_rebase_different_path(repo, store, monkeypatch):
    base = store.commit_files(BRANCH, {"plan.json": b"v1", "notes.md": b"n1"}, "plan v1", {})
    # the branch moved since `base`, touching the same path -> conflict, nothing written
    other = external_commit(repo, BRANCH, "plan.json", b"v2 by someone else")
    with pytest.raises(PushConflict, match="plan.json"):
        store.commit_files(BRANCH, {"plan.json": b"v2 by us"}, "plan v2", {}, base=base)
    assert store.tip(BRANCH) == other
    # ... touching another path -> rebased, both land
    new = store.commit_files(BRANCH, {"steps/0002-n1/result.md": b"r"}, "step", {}, base=base)
    assert git(repo, "rev-parse", f"{new}^").strip() == other
    assert store.read_file(BRANCH, "plan.json") == b"v2 by someone else"
    assert store.read_file(BRANCH, "steps/0002-n1/result.md") == b"r"

    # a race lost at publish time (someone commits between our read of the tip and the CAS)
    real_build = Commits._build_trees
    hits = {"n": 0}

    def racing_build(self, *a, **k):
        out = real_build(self, *a, **k)
        hits["n"] += 1
        if hits["n"] == 1:
            external_commit(repo, BRANCH, "plan.json" if race_same else "other.txt", b"meanwhile")
        return out

    monkeypatch.setattr(Commits, "_build_trees", racing_build)
    race_same = False
    before = store.tip(BRANCH)
    sha = store.commit_files(BRANCH, {"notes.md": b"n2"}, "notes", {})
    assert hits["n"] == 2  # rebuilt on the new tip
    assert git(repo, "rev-list", "--count", f"{before}..{sha}").strip() == "2"
    assert store.read_file(sha, "other.txt") == b"meanwhile" and store.read_file(sha, "notes.md") == b"n2"

    hits["n"] = 0
    race_same = True
    with pytest.raises(PushConflict):  # base None = the tip when called
        store.commit_files(BRANCH, {"plan.json": b"ours"}, "plan", {})

    hits["n"] = 0
    race_same = False
    store.push_retries = 0
    with pytest.raises(PushRetriesExhausted):
        store.commit_files(BRANCH, {"notes.md": b"n3"}, "notes", {})


def test_log_and_find_commit(store):
    for step in range(1, 4):
        store.commit_files(
            BRANCH,
            {f"s{step}": b"x"},
            f"agent(execute): step {step}\n\nDid things.",
            {**TRAILERS, "Agent-Step": str(step), "Agent-Node": "n1"},
        )
    store.commit_files(BRANCH, {"s12": b"x"}, "agent(execute): step 12", {**TRAILERS, "Agent-Step": "12", "Agent-Node": "n1"})
    log = store.log(BRANCH)
    assert [c.subject for c in log[:4]] == ["agent(execute): step 12"] + [f"agent(execute): step {s}" for s in (3, 2, 1)]
    assert log[-1].subject == "initial" and log[-1].trailers == {} and log[-1].parents == []
    c = log[1]
    assert isinstance(c, Commit) and c.body == "Did things." and c.trailers["Agent-Step"] == "3" and c.parents == [log[2].sha]
    assert len(store.log(BRANCH, max_count=2)) == 2
    assert [c.subject for c in store.log(BRANCH, grep_trailer=("Agent-Step", "1"))] == ["agent(execute): step 1"]
    found = store.find_commit(BRANCH, {"Agent-Task": "42-avg", "Agent-Step": "2", "Agent-Node": "n1"})
    assert found and found.subject == "agent(execute): step 2"
    assert store.find_commit(BRANCH, {"Agent-Task": "42-avg", "Agent-Step": "2", "Agent-Node": "n9"}) is None
    assert store.find_commit(BRANCH, {"Agent-Step": "12"}).subject == "agent(execute): step 12"


# ------------------------------------------------------------------ checkouts


def _changes(co) -> dict:
    got = co.collect()
    return {p: (o.kind, o.data, o.mode) for p, o in got.changes.items()}


def test_checkout_is_a_plain_directory_and_collect_finds_every_change(repo, store):
    git(repo, "commit", "-q", "--allow-empty", "-m", "user keeps working")  # unrelated user activity
    store.commit_files(BRANCH, {".gitignore": b"*.log\n"}, "ignore logs", {})
    with store.checkout(BRANCH, "step-0001") as co:
        wt = co.path
        assert wt == store.common_dir / "gitops-agent" / "checkouts" / "step-0001"
        assert not (wt / ".git").exists()  # nothing there for git to discover
        assert (wt / "README.md").read_text() == "hello\n" and os.access(wt / "run.sh", os.X_OK)
        assert _changes(co) == {}
        (wt / "README.md").write_text("changed\n")
        (wt / "my file ü.txt").write_text("new\n")
        (wt / "out" / "deep").mkdir(parents=True)
        (wt / "out" / "deep" / "x.bin").write_bytes(b"\0\1")
        (wt / "data" / "orders.csv").unlink()
        (wt / ".gitignore").write_text("*.log\n*.csv\n")  # what the code writes there decides nothing
        (wt / "debug.log").write_text("ignored\n")  # ignored by the .gitignore the tree had
        (wt / "new.csv").write_text("1\n")
        (wt / "tool").write_text("#!/bin/sh\n")
        (wt / "tool").chmod(0o755)
        (wt / "run.sh").write_text("#!/bin/sh\necho hi\n")  # rewritten with the same content
        changed = _changes(co)
        assert changed == {
            "README.md": ("file", b"changed\n", "100644"),
            "my file ü.txt": ("file", b"new\n", "100644"),
            "out/deep/x.bin": ("file", b"\0\1", "100644"),
            "data/orders.csv": ("deleted", None, "100644"),
            ".gitignore": ("file", b"*.log\n*.csv\n", "100644"),
            "new.csv": ("file", b"1\n", "100644"),
            "tool": ("file", b"#!/bin/sh\n", "100755"),
        }
        got = co.collect().changes
        sha = store.commit_files(
            BRANCH,
            {p: o.data for p, o in got.items()},
            "step",
            {},
            modes={p: o.mode for p, o in got.items() if o.kind != "deleted"},
        )
        assert store.read_file(sha, "my file ü.txt") == b"new\n"
        assert store.read_file(sha, "data/orders.csv") is None
        assert "100755 blob" in git(repo, "ls-tree", sha, "tool")
    assert not wt.exists()
    assert git(repo, "worktree", "list").count("\n") == 1  # no worktree was ever registered
    assert git(repo, "status", "--porcelain") == ""


def test_checkout_skip_and_keep_prefixes(repo, store):
    store.commit_files(BRANCH, {".agent/tasks/t/steps/0002-n1/out.csv": b"1", ".agent/tasks/t/steps/0003-n2/x": b"2"}, "s", {})
    with store.checkout(BRANCH, "sk", skip=[".agent/"], keep=[".agent/tasks/t/steps/0002-n1/"]) as co:
        assert (co.path / ".agent/tasks/t/steps/0002-n1/out.csv").read_bytes() == b"1"
        assert not (co.path / ".agent/tasks/t/steps/0003-n2").exists()
        assert _changes(co) == {}  # what was not exported is not "deleted"


def test_checkout_stale_and_parallel(repo, store):
    base = store.common_dir / "gitops-agent" / "checkouts"
    # a killed run left its checkout behind, with the marker of a process that is gone
    (base / "w1").mkdir(parents=True)
    (base / "w1" / "junk").write_text("left over")
    (base / "w1.pid").write_text("999999999")
    # and another one from a dead process, under another name
    (base / "w9").mkdir()
    (base / "w9.pid").write_text("999999998")
    with store.checkout(BRANCH, "w1") as co:
        assert not (co.path / "junk").exists() and (co.path / "README.md").exists()
        assert not (base / "w9").exists() and not (base / "w9.pid").exists()
        # a read-only directory the code made does not stop the clean-up
        (co.path / "ro" / "deep").mkdir(parents=True)
        (co.path / "ro" / "deep" / "f").write_text("x")
        os.chmod(co.path / "ro" / "deep", 0o500)
        os.chmod(co.path / "ro", 0o500)
    assert not (base / "w1").exists() and not (base / "w1.pid").exists()

    errors = []

    def use(n):
        try:
            with store.checkout(BRANCH, f"par-{n}") as co:
                (co.path / f"f{n}").write_text(str(n))
                assert _changes(co) == {f"f{n}": ("file", str(n).encode(), "100644")}
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=use, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert list(base.iterdir()) == []


# ------------------------------------------------------------------ remote mode


@pytest.fixture
def bare(tmp_path, repo) -> Path:
    b = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(b)], check=True, capture_output=True)
    git(b, "config", "uploadpack.allowFilter", "true")
    return b


PUSHER = """
import sys
from gitops_agent.git.repo import GitRepo
s = GitRepo(sys.argv[1], remote="origin")
for i in range(10):
    s.commit_files(sys.argv[2], {f"w{sys.argv[3]}/{i}.txt": f"{i}".encode()}, f"writer {sys.argv[3]} commit {i}",
                   {"Agent-Task": "42-avg", "Agent-Node": "w" + sys.argv[3], "Agent-Step": str(i)})
"""


def test_remote_two_clones_in_processes(tmp_path, repo, bare):
    for i in range(30):  # the base has a history of its own
        git(repo, "commit", "-q", "--allow-empty", "-m", f"user commit {i}")
    git(repo, "push", "-q", str(bare), "main")
    url = f"file://{bare}"
    first = GitRepo.clone(url, tmp_path / "c0", "main")
    assert first.git("rev-parse", "--is-shallow-repository").strip() == "true"
    assert first.tip(BRANCH) is None  # missing on the remote: None, not an error
    start = first.create_branch(BRANCH, "main")
    with pytest.raises(AgentError, match="already exists"):
        first.create_branch(BRANCH, "main")
    clones = [GitRepo.clone(url, tmp_path / f"c{n}", BRANCH) for n in (1, 2)]
    for c in clones:
        assert c.git("rev-parse", "--is-shallow-repository").strip() == "true"
        assert c.tip(BRANCH) == start
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSHER, str(c.repo), BRANCH, str(n)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for n, c in enumerate(clones)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert git(bare, "rev-list", "--count", f"{start}..{BRANCH}").strip() == "20"
    assert git(bare, "rev-list", "--merges", BRANCH).strip() == ""
    # every commit has exactly one parent and the chain reaches the start: nothing was dropped
    chain = git(bare, "rev-list", "--parents", f"{start}..{BRANCH}").splitlines()
    assert all(len(line.split()) == 2 for line in chain)
    subjects = git(bare, "log", "--format=%s", f"{start}..{BRANCH}").splitlines()
    assert sorted(subjects) == sorted(f"writer {n} commit {i}" for n in range(2) for i in range(10))
    # both writers' commits are interleaved in their own order
    for n in range(2):
        mine = [s for s in reversed(subjects) if s.startswith(f"writer {n} ")]
        assert mine == [f"writer {n} commit {i}" for i in range(10)]

    # the first clone sees it all after a fetch; reads use the remote-tracking ref
    tip = first.tip(BRANCH)
    assert tip == git(bare, "rev-parse", BRANCH).strip()
    assert first.read_file(BRANCH, "w1/9.txt") == b"9"
    assert len(first.list_files(BRANCH, "w0/")) == 10
    # find_commit deepens the shallow history within the task, but never into the base
    assert first.git("rev-list", "--count", f"refs/remotes/origin/{BRANCH}").strip() == "1"  # depth 1
    found = first.find_commit(BRANCH, {"Agent-Node": "w0", "Agent-Step": "0", "Agent-Task": "42-avg"})
    assert found and found.subject == "writer 0 commit 0"
    assert first.find_commit(BRANCH, {"Agent-Task": "42-avg", "Agent-Node": "w0", "Agent-Step": "99"}) is None
    assert int(first.git("rev-list", "--count", f"refs/remotes/origin/{BRANCH}")) < 51  # not all of main's


def test_remote_conflict_and_auth_env(tmp_path, bare):
    secret = "Authorization: Bearer sekrit-token-123"
    auth = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": secret}
    a = GitRepo.clone(f"file://{bare}", tmp_path / "a", "main", auth_env=auth)
    b = GitRepo.clone(f"file://{bare}", tmp_path / "b", "main", auth_env=auth)
    a.create_branch(BRANCH, "main")
    base = b.tip(BRANCH)
    a.commit_files(BRANCH, {"plan.json": b"a"}, "a plan", {})
    with pytest.raises(PushConflict):
        b.commit_files(BRANCH, {"plan.json": b"b"}, "b plan", {}, base=base)
    sha = b.commit_files(BRANCH, {"steps/b.md": b"b"}, "b step", {}, base=base)
    assert git(bare, "rev-parse", BRANCH).strip() == sha
    assert b.read_file(BRANCH, "plan.json") == b"a"
    # the header is there for network commands only, and never in any config file
    assert b.git("config", "--get", "http.extraHeader", network=True).strip() == secret
    assert b.git("config", "--get", "http.extraHeader", check=False).strip() == ""
    for r in (a, b):
        assert "sekrit" not in (r.repo / ".git" / "config").read_text()
    with pytest.raises(AgentError, match="password"):
        GitRepo.clone("https://user:pw@example.com/r.git", tmp_path / "c")


# ------------------------------------------------------------------ speed (reported, not asserted)


def test_commit_files_timing(repo, store, capsys):
    """50 step commits in a row: each lands on the branch, in order, and a step's commit stays
    cheap (12 to 40 ms on a shared 2-core machine; the bound leaves room for a loaded one, so only a
    real regression, such as a walk of the branch's history per commit, fails it)."""
    times = []
    base = store.tip(BRANCH)
    for i in range(50):
        t0 = time.perf_counter()
        store.commit_files(
            BRANCH,
            {
                f".agent/tasks/42-avg/steps/{i:04d}-n1/result.md": b"r" * 200 + str(i).encode(),
                f".agent/tasks/42-avg/steps/{i:04d}-n1/step.json": b"{}",
            },
            f"agent(execute): step {i}",
            {**TRAILERS, "Agent-Step": str(i)},
        )
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(20):
        assert store.read_file(BRANCH, ".agent/tasks/42-avg/steps/0001-n1/result.md") == b"r" * 200 + b"1"
    read_ms = (time.perf_counter() - t0) / 20 * 1000
    with capsys.disabled():
        print(
            f"\n[gitstore] commit_files median {statistics.median(times) * 1000:.1f} ms, "
            f"p90 {sorted(times)[44] * 1000:.1f} ms over 50 (local mode); read_file {read_ms:.1f} ms"
        )
    subjects = git(repo, "log", "--format=%s", f"{base}..{BRANCH}").splitlines()
    assert subjects == [f"agent(execute): step {i}" for i in reversed(range(50))]
    assert len(store.list_files(BRANCH, ".agent/tasks/42-avg/steps/")) == 100
    assert statistics.median(times) < 0.5, f"commit_files median {statistics.median(times) * 1000:.0f} ms"
    assert read_ms < 100


def test_one_commit_with_thousands_of_files(repo):
    """A data set added in one commit: the blob writer must not deadlock on its pipes."""
    g = GitRepo(repo)
    g.create_branch("agent/task/big", "HEAD")
    files = {f"data/part-{i:05d}.csv": f"{i},{i * i}\n".encode() for i in range(6000)}
    g.commit_files("agent/task/big", files, "add a data set", {"Agent-Task": "big"})
    assert len(g.list_files("agent/task/big", "data/part-")) == 6000
    assert g.read_file("agent/task/big", "data/part-05999.csv") == files["data/part-05999.csv"]


@pytest.mark.parametrize("trees", [True, False], ids=["hashed-trees", "index"])
def test_both_tree_builders_make_the_same_tree(repo, trees):
    """Commits are built from the changed trees only (SHA-1) or through a temporary index
    (SHA-256 repositories): the same changes give the same tree either way."""
    store = GitRepo(repo)
    store._sha1_cache = trees
    store.create_branch("agent/task/t", "main")
    changes = {"a/b/c.txt": b"c", "a/d.txt": b"d", "a.txt": b"x", "a-b": b"y", "top.txt": b"t", "z/y/x/w.txt": b"w"}
    sha = store.commit_files("agent/task/t", changes, "one", {}, modes={"top.txt": "100755"})
    sha = store.commit_files("agent/task/t", {"a/b/c.txt": None, "a/d.txt": b"d2", "z": None}, "two", {})
    files = store.list_files(sha)
    assert "a/b/c.txt" not in files and not any(f.startswith("z/") for f in files)
    assert store.read_file(sha, "a/d.txt") == b"d2" and store.read_file(sha, "top.txt") == b"t"
    assert git(repo, "ls-tree", sha, "top.txt").split()[0] == "100755"
    git(repo, "fsck", "--no-dangling")  # well-formed trees, sorted as git sorts them
    # the same edits through plain git give the same tree id
    other = repo.parent / "plain"
    git(repo.parent, "clone", "-q", str(repo), str(other))
    git(other, "checkout", "-q", "main")
    for p, v in changes.items():
        (other / p).parent.mkdir(parents=True, exist_ok=True)
        (other / p).write_bytes(v)
    (other / "top.txt").chmod(0o755)
    (other / "a/b/c.txt").unlink()
    (other / "a/d.txt").write_bytes(b"d2")
    import shutil as _sh

    _sh.rmtree(other / "z")
    git(other, "add", "-A")
    assert git(other, "write-tree").strip() == git(repo, "rev-parse", f"{sha}^{{tree}}").strip()


def test_a_directory_replaced_by_a_file_reports_what_it_deleted(repo, store):
    with store.checkout(BRANCH, "dir-to-file") as co:
        import shutil

        shutil.rmtree(co.path / "data")
        (co.path / "data").write_text("gone\n")
        changes = _changes(co)
    assert changes["data/orders.csv"] == ("deleted", None, "100644")
    assert changes["data"] == ("file", b"gone\n", "100644")
