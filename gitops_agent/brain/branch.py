"""The brain branch ``agent/brain``: this repository's overrides of the packaged brain.

    agent/brain
      agents/<name>.yaml      agent definitions (gitops_agent.brain.agents.AgentDef); replace packaged ones by name
      prompts/<name>.j2       prompt templates; replace packaged ones by file name
      tools/<module>.py       helper modules the model's code can import in the sandbox
      README.md               (optional) what this brain changes and why

Files elsewhere on the branch are ignored. At runtime the branch's files are checked out into
``<git-common-dir>/gitops-agent/brain/<sha>/`` (once per commit), validated, and passed to
``load_brain(override_dir)``. A broken brain is a ``ConfigError`` naming the file and the field,
e.g. ``agent/brain:agents/analyst.yaml: field max_turns: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

import ast
import difflib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from gitops_agent.brain.agents import Brain, default_brain_dir, default_prompts_dir, load_brain
from gitops_agent.brain.validate import validate_dir
from gitops_agent.core.errors import AgentError, ConfigError
from gitops_agent.git.repo import GitRepo
from gitops_agent.git.scratch import scratch

BRAIN_BRANCH = "agent/brain"
KINDS = {"agents": ".yaml", "prompts": ".j2", "tools": ".py"}

README = """# agent/brain

This branch overrides gitops-agent's packaged brain for this repository:

- `agents/<name>.yaml`: agent definitions (role, model, limits, tools, prompt templates); a file
  replaces the packaged agent of the same name, a new name adds an agent the planner can use.
- `prompts/<name>.j2`: Jinja2 prompt templates; replace packaged ones by file name.
- `tools/<module>.py`: helper modules the model's code can `import` in the sandbox; their
  docstrings are listed to the executors.

