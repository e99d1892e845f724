"""The one way gitops-agent runs git.

Every git command names its repository explicitly (``--git-dir``; git never discovers one from a
working directory, so a ``.git`` entry someone else wrote is never picked up), and runs with:

* ``-c core.fsmonitor=false -c core.hooksPath=/dev/null``: no fsmonitor, no hook (push's
  pre-push, update-ref's reference-transaction, checkout's post-checkout) ever runs;
* ``-c core.attributesFile=/dev/null`` and ``GIT_ATTR_NOSYSTEM=1``: no attribute file outside the
  repository; blobs are hashed and read ``--no-filters``, so no filter or textconv driver runs;
* ``GIT_CONFIG_NOSYSTEM=1`` and ``GIT_CONFIG_GLOBAL=/dev/null``: only the repository's own config
  (the agent's clone, or the user's repository in local mode) -- except for network commands in
  local mode, which keep the user's global config for their credential helpers and URL rewrites;
* an environment built from an allow-list (PATH, locale, identity, the auth variables of network
  commands): no API key, token or other secret of the agent's process reaches git or anything
  git could start.

gitops-agent never runs git over a directory the model's code wrote: a step's working tree is a
plain directory exported from the object store and read back in Python (``gitops_agent.git.checkout``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterable

from gitops_agent.core.errors import AgentError, GitError
from gitops_agent.git.names import HEX, PLAIN_REV, SPECIAL_REFS, dec

# Settings given on every command line; they beat anything in a config file.
SAFE_CONFIG: tuple[str, ...] = (
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.attributesFile=/dev/null",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "advice.detachedHead=false",
)

SANE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a network command in local mode may take from the user's environment: how to reach the
# remote (ssh agent, proxies, certificates) -- never a model provider's key.
_LOCAL_NETWORK_ENV = (
    "HOME",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ALL_PROXY",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "XDG_CONFIG_HOME",
    "USER",
    "LOGNAME",
)


def git_env(name: str, email: str, *, extra: dict[str, str] | None = None, user_config: bool = False) -> dict[str, str]:
    """The environment of a git command, from an allow-list. ``user_config``: keep the user's
    global git config and what reaching a remote needs (local-mode network commands)."""
    env = {
        "PATH": os.environ.get("PATH") or SANE_PATH,
        "LC_ALL": "C",
        "LANGUAGE": "C",
        "TZ": "UTC",
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "HOME": "/nonexistent",
    }
    if os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]
    if user_config:
        del env["GIT_CONFIG_GLOBAL"]
        env.update({k: os.environ[k] for k in _LOCAL_NETWORK_ENV if os.environ.get(k)})
    env.update(extra or {})
    return env


class GitRunner:
    """A repository's git dir and the commands run on it (the base of ``GitRepo``)."""

    def __init__(
        self,
        repo: Path | str,
        remote: str | None = None,
        *,
        author_name: str = "gitops-agent",
        author_email: str = "gitops-agent@localhost",
        push_retries: int = 8,
        auth_env: dict[str, str] | None = None,
        mirror_local: bool = False,
    ):
        self.repo = Path(repo)
        self.remote = remote
        # remote mode from a user's own repository (`run --push`): every agent/* branch pushed
        # is also kept as a local branch, so local commands find it
        self.mirror_local = mirror_local
        self.author_name = author_name
        self.author_email = author_email
        self.push_retries = push_retries
        self.auth_env = dict(auth_env or {})
        self._git_dir: Path | None = None
        self._common_dir: Path | None = None
        self._env = git_env(author_name, author_email)
        # GitHub mode: auth travels in GIT_CONFIG_* variables (auth_env); local mode: the user's
        # own credential helpers and ssh setup
        self._net_env = git_env(author_name, author_email, extra=self.auth_env, user_config=not self.auth_env)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.repo)!r}, remote={self.remote!r})"

    # -------------------------------------------------------------- where the repository is

    @property
    def git_dir(self) -> Path:
        """The repository's own git dir, found once: ``repo`` itself when it is one (bare, or a
        git dir), else ``repo/.git`` (a directory, or a gitfile naming one)."""
        if self._git_dir is None:
            self._git_dir = find_git_dir(self.repo)
        return self._git_dir

    @property
    def common_dir(self) -> Path:
        """The repository's git common dir (shared by all its worktrees)."""
        if self._common_dir is None:
            link = self.git_dir / "commondir"  # a linked worktree's git dir names the main one
            target = Path(link.read_text().strip()) if link.is_file() else Path(".")
            self._common_dir = (target if target.is_absolute() else self.git_dir / target).resolve()
        return self._common_dir

    def is_shallow(self) -> bool:
        return (self.common_dir / "shallow").exists()

    # -------------------------------------------------------------- running git

    def _envfor(self, env: dict | None, network: bool) -> dict[str, str]:
        base = self._net_env if network else self._env
        return {**base, **env} if env else base

    def argv(self, args: Iterable[str], *, git_dir: Path | None = None) -> list[str]:
        return ["git", f"--git-dir={git_dir or self.git_dir}", *SAFE_CONFIG, *args]

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
        cmd = self.argv(args) if cwd is None else ["git", *SAFE_CONFIG, *args]
        p = subprocess.run(
            cmd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=self._envfor(env, network),
            cwd=str(cwd) if cwd is not None else None,
        )
        if check and p.returncode != 0:
            raise GitError(list(args), p.returncode, dec(p.stderr))
        return p

    def git(
        self, *args: str, input: bytes | None = None, env: dict | None = None, check: bool = True, network: bool = False
    ) -> str:
        """Run git on this repository and return its stdout. Raises ``GitError`` on failure
        (unless ``check=False``). ``network=True`` adds ``auth_env`` to the environment."""
        return dec(self._run(args, input=input, env=env, check=check, network=network).stdout)

    def _spawn(
        self, args: list[str], env: dict | None = None, stdin_path: Path | None = None, stdin: int | None = None
    ) -> tuple[list[str], subprocess.Popen]:
        src = open(stdin_path, "rb") if stdin_path is not None else (subprocess.PIPE if stdin is None else stdin)
        try:
            p = subprocess.Popen(
                self.argv(args), stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._envfor(env, False)
            )
        finally:
            if stdin_path is not None:
                src.close()  # the child has its own copy
        return args, p

    @staticmethod
    def _finish(job: tuple[list[str], subprocess.Popen], input: bytes | None = None) -> bytes:
        args, p = job
        out, err = p.communicate(input)
        if p.returncode != 0:
            raise GitError(args, p.returncode, dec(err))
        return out

    # -------------------------------------------------------------- refs

    def _rev(self, ref: str) -> str:
        """What git should read for ``ref``: in remote mode a plain branch name means the
        remote-tracking ref."""
        if not isinstance(ref, str) or not ref or ref.startswith("-") or "\n" in ref:
            raise AgentError(f"bad ref {ref!r}")
        if self.remote and ref not in SPECIAL_REFS and not HEX.fullmatch(ref):
            m = PLAIN_REV.fullmatch(ref)
            if m and not ref.startswith("refs/"):
                return f"refs/remotes/{self.remote}/{m.group(1)}{m.group(2)}"
        return ref

    def _resolve(self, ref: str) -> str:
        """The commit id ``ref`` names (GitError if none)."""
        if HEX.fullmatch(ref):
            return ref
        return self.git("rev-parse", "--verify", "--quiet", self._rev(ref) + "^{commit}").strip() or self._missing(ref)

    def _missing(self, ref: str):
        raise GitError(["rev-parse", ref], 128, f"unknown revision {ref!r}")

    def _tracking(self, branch: str) -> str:
        return f"refs/remotes/{self.remote}/{branch}"

    def _local_sha(self, ref: str) -> str | None:
        p = self._run(["rev-parse", "--verify", "--quiet", ref + "^{commit}"], check=False)
        return dec(p.stdout).strip() or None

    @property
    def _sha1(self) -> bool:
        """Whether trees can be hashed here (SHA-1 repositories; SHA-256 ones use the index)."""
        v = getattr(self, "_sha1_cache", None)
        if v is None:
            fmt = self._run(["rev-parse", "--show-object-format"], check=False).stdout.strip()
            v = fmt in (b"", b"sha1")
            self._sha1_cache = v
        return v


