"""Git as the whole state: the one place that runs git.

``GitRepo`` implements the ``GitStore`` seam with plumbing only. It never touches a checkout,
the repository's own index or HEAD: commits are built in a temporary index file
(``GIT_INDEX_FILE``) and published with a compare-and-swap (``git update-ref <ref> <new> <old>``)
in local mode, or a plain, never forced ``git push`` in remote mode. A lost race re-reads the
tip, checks that nobody else changed the same paths since ``base`` and re-applies the same
change on the new tip (bounded, jittered back-off).

Two modes:

* local (``remote=None``): the branches are refs in ``repo`` (the user's own repository).
* remote (``remote="origin"``): ``repo`` is a job's (usually shallow) clone; branches live on the
  remote. A plain branch name given to a read (``read_file``, ``list_files``, ``log``,
  ``worktree``, ``create_branch``'s base) means the remote-tracking ref
  ``refs/remotes/<remote>/<name>``, i.e. the remote as of the last ``tip()`` or commit. Full
  ref names (``refs/...``), object ids and ``HEAD`` are used as given.

Identity always comes from ``author_name``/``author_email`` through the environment, never from
the user's config. Credentials only ever travel in the environment of network commands
(``auth_env``), so no token is written to ``.git/config``.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from agent.core.errors import AgentError, GitError, PolicyViolation, PushConflict, PushRetriesExhausted

__all__ = ["Commit", "GitRepo", "format_message", "parse_trailers"]

# Environment variables that would point git at another repository, index or object store.
_REDIRECT_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
)

_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_TRAILER_LINE = re.compile(r"([A-Za-z0-9-]+)[ \t]*:[ \t]*(.*)")
# a branch name as we accept it (stricter than git check-ref-format)
_BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")
# plain branch name with an optional ~n / ^n suffix (remote mode maps it to the tracking ref)
_PLAIN_REV = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._/-]*)((?:[~^][0-9]*)*)")
_WORKTREE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_SPECIAL_REFS = {"HEAD", "FETCH_HEAD", "ORIG_HEAD", "MERGE_HEAD", "CHERRY_PICK_HEAD"}
_MODES = {"100644", "100755", "120000"}

# Process-wide locks, keyed by repository (git common dir) and branch.
_locks_guard = threading.Lock()
_locks: dict[tuple, threading.Lock] = {}


def _named_lock(*key: object) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.Lock()
        return lock


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    body: str
    trailers: dict[str, str] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def format_message(subject: str, trailers: dict[str, str], body: str = "") -> str:
    """``subject``, blank line, optional ``body``, blank line, ``Key: value`` trailer lines.

    The result is what ``git interpret-trailers --parse`` reads back as ``trailers``. Newlines in
    the subject or in trailer values are folded into single spaces; keys must be trailer tokens
    (letters, digits, '-')."""
    subject = _one_line(subject)
    if not subject:
        raise ValueError("commit subject is empty")
    parts = [subject]
    body = (body or "").strip("\n")
    if body.strip():
        parts.append("\n".join(line.rstrip() for line in body.splitlines()))
    if trailers:
        lines = []
        for key, value in trailers.items():
            if not _TRAILER_KEY.fullmatch(key):
                raise ValueError(f"bad trailer key {key!r}: use letters, digits and '-'")
            lines.append(f"{key}: {_one_line(value)}".rstrip())
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _paragraphs(message: str) -> list[list[str]]:
    paras: list[list[str]] = []
    cur: list[str] = []
    for line in message.replace("\r\n", "\n").split("\n"):
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return paras


def _trailer_block(lines: list[str]) -> dict[str, str] | None:
    """The trailers of a paragraph if every line is a trailer (or a continuation), else None."""
    out: dict[str, str] = {}
    last: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if last is None:
                return None
            out[last] = (out[last] + " " + line.strip()).strip()
            continue
        m = _TRAILER_LINE.fullmatch(line)
        if not m:
            return None
        last = m.group(1)
        out[last] = m.group(2).strip()
    return out


def parse_trailers(message: str) -> dict[str, str]:
    """Trailers of a commit message: the last paragraph (never the subject) if all of its lines
    are ``Key: value`` (continuation lines are unfolded). A repeated key keeps its last value."""
    paras = _paragraphs(message)
    if len(paras) < 2:
        return {}
    return _trailer_block(paras[-1]) or {}


def _split_message(message: str) -> tuple[str, str, dict[str, str]]:
    paras = _paragraphs(message)
    if not paras:
        return "", "", {}
    subject = " ".join(line.strip() for line in paras[0])
    rest = paras[1:]
    trailers: dict[str, str] = {}
    if rest:
        block = _trailer_block(rest[-1])
        if block is not None:
            trailers = block
            rest = rest[:-1]
    body = "\n\n".join("\n".join(p) for p in rest)
    return subject, body, trailers


# ----------------------------------------------------------------------------- paths


def _check_path(path: str, what: str = "path") -> str:
    if not isinstance(path, str) or not path:
        raise PolicyViolation(f"bad {what} {path!r}: empty")
    if "\n" in path or "\0" in path or "\r" in path:
        raise PolicyViolation(f"bad {what} {path!r}: control characters")
    if path.startswith("/") or path.endswith("/"):
        raise PolicyViolation(f"bad {what} {path!r}: must be relative to the repository root")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise PolicyViolation(f"bad {what} {path!r}: empty, '.' or '..' component")
        if part.lower() == ".git":
            raise PolicyViolation(f"bad {what} {path!r}: '.git' component")
    return path


def _check_branch(branch: str) -> str:
    if (
        not isinstance(branch, str)
        or not _BRANCH.fullmatch(branch)
        or ".." in branch
        or "//" in branch
        or branch.endswith(("/", ".", ".lock"))
        or "/." in branch
        or branch in _SPECIAL_REFS
        or branch.startswith("refs/")
    ):
        raise AgentError(f"bad branch name {branch!r}")
    return branch


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


# ----------------------------------------------------------------------------- the store


def _parse_tree(data: bytes | None) -> dict[bytes, tuple[bytes, bytes]]:
    """{name: (mode, 20-byte id)} of a raw SHA-1 tree object."""
    out: dict[bytes, tuple[bytes, bytes]] = {}
    pos = 0
    while data and pos < len(data):
        sp = data.index(b" ", pos)
        nul = data.index(b"\0", sp)
        out[data[sp + 1:nul]] = (data[pos:sp], data[nul + 1:nul + 21])
        pos = nul + 21
    return out


def _tree_bytes(entries: dict[bytes, tuple[bytes, bytes]]) -> bytes:
    """A raw tree object, entries in git's order (a directory sorts as if its name ended in /)."""
    key = lambda item: item[0] + (b"/" if item[1][0] == b"40000" else b"")  # noqa: E731
    return b"".join(mode + b" " + name + b"\0" + oid for name, (mode, oid) in sorted(entries.items(), key=key))


