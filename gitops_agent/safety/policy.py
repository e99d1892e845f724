"""What the model's code may change in the repository, decided file by file.

Fixed rules (no setting turns them off): nothing under ``.git``; nothing under ``.agent/`` but
the step's own folder (and not its record files, which the engine writes); no workflow
(``.github/workflows/**``: a reviewer's event would run it, with the repository's secrets); a
path git could not hold safely is refused. Configurable rules (``policy:`` in the trusted config): refused paths
(default: ``.github/**`` and the files that steer git), files that tools and CI execute (refused
by default, or flagged at the top of the pull request), changes to files that existed before the
step (flagged by default), symbolic links (refused by default), and size caps.

Patterns: one without a ``/`` matches a file name at any depth (``conftest.py``, ``*.mk``); one
with a ``/`` matches the whole path (``.github/**``, ``docs/*.md``); ``*`` may span ``/``.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gitops_agent.git.checkout import Output
from gitops_agent.git.names import path_problem

# Files that git itself reads from a tree: never taken from the model (a .gitattributes filter
# or a .gitmodules URL would act on whoever checks the branch out).
GIT_FILES = [".gitattributes", ".gitmodules", ".lfsconfig", ".mailmap", ".gitea/**", ".forgejo/**"]

# Files that build tools, test runners, package managers, editors and CI run or load as code.
TOOL_FILES = [
    "Makefile",
    "makefile",
    "GNUmakefile",
    "*.mk",
    "CMakeLists.txt",
    "*.cmake",
    "meson.build",
    "BUILD",
    "BUILD.bazel",
    "WORKSPACE",
    "*.bzl",
    "Justfile",
    "justfile",
    "Taskfile.yml",
    "Rakefile",
    "Gemfile",
    "*.gemspec",
    "Jenkinsfile",
    "build.gradle",
    "build.gradle.kts",
    "settings.gradle",
    "settings.gradle.kts",
    "gradlew",
    "gradle-wrapper.properties",
    "pom.xml",
    "build.sbt",
    "Cargo.toml",
    "build.rs",
    "package.json",
    ".npmrc",
    ".yarnrc",
    ".yarnrc.yml",
    "*.csproj",
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "tox.ini",
    "noxfile.py",
    "conftest.py",
    "pytest.ini",
    "sitecustomize.py",
    "usercustomize.py",
    "*.pth",
    "requirements*.txt",
    "Pipfile",
    "Dockerfile",
    "*.dockerfile",
    "docker-compose*.yml",
    "compose*.yml",
    ".pre-commit-config.yaml",
    ".envrc",
    ".env",
    ".gitlab-ci.yml",
    ".travis.yml",
    "azure-pipelines.yml",
    ".circleci/**",
    ".buildkite/**",
    ".devcontainer/**",
    ".vscode/**",
    ".idea/**",
    ".husky/**",
    ".githooks/**",
    ".cargo/**",
    ".mvn/**",
    "Directory.Build.props",
    "Directory.Build.targets",
    "*.props",
    "*.targets",
    ".pnpmfile.cjs",
    "lefthook.yml",
    "lefthook.yaml",
    ".lefthook.yml",
    ".pylintrc",
    "pylintrc",
    ".flake8",
    "bitbucket-pipelines.yml",
    ".gitpod.yml",
    "*.config.js",
    "*.config.cjs",
    "*.config.mjs",
    "*.config.ts",
    ".eslintrc*",
    ".babelrc*",
    ".bazelrc",
    "mise.toml",
    ".mise.toml",
    ".tool-versions",
    ".drone.yml",
    "appveyor.yml",
    "buildspec.yml",
    "Earthfile",
    "Tiltfile",
    "Vagrantfile",
    "*.nix",
    ".envrc*",
    "Procfile",
    "vite.config.*",
    "webpack.config.*",
    "jest.config.*",
    "karma.conf.js",
]


class PolicyConfig(BaseModel):
    """What the model's code may change in the repository (``policy:`` in the trusted config). A
    pattern without '/' matches a file name at any depth; one with '/' the whole path."""

    model_config = ConfigDict(extra="forbid")
    refused_paths: list[str] = Field(
        default_factory=lambda: [".github/**", *GIT_FILES],
        description="Paths never committed. Besides these, nothing under .git or under .agent/ (but the step's own "
        "folder) is ever taken, whatever this says.",
    )
    tool_files: list[str] = Field(
        default_factory=lambda: list(TOOL_FILES),
        description="Files that build tools, test runners, package managers or CI execute.",
    )
    tool_files_action: Literal["refuse", "flag", "allow"] = Field(
        "refuse", description="refuse: not committed; flag: committed and listed at the top of the pull request; allow."
    )
    existing_files_action: Literal["flag", "refuse", "allow"] = Field(
        "flag", description="A change to (or deletion of) a file that was in the tree before the step."
    )
    symlinks: Literal["refuse", "allow"] = Field("refuse", description="Symbolic links the code made.")
    max_file_mb: float = Field(10.0, gt=0, description="Larger files produced by the code are not committed (nor read).")
    max_step_mb: float = Field(100.0, gt=0, description="All files one step produced together; the rest is refused unread.")
    max_files: int = Field(5000, ge=1, description="Changed files one step may leave; the rest is refused unread.")


# Refused whatever policy.refused_paths says (matched case-insensitively, like every pattern)
FIXED_REFUSED = (".github/workflows/**",)

# The record files of a step folder: written by the engine, never taken from the code.
RECORD_FILES = ("turns.jsonl", "result.md", "step.json")
_STEP_DIR = re.compile(r"\d{4,}-[A-Za-z_][A-Za-z0-9_-]*")


def matches(path: str, patterns: list[str]) -> str | None:
    """The first pattern that ``path`` matches, or None. Case does not matter (a checkout on a
    case-insensitive file system treats ``.GitAttributes`` as ``.gitattributes``), and ``X/**``
    matches ``X`` itself (a directory replaced by a file)."""
    low = path.lower()
    name = low.rsplit("/", 1)[-1]
    for pat in patterns:
        p = pat.lower()
        target = low if "/" in p else name
        if fnmatch.fnmatchcase(target, p) or (p.endswith("/**") and low == p[:-3]):
            return pat
    return None


@dataclass
class Decision:
    """What the policy made of a step's changes: what is committed, what is refused (with the
    reason, for step.json) and what is committed but flagged (for the pull request)."""

    kept: dict[str, bytes | None] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)


def decide(
    changes: dict[str, Output],
    policy,
    *,
    own_dir: str,
    existing: set[str] | frozenset[str] = frozenset(),
    settings_files: tuple[str, ...] = (),
) -> Decision:
    """Apply ``policy`` (gitops_agent.settings.config.PolicyConfig) to a step's ``changes``. ``own_dir``
    is the step's folder (``.agent/tasks/<id>/steps/<seq>-<node>``); ``existing`` the paths
    that were in the tree before the step; ``settings_files`` the files that steer the agent (its
    settings, the workbench's ``sandbox.requirements``): never the model's to change, whatever
    ``policy.refused_paths`` says, for once merged they would act on every later task.

    A file written where a directory was (or under where a file was) removes what was there when
    it is committed: it is judged as those removals too, and refused with them."""
    rules = _Rules(policy, own_dir, frozenset(existing), settings_files)
    d = Decision()
    for path, out in sorted(changes.items()):
        verdict = rules.judge(path, out)
        if verdict is None:
            continue  # the engine writes it itself
        refused, flags = verdict
        if refused is None and out.kind != "deleted":
            refused = rules.removing(path)
        if refused is not None:
            d.refused.append(refused)
            continue
        d.kept[path] = out.data
        if out.kind != "deleted":
            d.modes[path] = out.mode
        if flags:
            d.flagged.append(f"{path}: " + "; ".join(flags))
    return d


def _parents(path: str) -> list[str]:
    """``a/b/c`` -> ``a``, ``a/b``."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class _Rules:
    def __init__(self, policy, own_dir: str, existing: frozenset[str], settings_files: tuple[str, ...]) -> None:
        self.policy, self.existing = policy, existing
        self.own = own_dir.rstrip("/") + "/"
        self.cap = int(policy.max_file_mb * 1024 * 1024)
        self.steering = {posixpath.normpath(f.replace("\\", "/")).lower() for f in settings_files if f}
        self.dirs = {d for p in existing for d in _parents(p)}

    def removing(self, path: str) -> str | None:
        """Why writing ``path`` is refused because of what it would remove, or None."""
        gone = [a for a in _parents(path) if a in self.existing]  # files it goes under
        if path in self.dirs:  # a directory it replaces
            gone += sorted(e for e in self.existing if e.startswith(path + "/"))
        for g in gone:
            verdict = self.judge(g, Output("deleted"))
            if verdict is not None and verdict[0] is not None:
                why = verdict[0].split(": refused (", 1)[-1]
                return f"{path}: refused (writing it would remove {g}, which is refused: {why}"
        return None

    def judge(self, path: str, out: Output) -> tuple[str | None, list[str]] | None:
        """(why ``path`` is refused, or None; what to flag), or None when the engine writes it."""
        policy, own = self.policy, self.own
        problem = path_problem(path)
        if problem:
            return f"{path if path.isprintable() else repr(path)}: refused (bad path: {problem})", []
        in_own = path.startswith(own)
        if in_own and path[len(own) :] in RECORD_FILES:
            return None
        if in_own and (
            path.rsplit("/", 1)[-1] in RECORD_FILES + ("memory.json",)
            or any(_STEP_DIR.fullmatch(part) for part in path[len(own) :].split("/")[:-1])
        ):
            return f"{path}: refused (only the engine writes step records, at any depth)", []
        if path.startswith(".agent/") and not in_own:
            return f"{path}: refused (only the step's own folder may change under .agent/)", []
        if matches(path, list(FIXED_REFUSED)):
            return f"{path}: refused (workflows are never written by the model's code)", []
        if path.lower() in self.steering:
            return f"{path}: refused (the agent's settings and the workbench's requirements are never the model's)", []
        if not in_own:
            pat = matches(path, list(policy.refused_paths))
            if pat:
                return f"{path}: refused (path matches a protected pattern {pat!r})", []
        if out.kind == "symlink" and policy.symlinks != "allow":
            target = out.data.decode("utf-8", "replace")[:200] if out.data else ""
            return f"{path}: refused (a symbolic link to {target!r}; links are not committed: policy.symlinks)", []
        if out.data is not None and len(out.data) > self.cap:
            return f"{path}: refused ({len(out.data) / 1e6:.1f} MB is over the {policy.max_file_mb:g} MB cap)", []
        flags: list[str] = []
        if not in_own:
            tool = matches(path, list(policy.tool_files))
            if tool and policy.tool_files_action != "allow":
                if policy.tool_files_action == "refuse":
                    return f"{path}: refused (tools or CI run this kind of file, pattern {tool!r}: policy.tool_files_action)", []
                flags.append(f"a file tools or CI run ({tool!r})")
            if path in self.existing and policy.existing_files_action != "allow":
                verb = "deletes" if out.kind == "deleted" else "changes"
                if policy.existing_files_action == "refuse":
                    return f"{path}: refused ({verb} a file that existed before the step: policy.existing_files_action)", []
                flags.append(f"{verb} a file that existed before")
        return None, flags