def find_git_dir(path: Path) -> Path:
    """The git dir of the repository at ``path`` (its top level or a git dir itself), read from
    the file system: ``path/.git`` (a directory, or a ``gitdir:`` file), or ``path`` when it is a
    git dir. No git command runs and no parent directory is searched."""
    path = Path(path).resolve()
    dotgit = path / ".git"
    if dotgit.is_dir() and not dotgit.is_symlink():
        return dotgit
    if dotgit.is_file() and not dotgit.is_symlink():
        text = dotgit.read_text(errors="replace").strip()
        if text.startswith("gitdir:"):
            target = Path(text[len("gitdir:") :].strip())
            target = (target if target.is_absolute() else path / target).resolve()
            if (target / "HEAD").exists():
                return target
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path
    raise AgentError(f"{path} is not a Git repository (no .git here)")


def run_git(
    args: list[str], *, git_dir: Path | None = None, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess:
    """A one-off git command outside a GitRepo (making a repository), the same safe way."""
    cmd = ["git", *([f"--git-dir={git_dir}"] if git_dir is not None else []), *SAFE_CONFIG, *args]
    p = subprocess.run(
        cmd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=git_env("gitops-agent", "gitops-agent@localhost"),
    )
    if check and p.returncode != 0:
        raise GitError(list(args), p.returncode, dec(p.stderr))
    return p
