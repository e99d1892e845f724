"""F3: the memory branch's data/ tree must not write files anywhere on the host.

Git's object store takes any tree entry name: ``git mktree`` makes entries named ``..`` and
``.git``, ``git hash-object -t tree --literally`` one named ``/x`` (``ls-tree -r`` then lists
``data/../../x`` or ``data//x``). A memory branch whose data/ holds such entries has its good
files materialized as before, and the bad ones left out and named in a warning, never written:
not outside the cache directory, not inside it either."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

from gitops_agent.git.repo import GitRepo
from gitops_agent.memory.experience import MEMORY_BRANCH
from gitops_agent.memory.store import MemoryStore
from tests.helpers import agent_command, git, make_repo

PRICES = "sku,price\na,1.5\nb,2.5\n"


def _blob(repo: Path, data: str) -> str:
    return git(repo, "hash-object", "-w", "--stdin", input=data.encode()).strip()


def _mktree(repo: Path, entries: list[tuple[str, str, str]]) -> str:
    """A tree made by ``git mktree`` from (mode, name, object id)."""
    kind = {"040000": "tree"}
    lines = "".join(f"{mode} {kind.get(mode, 'blob')} {oid}\t{name}\n" for mode, name, oid in entries)
    return git(repo, "mktree", input=lines.encode()).strip()


def _raw_tree(repo: Path, entries: list[tuple[str, str, str]]) -> str:
    """A tree written byte by byte (``hash-object --literally``): names git mktree refuses."""
    data = b"".join(f"{mode.lstrip('0')} {name}".encode() + b"\0" + bytes.fromhex(oid) for mode, name, oid in entries)
    return git(repo, "hash-object", "-t", "tree", "--literally", "-w", "--stdin", input=data).strip()


def _escape_chain(repo: Path, target: Path, leaf: str) -> str:
    """A tree of ``..`` entries that climbs to / (more than deep enough from any cache directory)
    and then walks down to ``target``, where it holds ``leaf``: the red team's repro."""
    tree = _mktree(repo, [("100644", leaf, _blob(repo, "import os  # PWNED\n"))])
    for part in reversed(target.parts[1:]):
        tree = _mktree(repo, [("040000", part, tree)])
    for _ in range(40):
        tree = _mktree(repo, [("040000", "..", tree)])
    return tree


def _set_memory(repo: Path, data_entries: list[tuple[str, str, str]], raw: bool = False) -> None:
    """agent/memory := one commit whose data/ holds ``data_entries`` plus a good prices.csv."""
    entries = [("100644", "prices.csv", _blob(repo, PRICES)), *data_entries]
    data = (_raw_tree if raw else _mktree)(repo, entries)
    root = _mktree(repo, [("040000", "data", data)])
    commit = git(repo, "commit-tree", root, "-m", "memory: crafted data", input=b"").strip()
    git(repo, "update-ref", f"refs/heads/{MEMORY_BRANCH}", commit)


def _files(top: Path) -> set[Path]:
    return {Path(root) / n for root, _, names in os.walk(top) for n in names}


def _materialize(repo: Path, tmp_path: Path, caplog) -> tuple[Path, set[Path]]:
    """The data directory, and every file the materialization made outside it."""
    before = _files(tmp_path)
    with caplog.at_level(logging.WARNING):
        d = MemoryStore.open(GitRepo(repo)).materialize_data()
    assert d is not None and d.parent == repo / ".git" / "gitops-agent" / "memory-data"
    return d, {f for f in _files(tmp_path) - before if d not in f.parents}


def test_dotdot_entries_in_data_write_nothing_outside_the_cache(tmp_path, caplog):
    repo = make_repo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    _set_memory(repo, [("040000", "..", _escape_chain(repo, outside, "PWNED-dotdot.pth"))])
    d, stray = _materialize(repo, tmp_path, caplog)
    assert stray == set() and not (outside / "PWNED-dotdot.pth").exists()
    assert (d / "prices.csv").read_text() == PRICES
    assert (d / "prices.csv").stat().st_mode & 0o777 == 0o444
    assert "data/../../" in caplog.text and "PWNED-dotdot.pth" in caplog.text


