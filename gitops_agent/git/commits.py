"""Writing: one commit of a set of file changes on top of a branch's tip, built from the changed
trees only (or a temporary index in SHA-256 repositories), re-applied on the new tip after a lost
race when nobody else touched the same paths."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_agent.core.errors import AgentError, GitError, PolicyViolation, PushConflict, PushRetriesExhausted
from gitops_agent.git.locks import named_lock
from gitops_agent.git.messages import format_message
from gitops_agent.git.names import MODES, check_branch, check_path, dec, enc
from gitops_agent.git.scratch import in_repo

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.git.repo import GitRepo


def _parse_tree(data: bytes | None) -> dict[bytes, tuple[bytes, bytes]]:
    """{name: (mode, 20-byte id)} of a raw SHA-1 tree object."""
    out: dict[bytes, tuple[bytes, bytes]] = {}
    pos = 0
    while data and pos < len(data):
        sp = data.index(b" ", pos)
        nul = data.index(b"\0", sp)
        out[data[sp + 1 : nul]] = (data[pos:sp], data[nul + 1 : nul + 21])
        pos = nul + 21
    return out


def _tree_bytes(entries: dict[bytes, tuple[bytes, bytes]]) -> bytes:
    """A raw tree object, entries in git's order (a directory sorts as if its name ended in /)."""
    key = lambda item: item[0] + (b"/" if item[1][0] == b"40000" else b"")  # noqa: E731
    return b"".join(mode + b" " + name + b"\0" + oid for name, (mode, oid) in sorted(entries.items(), key=key))


