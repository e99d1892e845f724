"""Names git is given: branch names, paths inside a tree, refs, modes -- checked before use
(stricter than git's own rules, because they can come from outside input)."""

from __future__ import annotations

import re

from gitops_agent.core.errors import AgentError, PolicyViolation

HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# a branch name as we accept it (stricter than git check-ref-format)
BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}")
# plain branch name with an optional ~n / ^n suffix (remote mode maps it to the tracking ref)
PLAIN_REV = re.compile(r"([A-Za-z0-9_][A-Za-z0-9._/-]*)((?:[~^][0-9]*)*)")
CHECKOUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
SPECIAL_REFS = {"HEAD", "FETCH_HEAD", "ORIG_HEAD", "MERGE_HEAD", "CHERRY_PICK_HEAD"}
MODES = {"100644", "100755", "120000"}


def dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def path_problem(path: object) -> str | None:
    """Why ``path`` cannot be a path in a tree the agent commits, or None if it can."""
    if not isinstance(path, str) or not path:
        return "empty"
    if any(c in path for c in "\n\r\0"):
        return "control characters"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid UTF-8"
    if path.startswith("/") or path.endswith("/"):
        return "must be relative to the repository root"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return "empty, '.' or '..' component"
        if part.lower() == ".git":
            return "'.git' component"
    return None


def check_path(path: str, what: str = "path") -> str:
    problem = path_problem(path)
    if problem:
        raise PolicyViolation(f"bad {what} {path!r}: {problem}")
    return path


def check_branch(branch: str) -> str:
    if (
        not isinstance(branch, str)
        or not BRANCH.fullmatch(branch)
        or ".." in branch
        or "//" in branch
        or branch.endswith(("/", ".", ".lock"))
        or "/." in branch
        or branch in SPECIAL_REFS
        or branch.startswith("refs/")
    ):
        raise AgentError(f"bad branch name {branch!r}")
    return branch
