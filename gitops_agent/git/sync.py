"""Branches on a remote: fetch exactly one branch, push (never forced), create a branch with a
lease on its absence, publish a commit by compare-and-swap (local) or push (remote), clone."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from gitops_agent.core.errors import AgentError, GitError
from gitops_agent.git.locks import named_lock
from gitops_agent.git.messages import format_message
from gitops_agent.git.names import HEX, check_branch, dec, enc

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.git.repo import GitRepo


class Sync:
    """Part of ``GitRepo``: branches, fetch and push. It reaches the repository's runner and the other
    parts through ``self.g``, the GitRepo it belongs to."""

    def __init__(self, g: "GitRepo") -> None:
        self.g = g

    def _fetch(self, branch: str) -> str | None:
        """Fetch exactly ``branch`` from the remote into its tracking ref; its sha or None."""
        assert self.g.remote
        tracking = self.g._tracking(branch)
        args = [
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-auto-maintenance",
            "--no-recurse-submodules",
            "--no-show-forced-updates",
        ]
        if self.g.is_shallow():
            args.append("--depth=1")
        args += [self.g.remote, f"+refs/heads/{branch}:{tracking}"]
        with named_lock("fetch", str(self.g.common_dir)):
            for attempt in range(6):
                p = self.g._run(args, check=False, network=True)
                if p.returncode == 0:
                    return self.g._local_sha(tracking)
                err = dec(p.stderr)
                if "couldn't find remote ref" in err or "could not find remote ref" in err:
                    self.g._run(["update-ref", "-d", tracking], check=False)
                    return None
                if ".lock" in err and attempt < 5:  # another process fetching into this clone
                    time.sleep(0.02 * (attempt + 1) * random.uniform(0.5, 1.5))
                    continue
                raise GitError(args, p.returncode, err)
        return None  # pragma: no cover

    def fetch_branches(self, prefix: str) -> dict[str, str]:
        """Remote mode: the tips of every branch under ``prefix`` (e.g. ``agent/task/``) in one
        fetch (``--depth=1`` in a shallow clone; tracking refs of branches gone from the remote
        are pruned). {branch: sha}. Local mode: the local branches under ``prefix``."""
        check_branch(prefix.rstrip("/") + "/x")
        if self.g.remote:
            dest = self.g._tracking(prefix)
            args = ["fetch", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head", "--no-auto-maintenance"]
            args += ["--no-recurse-submodules", "--no-show-forced-updates"]
            if self.g.is_shallow():
                args.append("--depth=1")
            with named_lock("fetch", str(self.g.common_dir)):
                self.g.git(*args, self.g.remote, f"+refs/heads/{prefix}*:{dest}*", network=True)
        else:
            dest = f"refs/heads/{prefix}"
        out = self.g.git("for-each-ref", "--format=%(objectname) %(refname)", dest)
        tips = {}
        for line in out.splitlines():
            sha, _, ref = line.partition(" ")
            tips[prefix + ref[len(dest) :]] = sha
        return tips

    def fetch_deeper(self, branch: str, depth: int) -> None:
        """Remote mode: fetch ``branch`` with ``depth`` commits of history from its tip
        (only that branch's history gets deeper, unlike ``--deepen``)."""
        if not self.g.remote:
            return
        with named_lock("fetch", str(self.g.common_dir)):
            self.g.git(
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-auto-maintenance",
                "--no-recurse-submodules",
                f"--depth={int(depth)}",
                self.g.remote,
                f"+refs/heads/{branch}:{self.g._tracking(branch)}",
                network=True,
            )

    def fetch_commit(self, sha: str) -> bool:
        """Remote mode: make sure commit ``sha`` is here (one shallow fetch by id if it is not);
        False if the remote does not have it."""
        if not HEX.fullmatch(sha or ""):
            raise AgentError(f"bad commit id {sha!r}")
        if self.g._local_sha(sha) is not None or not self.g.remote:
            return self.g._local_sha(sha) is not None
        with named_lock("fetch", str(self.g.common_dir)):
            p = self.g._run(
                [
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    "--no-auto-maintenance",
                    "--no-recurse-submodules",
                    "--depth=1",
                    self.g.remote,
                    sha,
                ],
                check=False,
                network=True,
            )
        return p.returncode == 0 and self.g._local_sha(sha) is not None

    def tip(self, branch: str, fetch: bool = True) -> str | None:
        """The commit ``branch`` points at, or None if there is no such branch. Remote mode
        with ``fetch``: fetches that one branch first (``--depth=1`` in a shallow clone)."""
        check_branch(branch)
        if self.g.remote is None:
            return self.g._local_sha(f"refs/heads/{branch}")
        if fetch:
            return self._fetch(branch)
        return self.g._local_sha(self.g._tracking(branch))

    def create_branch(self, branch: str, base_ref: str | None, trailers: dict[str, str] | None = None) -> str:
        """Create ``branch`` at ``base_ref`` (a root commit with an empty tree if None); fails
        with AgentError if the branch exists. Returns the branch's sha."""
        check_branch(branch)
        if base_ref is None:
            empty = self.g.git("hash-object", "-t", "tree", "-w", "--stdin", input=b"").strip()
            sha = self.g.git(
                "commit-tree",
                "--no-gpg-sign",
                empty,
                input=enc(format_message(f"agent: create {branch}", trailers or {"Agent-Role": "create"})),
            ).strip()
        else:
            sha = self.g._resolve(base_ref)
        if self.g.remote is None:
            p = self.g._run(
                ["update-ref", "-m", f"gitops-agent: create {branch}", f"refs/heads/{branch}", sha, "0" * len(sha)], check=False
            )
            if p.returncode != 0:
                err = dec(p.stderr)
                if "exists" in err or "expected" in err:
                    raise AgentError(f"branch {branch!r} already exists")
                raise GitError(["update-ref", f"refs/heads/{branch}"], p.returncode, err)
            return sha
        ok, reason = self._push(sha, branch, lease_absent=True)
        if ok and reason != "*":  # "=": the remote branch already points there
            raise AgentError(f"branch {branch!r} already exists on {self.g.remote}")
        if not ok:
            if any(s in reason for s in ("stale info", "already exists", "fetch first", "non-fast-forward")):
                raise AgentError(f"branch {branch!r} already exists on {self.g.remote}")
            raise GitError(["push", self.g.remote, f"{sha}:refs/heads/{branch}"], 1, reason)
        self.g._run(["update-ref", self.g._tracking(branch), sha], check=False)
        self._mirror(branch, sha)
        return sha

    def _mirror(self, branch: str, sha: str) -> None:
        """With ``mirror_local``: move the local agent/* branch to ``sha`` when that is a
        fast-forward (a local branch that went its own way is left alone)."""
        if not self.g.mirror_local or not branch.startswith("agent/"):
            return
        ref = f"refs/heads/{branch}"
        old = self.g._local_sha(ref)
        if old == sha:
            return
        if old is None or self.g._run(["merge-base", "--is-ancestor", old, sha], check=False).returncode == 0:
            self.g._run(["update-ref", "-m", "gitops-agent: mirror", ref, sha, old or "0" * len(sha)], check=False)

    def share_branch(self, branch: str) -> str:
        """Remote mode, before a run: make the remote's ``branch`` include the local one, so a
        run never starts a second history of a branch that exists here (agent/memory,
        agent/brain). Returns what happened: "same", "pushed", "pulled", "absent", "diverged"."""
        local = self.g._local_sha(f"refs/heads/{branch}")
        remote = self.tip(branch)
        if local is None:
            if remote is not None:
                self._mirror(branch, remote)
                return "pulled"
            return "absent"
        if remote == local:
            return "same"
        if remote is not None and self.g._run(["merge-base", "--is-ancestor", local, remote], check=False).returncode == 0:
            self._mirror(branch, remote)
            return "pulled"
        if remote is None or self.g._run(["merge-base", "--is-ancestor", remote, local], check=False).returncode == 0:
            ok, reason = self._push(local, branch, lease_absent=remote is None)
            if ok:
                self.g._run(["update-ref", self.g._tracking(branch), local], check=False)
                return "pushed"
        return "diverged"

    def _push(self, sha: str, branch: str, lease_absent: bool = False) -> tuple[bool, str]:
        """Push ``sha`` to refs/heads/<branch> (never forced). (True, porcelain flag: "*" new
        ref, " " fast-forward, "=" up to date) or (False, reason) when the remote rejected it;
        GitError for anything else (network, auth)."""
        dst = f"refs/heads/{branch}"
        args = ["push", "--porcelain", "--no-verify", "--no-recurse-submodules"]
        if lease_absent:
            args.append(f"--force-with-lease={dst}:")
        args += [self.g.remote, f"{sha}:{dst}"]
        p = self.g._run(args, check=False, network=True)
        out = dec(p.stdout)
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1].endswith(":" + dst):
                if parts[0] == "!":
                    return False, parts[2] + " " + dec(p.stderr)
                if p.returncode == 0:
                    return True, parts[0]
        if p.returncode == 0:
            return True, "?"
        raise GitError(args, p.returncode, dec(p.stderr) + out)

    def _publish(self, branch: str, new: str, old: str) -> tuple[bool, str | None]:
        """(True, None) if the branch now points at ``new``; (False, tip-or-None) if we lost."""
        if self.g.remote is None:
            ref = f"refs/heads/{branch}"
            p = self.g._run(["update-ref", "-m", "gitops-agent: commit", ref, new, old], check=False)
            if p.returncode == 0:
                return True, None
            err = dec(p.stderr)
            now = self.g._local_sha(ref)
            if now != old or "lock" in err:
                return False, now
            raise GitError(["update-ref", ref, new, old], p.returncode, err)
        ok, reason = self._push(new, branch)
        if ok:
            self.g._run(["update-ref", self.g._tracking(branch), new], check=False)
            self._mirror(branch, new)
            return True, None
        now = self._fetch(branch)
        if now != old or "lock" in reason or "failed to update ref" in reason:
            return False, now
        raise GitError(["push", self.g.remote, f"{new}:refs/heads/{branch}"], 1, reason)