class GitRepo:
    """A repository used as the agent's store (implements ``agent.seams.GitStore``)."""

    #: serialise commit_files on the same branch between threads of this process (the
    #: compare-and-swap still guards against other processes); tests turn it off to race.
    serialize_threads: bool = True
    #: applied to every file content a commit writes, (path, bytes) -> bytes; the Runtime sets
    #: it to policy.redact_for_commit so no secret the process knows is ever committed
    redact: "Callable[[str, bytes], bytes] | None" = None

    def __init__(
        self,
        repo: Path | str,
        remote: str | None = None,
        *,
        author_name: str = "gitops-agent",
        author_email: str = "gitops-agent@localhost",
        push_retries: int = 8,
        auth_env: dict[str, str] | None = None,
    ):
        self.repo = Path(repo)
        self.remote = remote
        self.author_name = author_name
        self.author_email = author_email
        self.push_retries = push_retries
        self.auth_env = dict(auth_env or {})
        self._common_dir: Path | None = None
        self._env = self._base_env(author_name, author_email)
        self._net_env = {**self._env, **self.auth_env}

    def __repr__(self) -> str:
        return f"GitRepo({str(self.repo)!r}, remote={self.remote!r})"

    # -------------------------------------------------------------- running git

    @staticmethod
    def _base_env(name: str, email: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _REDIRECT_ENV}
        env.update(
            GIT_AUTHOR_NAME=name,
            GIT_AUTHOR_EMAIL=email,
            GIT_COMMITTER_NAME=name,
            GIT_COMMITTER_EMAIL=email,
            GIT_TERMINAL_PROMPT="0",
            GIT_NO_REPLACE_OBJECTS="1",
            LC_ALL="C",
            LANGUAGE="C",
        )
        return env

    def _envfor(self, env: dict | None, network: bool) -> dict[str, str]:
        base = self._net_env if network else self._env
        return {**base, **env} if env else base

    def _run(
        self,
        args: list[str] | tuple[str, ...],
        *,
        input: bytes | None = None,
        env: dict | None = None,
        check: bool = True,
        network: bool = False,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess:
        cmd = ["git", "-C", str(cwd or self.repo), *args]
        p = subprocess.run(
            cmd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self._envfor(env, network),
        )
        if check and p.returncode != 0:
            raise GitError(list(args), p.returncode, _dec(p.stderr))
        return p

    def git(
        self,
        *args: str,
        input: bytes | None = None,
        env: dict | None = None,
        check: bool = True,
        network: bool = False,
    ) -> str:
        """Run ``git -C repo <args>`` and return its stdout. Raises ``GitError`` on failure
        (unless ``check=False``). ``network=True`` adds ``auth_env`` to the environment."""
        return _dec(self._run(args, input=input, env=env, check=check, network=network).stdout)

    def _spawn(self, args: list[str], env: dict | None = None, stdin_path: Path | None = None) -> tuple[list[str], subprocess.Popen]:
        stdin = open(stdin_path, "rb") if stdin_path is not None else subprocess.PIPE
        try:
            p = subprocess.Popen(
                ["git", "-C", str(self.repo), *args],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._envfor(env, False),
            )
        finally:
            if stdin_path is not None:
                stdin.close()  # the child has its own copy
        return args, p

    @staticmethod
    def _finish(job: tuple[list[str], subprocess.Popen], input: bytes | None = None) -> bytes:
        args, p = job
        out, err = p.communicate(input)
        if p.returncode != 0:
            raise GitError(args, p.returncode, _dec(err))
        return out

    # -------------------------------------------------------------- repository facts

    @property
    def common_dir(self) -> Path:
        """The repository's git common dir (shared by all its worktrees)."""
        if self._common_dir is None:
            out = self.git("rev-parse", "--git-common-dir").strip()
            p = Path(out)
            self._common_dir = (p if p.is_absolute() else self.repo / p).resolve()
        return self._common_dir

    def is_shallow(self) -> bool:
        return (self.common_dir / "shallow").exists()

    def _rev(self, ref: str) -> str:
        """What git should read for ``ref``: in remote mode a plain branch name means the
        remote-tracking ref."""
        if not isinstance(ref, str) or not ref or ref.startswith("-") or "\n" in ref:
            raise AgentError(f"bad ref {ref!r}")
        if self.remote and ref not in _SPECIAL_REFS and not _HEX.fullmatch(ref):
            m = _PLAIN_REV.fullmatch(ref)
            if m and not ref.startswith("refs/"):
                return f"refs/remotes/{self.remote}/{m.group(1)}{m.group(2)}"
        return ref

    def _resolve(self, ref: str) -> str:
        """The commit id ``ref`` names (GitError if none)."""
        if _HEX.fullmatch(ref):
            return ref
        return self.git("rev-parse", "--verify", "--quiet", self._rev(ref) + "^{commit}").strip() or self._missing(ref)

    def _missing(self, ref: str):
        raise GitError(["rev-parse", ref], 128, f"unknown revision {ref!r}")

    def _tracking(self, branch: str) -> str:
        return f"refs/remotes/{self.remote}/{branch}"

    def _local_sha(self, ref: str) -> str | None:
        p = self._run(["rev-parse", "--verify", "--quiet", ref + "^{commit}"], check=False)
        return _dec(p.stdout).strip() or None

    # -------------------------------------------------------------- branches

    def _fetch(self, branch: str) -> str | None:
        """Fetch exactly ``branch`` from the remote into its tracking ref; its sha or None."""
        assert self.remote
        tracking = self._tracking(branch)
        args = [
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
            "--no-recurse-submodules", "--no-show-forced-updates",
        ]
        if self.is_shallow():
            args.append("--depth=1")
        args += [self.remote, f"+refs/heads/{branch}:{tracking}"]
        with _named_lock("fetch", str(self.common_dir)):
            for attempt in range(6):
                p = self._run(args, check=False, network=True)
                if p.returncode == 0:
                    return self._local_sha(tracking)
                err = _dec(p.stderr)
                if "couldn't find remote ref" in err or "could not find remote ref" in err:
                    self._run(["update-ref", "-d", tracking], check=False)
                    return None
                if ".lock" in err and attempt < 5:  # another process fetching into this clone
                    time.sleep(0.02 * (attempt + 1) * random.uniform(0.5, 1.5))
                    continue
                raise GitError(args, p.returncode, err)
        return None  # pragma: no cover

    def fetch_deeper(self, branch: str, depth: int) -> None:
        """Remote mode: fetch ``branch`` with ``depth`` commits of history from its tip
        (only that branch's history gets deeper, unlike ``--deepen``)."""
        if not self.remote:
            return
        with _named_lock("fetch", str(self.common_dir)):
            self.git(
                "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance",
                "--no-recurse-submodules", f"--depth={int(depth)}",
                self.remote, f"+refs/heads/{branch}:{self._tracking(branch)}", network=True,
            )

    def tip(self, branch: str, fetch: bool = True) -> str | None:
        """The commit ``branch`` points at, or None if there is no such branch. Remote mode
        with ``fetch``: fetches that one branch first (``--depth=1`` in a shallow clone)."""
        _check_branch(branch)
        if self.remote is None:
            return self._local_sha(f"refs/heads/{branch}")
        if fetch:
            return self._fetch(branch)
        return self._local_sha(self._tracking(branch))

    def create_branch(self, branch: str, base_ref: str | None) -> str:
        """Create ``branch`` at ``base_ref`` (a root commit with an empty tree if None); fails
        with AgentError if the branch exists. Returns the branch's sha."""
        _check_branch(branch)
        if base_ref is None:
            empty = self.git("hash-object", "-t", "tree", "-w", "--stdin", input=b"").strip()
            sha = self.git(
                "commit-tree", "--no-gpg-sign", empty,
                input=_enc(format_message(f"agent: create {branch}", {})),
            ).strip()
        else:
            sha = self._resolve(base_ref)
        if self.remote is None:
            p = self._run(
                ["update-ref", "-m", f"gitops-agent: create {branch}", f"refs/heads/{branch}", sha, "0" * len(sha)],
                check=False,
            )
            if p.returncode != 0:
                err = _dec(p.stderr)
                if "exists" in err or "expected" in err:
                    raise AgentError(f"branch {branch!r} already exists")
                raise GitError(["update-ref", f"refs/heads/{branch}"], p.returncode, err)
            return sha
        ok, reason = self._push(sha, branch, lease_absent=True)
        if ok and reason != "*":  # "=": the remote branch already points there
            raise AgentError(f"branch {branch!r} already exists on {self.remote}")
        if not ok:
            if any(s in reason for s in ("stale info", "already exists", "fetch first", "non-fast-forward")):
                raise AgentError(f"branch {branch!r} already exists on {self.remote}")
            raise GitError(["push", self.remote, f"{sha}:refs/heads/{branch}"], 1, reason)
        self._run(["update-ref", self._tracking(branch), sha], check=False)
        return sha

    def _push(self, sha: str, branch: str, lease_absent: bool = False) -> tuple[bool, str]:
        """Push ``sha`` to refs/heads/<branch> (never forced). (True, porcelain flag: "*" new
        ref, " " fast-forward, "=" up to date) or (False, reason) when the remote rejected it;
        GitError for anything else (network, auth)."""
        dst = f"refs/heads/{branch}"
        args = ["push", "--porcelain", "--no-verify", "--no-recurse-submodules"]
        if lease_absent:
            args.append(f"--force-with-lease={dst}:")
        args += [self.remote, f"{sha}:{dst}"]
        p = self._run(args, check=False, network=True)
        out = _dec(p.stdout)
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].endswith(":" + dst):
                if parts[0] == "!":
                    return False, parts[2] + " " + _dec(p.stderr)
                if p.returncode == 0:
                    return True, parts[0]
        if p.returncode == 0:
            return True, "?"
        raise GitError(args, p.returncode, _dec(p.stderr) + out)

    def _checked_out(self, branch: str) -> bool:
        """Is refs/heads/<branch> the HEAD of one of the repository's worktrees?"""
        want = f"ref: refs/heads/{branch}"
        heads = [self.common_dir / "HEAD"]
        wt = self.common_dir / "worktrees"
        if wt.is_dir():
            heads += [d / "HEAD" for d in wt.iterdir()]
        for h in heads:
            try:
                if h.read_text().strip() == want:
                    return True
            except OSError:
                pass
        return False

    # -------------------------------------------------------------- reading

    def read_files(self, ref: str, paths: list[str]) -> dict[str, bytes | None]:
        """Contents of ``paths`` at ``ref`` (None for a missing path or a non-file), read with
        one ``git cat-file --batch`` from one consistent tree. GitError if ``ref`` is unknown."""
        paths = list(paths)
        for p in paths:
            _check_path(p)
        rev = self._rev(ref)
        args = ["cat-file", "--batch"]
        proc = subprocess.Popen(
            ["git", "-C", str(self.repo), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env,
        )
        out: dict[str, bytes | None] = {}
        try:
            def ask(name: str) -> tuple[str, str, bytes | None]:
                proc.stdin.write(_enc(name) + b"\n")
                proc.stdin.flush()
                header = proc.stdout.readline()
                if not header:
                    raise GitError(args, proc.poll() or 128, _dec(proc.stderr.read()))
                fields = header.split()
                if len(fields) != 3 or fields[-1] in (b"missing", b"ambiguous"):
                    return "", "missing", None
                size = int(fields[2])
                data = proc.stdout.read(size + 1)[:size]
                return _dec(fields[0]), _dec(fields[1]), data

            tree, kind, _ = ask(rev + "^{tree}")
            if kind != "tree":
                raise GitError(["cat-file", rev], 128, f"unknown revision {ref!r}")
            for p in paths:
                _, kind, data = ask(f"{tree}:{p}")
                out[p] = data if kind == "blob" else None
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.stdout.close()
            proc.stderr.close()
            proc.wait()
        return out

    def read_file(self, ref: str, path: str) -> bytes | None:
        """Content of ``path`` at ``ref`` without a checkout; None if missing."""
        return self.read_files(ref, [path])[path]

    def list_files(self, ref: str, prefix: str = "") -> list[str]:
        """All files (recursively) at ``ref`` whose path starts with ``prefix``, relative to the
        repository root, sorted."""
        if prefix:
            _check_path(prefix.rstrip("/"), "prefix")
        rev = self._rev(ref)
        args = ["--literal-pathspecs", "ls-tree", "-r", "-z", "--name-only", "--full-tree", rev + "^{tree}"]
        d = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if d:
            args += ["--", d]
        out = self._run(args).stdout
        names = [_dec(n) for n in out.split(b"\0") if n]
        return sorted(n for n in names if n.startswith(prefix))

    def list_blobs(self, ref: str, prefix: str = "") -> dict[str, str]:
        """{path: blob id} of the files at ``ref`` under ``prefix`` (one ls-tree)."""
        if prefix:
            _check_path(prefix.rstrip("/"), "prefix")
        rev = self._rev(ref)
        args = ["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", rev + "^{tree}"]
        d = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if d:
            args += ["--", d]
        out: dict[str, str] = {}
        for rec in self._run(args).stdout.split(b"\0"):
            if rec:
                meta, _, name = rec.partition(b"\t")
                parts = meta.split()
                n = _dec(name)
                if len(parts) == 3 and parts[1] == b"blob" and n.startswith(prefix):
                    out[n] = _dec(parts[2])
        return out

    def read_blobs(self, ids: list[str]) -> dict[str, bytes]:
        """Contents of blobs by id (one ``git cat-file --batch``)."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        p = self._run(["cat-file", "--batch"], input=_enc("\n".join(ids) + "\n"))
        data, out, pos = p.stdout, {}, 0
        for i in ids:
            nl = data.index(b"\n", pos)
            fields = data[pos:nl].split()
            pos = nl + 1
            if len(fields) != 3:
                continue
            size = int(fields[2])
            out[i] = data[pos:pos + size]
            pos += size + 1
        return out

    # -------------------------------------------------------------- writing

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
        _check_branch(branch)
        changes = dict(changes)
        if self.redact is not None:
            changes = {p: (self.redact(p, v) if v is not None else None) for p, v in changes.items()}
        for p in changes:
            _check_path(p)
        modes = dict(modes or {})
        for p, m in modes.items():
            if m not in _MODES:
                raise PolicyViolation(f"bad mode {m!r} for {p!r}: use one of {sorted(_MODES)}")
        subject, _, body = message.strip("\n").partition("\n\n")
        msg = _enc(format_message(subject, trailers, body))
        if self.remote is None and self._checked_out(branch):
            raise AgentError(
                f"branch {branch!r} is checked out in a worktree of {self.repo}; "
                "switch away from it so the agent can commit to it"
            )
        lock = _named_lock("commit", str(self.common_dir), self.remote, branch) if self.serialize_threads else None
        if lock:
            lock.acquire()
        try:
            with tempfile.TemporaryDirectory(prefix="gitops-agent-") as td:
                return self._commit_loop(branch, changes, msg, base, modes, Path(td))
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
            listing.write_bytes(_enc("\n".join(lines) + "\n"))
            hash_job = self._spawn(["hash-object", "-w", "--no-filters", "--stdin-paths"], stdin_path=listing)
        try:
            if self.remote is not None and base is not None:
                # the caller just fetched: push on top of what it saw; a rejection fetches
                tip = self._resolve(base)
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
                raise GitError(args, p.returncode, _dec(err))
            blobs = dict(zip(writes, _dec(out).split()))
        if tip is None:
            raise AgentError(f"branch {branch!r} does not exist (create it with create_branch)")
        base_sha = tip if base is None else self._resolve(base)
        index = td / "index"
        for attempt in range(self.push_retries + 1):
            if tip != base_sha:
                clash = self._changed_between(base_sha, tip, list(changes))
                if clash:
                    raise PushConflict(
                        f"{branch}: changed since {base_sha[:12]} by someone else: " + ", ".join(sorted(clash))
                    )
            new = self._build_trees(tip, changes, blobs, modes, msg, td) if self._sha1 else self._build(tip, changes, blobs, modes, msg, index)
            ok, newtip = self._publish(branch, new, tip)
            if ok:
                return new
            if attempt < self.push_retries:
                time.sleep(min(1.0, 0.02 * (2**attempt)) * random.uniform(0.5, 1.5))
                if newtip is None:
                    newtip = self._current_tip(branch)
                if newtip is None:
                    raise AgentError(f"branch {branch!r} was deleted while committing")
                tip = newtip
        raise PushRetriesExhausted(f"{branch}: lost the race {self.push_retries + 1} times; giving up")

    def _current_tip(self, branch: str) -> str | None:
        if self.remote is None:
            return self._local_sha(f"refs/heads/{branch}")
        return self._fetch(branch)

    def _changed_between(self, a: str, b: str, paths: list[str]) -> set[str]:
        """Which of ``paths`` (files, or directories: anything under them) differ a..b."""
        out = self._run(["diff-tree", "-r", "-z", "--name-only", "--no-renames", a, b]).stdout
        changed = {_dec(n) for n in out.split(b"\0") if n}
        hits = set()
        for p in paths:
            if p in changed or any(c.startswith(p + "/") for c in changed):
                hits.add(p)
        return hits

    @property
    def _sha1(self) -> bool:
        """Whether trees can be hashed here (SHA-1 repositories; SHA-256 ones use the index)."""
        v = getattr(self, "_sha1_cache", None)
        if v is None:
            fmt = self._run(["rev-parse", "--show-object-format"], check=False).stdout.strip()
            v = fmt in (b"", b"sha1")
            self._sha1_cache = v
        return v

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
            nb = _enc(name)
            if v is None:
                entries[d].pop(nb, None)
                continue
            old = entries[d].get(nb)
            mode = modes.get(p) or (_dec(old[0]) if old and _dec(old[0]) in _MODES else "100644")
            entries[d][nb] = (_enc(mode), bytes.fromhex(blobs[p]))
        # bottom-up: hash each changed tree, hang it into its parent (an empty one is dropped)
        objects: list[bytes] = []
        for d in sorted(order, key=lambda d: -(d.count("/") + 1) if d else 0):
            data = _tree_bytes(entries[d])
            tid = hashlib.sha1(b"tree %d\0" % len(data) + data).digest()
            if d:
                parent, _, name = d.rpartition("/")
                if entries[d]:
                    entries[parent][_enc(name)] = (b"40000", tid)
                    objects.append(data)
                else:
                    entries[parent].pop(_enc(name), None)
            else:
                objects.append(data)
                root = tid.hex()
        paths = []
        for i, data in enumerate(objects):
            f = td / f"tree{i}"
            f.write_bytes(data)
            paths.append(str(f))
        self._run(["hash-object", "-t", "tree", "-w", "--stdin-paths"], input=_enc("\n".join(paths) + "\n"))
        return self._run(["commit-tree", "--no-gpg-sign", root, "-p", tip], input=msg).stdout.strip().decode()

    def _read_trees(self, tip: str, dirs: list[str]) -> dict[str, bytes]:
        """Raw tree objects of ``dirs`` at ``tip`` (missing or non-tree: absent), one cat-file."""
        names = [f"{tip}^{{tree}}" if d == "" else f"{tip}:{d}" for d in dirs]
        out = self._run(["cat-file", "--batch"], input=_enc("\n".join(names) + "\n")).stdout
        res: dict[str, bytes] = {}
        pos = 0
        for d in dirs:
            nl = out.index(b"\n", pos)
            fields = out[pos:nl].split()
            pos = nl + 1
            if len(fields) == 3 and fields[1] in (b"tree", b"blob", b"commit"):
                size = int(fields[2])
                if fields[1] == b"tree":
                    res[d] = out[pos:pos + size]
                pos += size + 1
        return res

    def _build(self, tip, changes, blobs, modes, msg: bytes, index: Path) -> str:
        """The commit = tip's tree + changes (temporary index; no checkout touched)."""
        env = {"GIT_INDEX_FILE": str(index)}
        if index.exists():
            index.unlink()
        read_job = self._spawn(["read-tree", tip], env)
        ls_job = None
        if changes:
            ls_job = self._spawn(["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", tip, "--", *changes])
        existing: dict[str, str] = {}
        if ls_job:
            for rec in self._finish(ls_job).split(b"\0"):
                if rec:
                    meta, _, name = rec.partition(b"\t")
                    existing[_dec(name)] = _dec(meta.split()[0])
        self._finish(read_job)
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
                if mode not in _MODES:  # a gitlink or directory replaced by a file
                    mode = "100644"
                entries.append(f"{mode} {blobs[p]}\t{p}")
        if entries:
            self._run(
                ["update-index", "--add", "--replace", "-z", "--index-info"],
                input=_enc("\0".join(entries) + "\0"), env=env,
            )
        tree = self._run(["write-tree"], env=env).stdout.strip().decode()
        return self._run(["commit-tree", "--no-gpg-sign", tree, "-p", tip], input=msg).stdout.strip().decode()

    def _publish(self, branch: str, new: str, old: str) -> tuple[bool, str | None]:
        """(True, None) if the branch now points at ``new``; (False, tip-or-None) if we lost."""
        if self.remote is None:
            ref = f"refs/heads/{branch}"
            p = self._run(["update-ref", "-m", "gitops-agent: commit", ref, new, old], check=False)
            if p.returncode == 0:
                return True, None
            err = _dec(p.stderr)
            now = self._local_sha(ref)
            if now != old or "lock" in err:
                return False, now
            raise GitError(["update-ref", ref, new, old], p.returncode, err)
        ok, reason = self._push(new, branch)
        if ok:
            self._run(["update-ref", self._tracking(branch), new], check=False)
            return True, None
        now = self._fetch(branch)
        if now != old or "lock" in reason or "failed to update ref" in reason:
            return False, now
        raise GitError(["push", self.remote, f"{new}:refs/heads/{branch}"], 1, reason)

    # -------------------------------------------------------------- worktrees

    @contextmanager
    def worktree(self, ref: str, name: str, sparse: list[str] | None = None) -> Iterator[Path]:
        """A throwaway detached checkout of ``ref`` at
        ``<git-common-dir>/gitops-agent/worktrees/<name>``; removed on exit. A stale one with
        the same name (from a killed run) is removed first. ``sparse``: non-cone sparse-checkout
        patterns (e.g. ``["/*", "!/.agent/"]``) so the checkout does not grow with the task's
        history; set for this worktree only, the repository's config is not touched."""
        if not _WORKTREE_NAME.fullmatch(name or ""):
            raise AgentError(f"bad worktree name {name!r}")
        sha = self._resolve(ref)
        path = self.common_dir / "gitops-agent" / "worktrees" / name
        lock = _named_lock("worktree", str(self.common_dir))
        add = ["-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach", "--quiet"]
        if sparse:
            add.append("--no-checkout")
        add += [str(path), sha]
        with lock:
            if path.exists() or path.is_symlink():
                self._drop_worktree(path)
            p = self._run(add, check=False)
            if p.returncode != 0:  # e.g. registered but missing: prune and try once more
                self._drop_worktree(path)
                self._run(add)
        if sparse:
            gitdir = Path(self._run(["rev-parse", "--absolute-git-dir"], cwd=path).stdout.decode().strip())
            (gitdir / "info").mkdir(parents=True, exist_ok=True)
            (gitdir / "info" / "sparse-checkout").write_text("\n".join(sparse) + "\n")
            self._run(["-c", "core.sparseCheckout=true", "read-tree", "-mu", "HEAD"], cwd=path)
        try:
            yield path
        finally:
            with lock:
                self._drop_worktree(path)

    def _drop_worktree(self, path: Path) -> None:
        p = self._run(["worktree", "remove", "--force", "--force", str(path)], check=False)
        if p.returncode != 0 or path.exists():
            shutil.rmtree(path, ignore_errors=True)
            self._run(["worktree", "prune"], check=False)

    def changed_files(self, worktree: Path) -> dict[str, bytes | None]:
        """Every file that differs in ``worktree`` from its HEAD: modified, added and untracked
        (not ignored) files map to their bytes (a symlink to its target), deleted ones to None.
        Paths are relative to the worktree root."""
        worktree = Path(worktree)
        out = self._run(
            ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--ignore-submodules=all"],
            cwd=worktree,
            env={"GIT_OPTIONAL_LOCKS": "0"},
        ).stdout
        result: dict[str, bytes | None] = {}
        for rec in out.split(b"\0"):
            if len(rec) < 4:
                continue
            name = _dec(rec[3:])
            if name.endswith("/"):  # a nested repository
                continue
            full = worktree / name
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                result[name] = None
                continue
            if stat.S_ISLNK(st.st_mode):
                result[name] = os.fsencode(os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                result[name] = full.read_bytes()
        return result

    @staticmethod
    def file_modes(worktree: Path, paths: list[str]) -> dict[str, str]:
        """Git modes of files in a worktree (100755 executable, 120000 symlink, else 100644),
        to pass to ``commit_files(modes=...)``; missing paths are left out."""
        out = {}
        for p in paths:
            try:
                st = os.lstat(Path(worktree) / p)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                out[p] = "120000"
            elif stat.S_ISREG(st.st_mode):
                out[p] = "100755" if st.st_mode & stat.S_IXUSR else "100644"
        return out

    # -------------------------------------------------------------- history

    def log(
        self,
        ref: str,
        max_count: int | None = None,
        grep_trailer: tuple[str, str] | None = None,
    ) -> list[Commit]:
        """Commits reachable from ``ref``, newest first, with parsed trailers. ``grep_trailer``
        keeps those whose trailer ``key`` has exactly ``value``. In a shallow clone this is the
        history fetched so far (see ``find_commit`` for deepening)."""
        return self._log(ref, max_count, [grep_trailer] if grep_trailer else [])

    def _log(self, ref: str, max_count: int | None, wanted: list[tuple[str, str]]) -> list[Commit]:
        args = ["log", "-z", "--no-show-signature", "--format=%H%x00%P%x00%B"]
        if max_count is not None and not wanted:
            args.append(f"--max-count={int(max_count)}")
        if wanted:
            args += ["--fixed-strings", "--all-match"] + [f"--grep={k}: {_one_line(v)}" for k, v in wanted]
        args.append(self._rev(ref))
        out = self._run(args).stdout
        fields = out.split(b"\0")
        commits: list[Commit] = []
        for i in range(0, len(fields) - 2, 3):
            sha = _dec(fields[i]).strip()
            if not sha:
                continue
            subject, body, trailers = _split_message(_dec(fields[i + 2]))
            if any(trailers.get(k) != _one_line(v) for k, v in wanted):
                continue
            commits.append(Commit(sha, subject, body, trailers, _dec(fields[i + 1]).split()))
            if max_count is not None and len(commits) >= max_count:
                break
        return commits

    def find_commit(self, ref: str, trailers: dict[str, str]) -> Commit | None:
        """The newest commit on ``ref`` whose trailers include all of ``trailers``.

        Remote mode in a shallow clone: while it is not found and the oldest fetched commit
        still carries the same ``Agent-Task`` trailer (or, without one in ``trailers``, the
        first of ``trailers``), fetch deeper, so the whole task's history is searched but
        never the base's."""
        wanted = list(trailers.items())
        if not wanted:
            got = self._log(ref, 1, [])
            return got[0] if got else None
        rev = self._rev(ref)
        deep = self.remote and rev.startswith(f"refs/remotes/{self.remote}/") and self.is_shallow()
        if not deep:
            got = self._log(ref, 1, wanted)
            return got[0] if got else None
        branch = rev[len(f"refs/remotes/{self.remote}/"):]
        scope_k, scope_v = ("Agent-Task", trailers["Agent-Task"]) if "Agent-Task" in trailers else wanted[0]
        depth = 0
        for _ in range(12):
            history = self._log(ref, None, [])
            for c in history:
                if all(c.trailers.get(k) == _one_line(v) for k, v in wanted):
                    return c
            if not history:
                return None
            oldest = history[-1]
            shallow = set((self.common_dir / "shallow").read_text().split()) if self.is_shallow() else set()
            if oldest.sha not in shallow or oldest.trailers.get(scope_k) != _one_line(scope_v):
                return None
            depth = max(depth * 4, len(history) + 32)
            self.fetch_deeper(branch, depth)
        return None

    # -------------------------------------------------------------- cloning

    @classmethod
    def clone(
        cls,
        url: str,
        dest: Path | str,
        branch: str | None = None,
        *,
        depth: int | None = 1,
        auth_env: dict[str, str] | None = None,
        filter: str | None = None,
        checkout: bool = True,
        **kw,
    ) -> "GitRepo":
        """Shallow (``depth``) single-branch clone of ``url`` into ``dest``, as a remote-mode
        GitRepo with remote "origin". Credentials go in ``auth_env``, never in the URL."""
        parts = urlsplit(url)
        if parts.password:
            raise AgentError("the clone URL carries a password; pass credentials in auth_env instead")
        dest = Path(dest)
        args = ["clone", "--quiet", "--single-branch", "--no-tags"]
        if depth:
            args.append(f"--depth={int(depth)}")
        if branch:
            args += ["--branch", branch]
        if filter:
            args.append(f"--filter={filter}")
        if not checkout:
            args.append("--no-checkout")
        args += ["--", url, str(dest)]
        repo = cls(dest, remote="origin", auth_env=auth_env, **kw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        repo._run(args, network=True, cwd=dest.parent)
        return repo