def test_a_dot_git_entry_in_data_is_left_out_and_named(tmp_path, caplog):
    repo = make_repo(tmp_path)
    hooks = _mktree(repo, [("100755", "post-checkout", _blob(repo, "#!/bin/sh\necho PWNED\n"))])
    dot_git = _mktree(
        repo, [("100644", "config", _blob(repo, "[core]\n\tfsmonitor = touch /tmp/PWNED\n")), ("040000", "hooks", hooks)]
    )
    _set_memory(repo, [("040000", ".git", dot_git), ("040000", ".GIT", dot_git)])
    d, stray = _materialize(repo, tmp_path, caplog)
    assert stray == set()
    assert sorted(p.name for p in d.iterdir()) == [".complete", "prices.csv"]
    assert "data/.git/config" in caplog.text and "data/.GIT/hooks/post-checkout" in caplog.text


def test_an_absolute_entry_name_in_data_is_left_out_and_named(tmp_path, caplog):
    repo = make_repo(tmp_path)
    target = tmp_path / "outside" / "PWNED-abs.pth"
    target.parent.mkdir()
    _set_memory(repo, [("100644", str(target), _blob(repo, "PWNED\n"))], raw=True)
    d, stray = _materialize(repo, tmp_path, caplog)
    assert stray == set() and not target.exists()
    assert (d / "prices.csv").read_text() == PRICES
    assert f"data/{target}" in caplog.text


def test_a_task_run_on_a_crafted_memory_completes_and_writes_nothing_outside(tmp_path):
    repo = make_repo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    _set_memory(repo, [("040000", "..", _escape_chain(repo, outside, "PWNED-cli.pth"))])
    code = "import os; print('DATA', sorted(os.listdir('{{ data_dir }}')), open('{{ data_dir }}/prices.csv').read().count('\\n'))"
    script = tmp_path / "script.yaml"
    script.write_text(
        yaml.safe_dump(
            {
                "planner": [
                    {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "Read", "goal": "read the prices"}]}},
                    {"tool": "finish", "input": {"answer": "{{ results.n1 }}", "summary": "read"}},
                ],
                "executor:n1": [
                    {"tool": "run_python", "input": {"code": code}},
                    {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
                ],
            }
        )
    )
    before = _files(tmp_path)
    r = agent_command("run", "--repo", str(repo), "--model", f"scripted:{script}", "What do the shared prices hold?")
    assert r.returncode == 0, r.stderr
    # everything the run made is the agent's own state under .git (refs, objects, caches)
    assert {f for f in _files(tmp_path) - before if repo / ".git" not in f.parents} == set()
    assert not (outside / "PWNED-cli.pth").exists()
    assert "DATA ['.complete', 'prices.csv'] 3" in r.stdout + r.stderr
    assert "PWNED-cli.pth" in r.stderr


def test_links_in_data_are_not_written_and_modes_are_read_only(tmp_path, caplog):
    """(Guard, passes before the fix too.) A link in data/ is never made, so nothing is reached
    through it, even by a file entry of the same name."""
    repo = make_repo(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    inner = _mktree(repo, [("100644", "PWNED-link", _blob(repo, "PWNED\n"))])
    _set_memory(
        repo,
        [
            ("120000", "evil", _blob(repo, str(outside))),
            ("040000", "evil", inner),
            ("100755", "run.sh", _blob(repo, "#!/bin/sh\n")),
        ],
        raw=True,
    )
    d, stray = _materialize(repo, tmp_path, caplog)
    assert stray == set() and list(outside.iterdir()) == []
    assert not (d / "evil").is_symlink() and (d / "evil" / "PWNED-link").read_text() == "PWNED\n"
    assert (d / "run.sh").stat().st_mode & 0o777 == 0o555 and (d / "evil").stat().st_mode & 0o777 == 0o555