class Commits:
    """Part of ``GitRepo``: commits. It reaches the repository's runner and the other
    parts through ``self.g``, the GitRepo it belongs to."""

    def __init__(self, g: "GitRepo") -> None:
        self.g = g

    def checked_out(self, branch: str) -> bool:
        """Is refs/heads/<branch> the HEAD of one of the repository's worktrees?"""
        want = f"ref: refs/heads/{branch}"
        heads = [self.g.common_dir / "HEAD"]
        wt = self.g.common_dir / "worktrees"
        if wt.is_dir():
            heads += [d / "HEAD" for d in wt.iterdir()]
        for h in heads:
            try:
                if h.read_text().strip() == want:
                    return True
            except OSError:
                pass
        return False

    def commit_files(
        self,
        branch: str,
        changes: dict[str, bytes | None],
        message: str,
        trailers: dict[str, str],
        base: str | None = None,
        *,
        modes: dict[str, str] | None = None,
    ) -> str:
        """One commit on top of ``branch``'s current tip whose tree is the tip's tree with
        ``changes`` applied (bytes: write, None: delete). Returns the new commit's sha.

        ``base``: the commit the caller's change is based on (default: the tip when called).
        If the branch moved past ``base`` and touched any of the same paths: PushConflict;
        otherwise the change is re-applied on the new tip (at most ``push_retries`` times:
        PushRetriesExhausted). ``modes``: file modes for written paths (default: keep the
        existing mode, 100644 for new files)."""
        check_branch(branch)
        changes = dict(changes)
        if self.g.redact is not None:
            changes = {p: (self.g.redact(p, v) if v is not None else None) for p, v in changes.items()}
        for p in changes:
            check_path(p)
        modes = dict(modes or {})
        for p, m in modes.items():
            if m not in MODES:
                raise PolicyViolation(f"bad mode {m!r} for {p!r}: use one of {sorted(MODES)}")
        subject, _, body = message.strip("\n").partition("\n\n")
        msg = enc(format_message(subject, trailers, body))
        if self.g.remote is None and self.checked_out(branch):
            raise AgentError(
                f"branch {branch!r} is checked out in a worktree of {self.g.repo}; "
                "switch away from it so the agent can commit to it"
            )
        lock = named_lock("commit", str(self.g.common_dir), self.g.remote, branch) if self.g.serialize_threads else None
        if lock:
            lock.acquire()
        try:
            with in_repo(self.g.common_dir) as td:  # not the system temp dir: a kill -9 leaves it to the next commit
                return self._commit_loop(branch, changes, msg, base, modes, td)
        finally:
            if lock:
                lock.release()

    def _commit_loop(self, branch, changes, msg, base, modes, td: Path) -> str:
        writes = [p for p, v in changes.items() if v is not None]
        # 1. the blobs (independent of the tip; started first, runs alongside the tip read)
        hash_job = None
        if writes:
            lines = []
            for i, p in enumerate(writes):
                f = td / f"blob{i}"
                f.write_bytes(changes[p])
                lines.append(str(f))
            # the path list goes in as a file: writing it to a pipe while git's answers fill the
            # other pipe would deadlock past a few thousand files
            listing = td / "paths"
            listing.write_bytes(enc("\n".join(lines) + "\n"))
            hash_job = self.g._spawn(["hash-object", "-w", "--no-filters", "--stdin-paths"], stdin_path=listing)
        try:
            if self.g.remote is not None and base is not None:
                # the caller just fetched: push on top of what it saw; a rejection fetches
                tip = self.g._resolve(base)
            else:
                tip = self._current_tip(branch)
        except BaseException:
            if hash_job:
                hash_job[1].kill()
                hash_job[1].wait()
            raise
        blobs: dict[str, str] = {}
        if hash_job:
            args, p = hash_job
            out = p.stdout.read()
            err = p.stderr.read()
            p.wait()
            if p.returncode != 0:
                raise GitError(args, p.returncode, dec(err))
            blobs = dict(zip(writes, dec(out).split()))
        if tip is None:
            raise AgentError(f"branch {branch!r} does not exist (create it with create_branch)")
        base_sha = tip if base is None else self.g._resolve(base)
        index = td / "index"
        for attempt in range(self.g.push_retries + 1):
            if tip != base_sha:
                clash = self._changed_between(base_sha, tip, list(changes))
                if clash:
                    raise PushConflict(f"{branch}: changed since {base_sha[:12]} by someone else: " + ", ".join(sorted(clash)))
            new = (
                self._build_trees(tip, changes, blobs, modes, msg, td)
                if self.g._sha1
                else self._build(tip, changes, blobs, modes, msg, index)
            )
            ok, newtip = self.g.sync._publish(branch, new, tip)
            if ok:
                return new
            if attempt < self.g.push_retries:
                time.sleep(min(1.0, 0.02 * (2**attempt)) * random.uniform(0.5, 1.5))
                if newtip is None:
                    newtip = self._current_tip(branch)
                if newtip is None:
                    raise AgentError(f"branch {branch!r} was deleted while committing")
                tip = newtip
        raise PushRetriesExhausted(f"{branch}: lost the race {self.g.push_retries + 1} times; giving up")

    def _current_tip(self, branch: str) -> str | None:
        if self.g.remote is None:
            return self.g._local_sha(f"refs/heads/{branch}")
        return self.g.sync._fetch(branch)

    def _changed_between(self, a: str, b: str, paths: list[str]) -> set[str]:
        """Which of ``paths`` (files, or directories: anything under them) differ a..b."""
        out = self.g._run(["diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b]).stdout
        changed = {dec(n) for n in out.split(b"\0") if n}
        hits = set()
        for p in paths:
            if p in changed or any(c.startswith(p + "/") for c in changed):
                hits.add(p)
        return hits

    def _build_trees(self, tip, changes, blobs, modes, msg: bytes, td: Path) -> str:
        """The commit = tip's tree + changes, rebuilding only the trees on the changed paths
        (so a commit costs the same at step 200 as at step 2, whatever the size of the tree)."""
        dirs: set[str] = {""}
        for p in changes:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        order = sorted(dirs, key=lambda d: d.count("/") if d else -1)  # root first
        raw = self._read_trees(tip, order)
        entries: dict[str, dict[bytes, tuple[bytes, bytes]]] = {d: _parse_tree(raw.get(d)) for d in order}
        for p, v in changes.items():
            d, _, name = p.rpartition("/")
            nb = enc(name)
            if v is None:
                entries[d].pop(nb, None)
                continue
            old = entries[d].get(nb)
            mode = modes.get(p) or (dec(old[0]) if old and dec(old[0]) in MODES else "100644")
            entries[d][nb] = (enc(mode), bytes.fromhex(blobs[p]))
        # bottom-up: hash each changed tree, hang it into its parent (an empty one is dropped)
        objects: list[bytes] = []
        for d in sorted(order, key=lambda d: -(d.count("/") + 1) if d else 0):
            data = _tree_bytes(entries[d])
            tid = hashlib.sha1(b"tree %d\0" % len(data) + data).digest()
            if d:
                parent, _, name = d.rpartition("/")
                if entries[d]:
                    entries[parent][enc(name)] = (b"40000", tid)
                    objects.append(data)
                else:
                    entries[parent].pop(enc(name), None)
            else:
                objects.append(data)
                root = tid.hex()
        paths = []
        for i, data in enumerate(objects):
            f = td / f"tree{i}"
            f.write_bytes(data)
            paths.append(str(f))
        self.g._run(["hash-object", "-t", "tree", "-w", "--stdin-paths"], input=enc("\n".join(paths) + "\n"))
        return self.g._run(["commit-tree", "--no-gpg-sign", root, "-p", tip], input=msg).stdout.strip().decode()

    def _read_trees(self, tip: str, dirs: list[str]) -> dict[str, bytes]:
        """Raw tree objects of ``dirs`` at ``tip`` (missing or non-tree: absent), one cat-file."""
        names = [f"{tip}^{{tree}}" if d == "" else f"{tip}:{d}" for d in dirs]
        out = self.g._run(["cat-file", "--batch"], input=enc("\n".join(names) + "\n")).stdout
        res: dict[str, bytes] = {}
        pos = 0
        for d in dirs:
            nl = out.index(b"\n", pos)
            fields = out[pos:nl].split()
            pos = nl + 1
            if len(fields) == 3 and fields[1] in (b"tree", b"blob", b"commit"):
                size = int(fields[2])
                if fields[1] == b"tree":
                    res[d] = out[pos : pos + size]
                pos += size + 1
        return res

    def _build(self, tip, changes, blobs, modes, msg: bytes, index: Path) -> str:
        """The commit = tip's tree + changes (temporary index; no checkout touched)."""
        env = {"GIT_INDEX_FILE": str(index)}
        if index.exists():
            index.unlink()
        read_job = self.g._spawn(["read-tree", tip], env)
        ls_job = None
        if changes:
            ls_job = self.g._spawn(["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", tip, "--", *changes])
        existing: dict[str, str] = {}
        if ls_job:
            for rec in self.g._finish(ls_job).split(b"\0"):
                if rec:
                    meta, _, name = rec.partition(b"\t")
                    existing[dec(name)] = dec(meta.split()[0])
        self.g._finish(read_job)
        null = "0" * len(tip)
        entries = []
        for p, v in changes.items():
            if v is None:
                for name in existing:
                    if name == p or name.startswith(p + "/"):
                        entries.append(f"0 {null}\t{name}")
                entries.append(f"0 {null}\t{p}")
            else:
                mode = modes.get(p) or existing.get(p, "100644")
                if mode not in MODES:  # a gitlink or directory replaced by a file
                    mode = "100644"
                entries.append(f"{mode} {blobs[p]}\t{p}")
        if entries:
            self.g._run(
                ["update-index", "--add", "--replace", "-z", "--index-info"], input=enc("\0".join(entries) + "\0"), env=env
            )
        tree = self.g._run(["write-tree"], env=env).stdout.strip().decode()
        return self.g._run(["commit-tree", "--no-gpg-sign", tree, "-p", tip], input=msg).stdout.strip().decode()