`gitops-agent brain diff` shows what differs from the packaged defaults; `gitops-agent evolve`
proposes changes on `agent/brain-proposal/<date>` branches, from what the memory shows.
"""


def classify(path: str) -> str | None:
    """'agents', 'prompts', 'tools' or 'readme' for a path the brain uses; None for others."""
    if path == "README.md":
        return "readme"
    parts = path.split("/")
    if len(parts) == 2 and parts[0] in KINDS and parts[1].endswith(KINDS[parts[0]]) and not parts[1].startswith("."):
        return parts[0]
    return None


def default_files() -> dict[str, bytes]:
    """The packaged brain as branch paths: agents/*.yaml, prompts/*.j2, tools/*.py."""
    out: dict[str, bytes] = {}
    bdir, pdir = default_brain_dir(), default_prompts_dir()
    for f in sorted((bdir / "agents").glob("*.yaml")):
        out[f"agents/{f.name}"] = f.read_bytes()
    for f in sorted(pdir.glob("*.j2")):
        out[f"prompts/{f.name}"] = f.read_bytes()
    if (bdir / "tools").is_dir():
        for f in sorted((bdir / "tools").glob("*.py")):
            out[f"tools/{f.name}"] = f.read_bytes()
    return out


# ----------------------------------------------------------------------------- tools


@lru_cache(maxsize=256)
def _tool_info(path: str, mtime: float) -> dict[str, Any]:
    src = Path(path).read_text(encoding="utf-8")
    tree = ast.parse(src, filename=path)
    doc = ast.get_docstring(tree) or ""
    functions = []
    exported = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            try:
                exported = set(ast.literal_eval(node.value))
            except ValueError:
                pass
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            if exported is not None and node.name not in exported:
                continue
            if isinstance(node, ast.ClassDef):
                sig = f"class {node.name}"
            else:
                sig = f"{node.name}({ast.unparse(node.args)})"
                if node.returns is not None:
                    sig += f" -> {ast.unparse(node.returns)}"
            fdoc = ast.get_docstring(node) or ""
            functions.append({"signature": sig, "doc": " ".join(fdoc.split("\n\n")[0].split())})
    first = " ".join(doc.split("\n\n")[0].split()) if doc else "(no docstring)"
    return {"name": Path(path).stem, "doc": first, "functions": functions, "path": path}


def list_tools(brain: Brain) -> list[dict[str, Any]]:
    """The helper modules the model's code can import: name, first paragraph of the docstring,
    public functions (signature and first docstring paragraph). An override hides a packaged
    module of the same name."""
    seen: dict[str, dict[str, Any]] = {}
    for d in getattr(brain, "tool_dirs", []):
        for f in sorted(Path(d).glob("*.py")):
            if f.stem in seen or f.name.startswith("_"):
                continue
            try:
                seen[f.stem] = _tool_info(str(f), f.stat().st_mtime)
            except (OSError, SyntaxError, UnicodeDecodeError, RecursionError, MemoryError, ValueError):
                continue
    return [seen[k] for k in sorted(seen)]


# ----------------------------------------------------------------------------- validation
#
# The checks themselves are gitops_agent/brain/validate.py (validate_dir, on a directory); here a brain given
# as files is written to one first.


def write_files(d: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        if classify(path) in (None, "readme"):
            continue
        p = d / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def validate_files(files: dict[str, bytes], where: str = BRAIN_BRANCH) -> list[str]:
    """Validate a brain given as {path: content}; returns the agent names it defines."""
    with scratch(prefix="gitops-agent-brain-") as td:
        write_files(td, files)
        brain = validate_dir(td, where)
        return sorted(brain.agents)


# ----------------------------------------------------------------------------- the branch


def brain_tip(git: GitRepo, fetch: bool = True) -> str | None:
    return git.tip(BRAIN_BRANCH, fetch=fetch)


def read_branch_files(git: GitRepo, ref: str) -> dict[str, bytes]:
    """The brain files (see ``classify``) at ``ref``, README.md included."""
    paths = [p for p in git.list_files(ref) if classify(p)]
    blobs = git.read_files(ref, paths)
    return {p: b for p, b in blobs.items() if b is not None}


def checkout_brain(git: GitRepo, fetch: bool = True, at: str | None = None) -> Path | None:
    """The brain branch's files in a cache directory keyed by its commit (validated once);
    None when the repository has no brain branch. ``at``: that commit of the branch (the one a
    task pinned at intake) instead of its tip."""
    if at is not None:
        if getattr(git, "fetch_commit", None) is not None and not git.fetch_commit(at):
            raise ConfigError(f"the brain commit {at[:12]} this task was started with cannot be fetched")
        tip = at
    else:
        tip = brain_tip(git, fetch=fetch)
    if tip is None:
        return None
    dest = git.common_dir / "gitops-agent" / "brain" / tip
    if (dest / ".complete").exists():
        return dest
    files = read_branch_files(git, tip)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        write_files(tmp, files)
        validate_dir(tmp, BRAIN_BRANCH)
        (tmp / ".complete").write_text(tip + "\n")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _tidy(dest.parent, keep=dest.name)
    return dest


def _tidy(parent: Path, keep: str, max_entries: int = 5) -> None:
    try:
        entries = sorted(
            (p for p in parent.iterdir() if p.name != keep and not p.name.startswith(".tmp-")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        return
    for old in entries[max_entries:]:
        shutil.rmtree(old, ignore_errors=True)


def load_repo_brain(git: GitRepo, fetch: bool = True, at: str | None = None) -> Brain:
    """The brain a runtime should use: the packaged one with the repository's agent/brain
    branch on top (if it has one), at ``at`` when a task pinned a commit of it."""
    d = checkout_brain(git, fetch=fetch, at=at)
    brain = load_brain(d)
    brain.commit = d.name if d is not None else None
    return brain


def init_brain(git: GitRepo) -> str:
    """Create agent/brain holding the packaged defaults (one commit on an orphan root)."""
    tip = brain_tip(git)
    if tip is not None:
        raise AgentError(f"{BRAIN_BRANCH} already exists (at {tip[:12]}); see `gitops-agent brain diff`")
    files: dict[str, bytes | None] = {**default_files(), "README.md": README.encode()}
    try:
        git.create_branch(BRAIN_BRANCH, None, trailers={"Agent-Role": "brain"})
    except AgentError as e:
        raise AgentError(f"{BRAIN_BRANCH} already exists: {e}") from None
    return git.commit_files(BRAIN_BRANCH, files, "brain: the packaged defaults", {"Agent-Role": "brain"})


def brain_diff(git: GitRepo, ref: str | None = None) -> str:
    """A unified diff per file of the brain branch against the packaged defaults (files only on
    the branch are shown whole; files missing from the branch use the packaged default)."""
    ref = ref or brain_tip(git)
    if ref is None:
        raise AgentError(f"this repository has no {BRAIN_BRANCH} branch (create it with `gitops-agent brain init`)")
    return diff_files(default_files(), {p: b for p, b in read_branch_files(git, ref).items() if classify(p) != "readme"})


def diff_files(old: dict[str, bytes], new: dict[str, bytes], old_label: str = "default", new_label: str = BRAIN_BRANCH) -> str:
    out: list[str] = []
    for path in sorted(set(new)):
        a = old.get(path)
        b = new[path]
        if a == b:
            continue
        a_lines = a.decode("utf-8", "replace").splitlines(keepends=True) if a is not None else []
        b_lines = b.decode("utf-8", "replace").splitlines(keepends=True)
        out.extend(
            _nl(
                difflib.unified_diff(
                    a_lines, b_lines, f"{old_label}/{path}" if a is not None else "/dev/null", f"{new_label}/{path}"
                )
            )
        )
    return "".join(out)


def _nl(lines) -> list[str]:
    return [line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines]


def brain_show(git: GitRepo) -> str:
    """What the brain of this repository is: agents, templates and tools, and where each comes from."""
    tip = brain_tip(git)
    d = checkout_brain(git) if tip else None
    brain = load_brain(d)
    defaults = default_files()
    branch = read_branch_files(git, tip) if tip else {}
    lines = [f"brain: {BRAIN_BRANCH} @ {tip[:12]}" if tip else f"brain: the packaged defaults (no {BRAIN_BRANCH} branch)", ""]

    def origin(path: str) -> str:
        if path not in branch:
            return "default"
        return (
            "branch, same as default"
            if defaults.get(path) == branch[path]
            else ("branch, changed" if path in defaults else "branch, new")
        )

    lines.append("agents:")
    for a in sorted(brain.agents.values(), key=lambda a: (a.role != "planner", a.name)):
        lines.append(f"  {a.name:12} {a.role:8} model={a.model or '(task default)'}  [{origin(f'agents/{a.name}.yaml')}]")
        lines.append(f"  {'':12} {a.description}")
    lines.append("prompts:")
    names = sorted({p.split("/", 1)[1] for p in list(defaults) + list(branch) if p.startswith("prompts/")})
    for n in names:
        lines.append(f"  {n:28} [{origin(f'prompts/{n}')}]")
    lines.append("tools:")
    for t in list_tools(brain):
        tool_path = "tools/" + t["name"] + ".py"
        lines.append(f"  {t['name']:12} {t['doc']}  [{origin(tool_path)}]")
    ignored = [p for p in (git.list_files(tip) if tip else []) if not classify(p)]
    if ignored:
        lines.append("ignored files on the branch: " + ", ".join(ignored[:20]))
    return "\n".join(lines) + "\n"


__all__ = [
    "BRAIN_BRANCH",
    "brain_diff",
    "brain_show",
    "checkout_brain",
    "classify",
    "default_files",
    "diff_files",
    "init_brain",
    "list_tools",
    "load_repo_brain",
    "read_branch_files",
    "validate_files",
]
