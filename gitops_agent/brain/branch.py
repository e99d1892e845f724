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
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from gitops_agent.templates.prompts import render_raw

from gitops_agent.brain.agents import Brain, default_brain_dir, default_prompts_dir, load_agent_file, load_brain
from gitops_agent.core.errors import AgentError, ConfigError
from gitops_agent.git.repo import GitRepo

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


def _sample_context() -> dict[str, Any]:
    """Representative values for every variable the steps pass to the templates."""
    from gitops_agent.observe.render import checklist
    from gitops_agent.core.state import Observation, TaskFile, TaskModels, utcnow
    from gitops_agent.core.plan import Plan, PlanNode

    task = TaskFile(
        task_id="1-sample", question="What is the average order value per region?", base_ref="main", base_sha="0" * 40,
        models=TaskModels(planner="scripted:demo", executor="scripted:demo"), created_at=utcnow(), instructions=["Also the median."],
    )
    node = PlanNode(id="n1", title="Load the data", goal="Load data/orders.csv and report the columns.")
    plan = Plan(version=1, goal=task.question, nodes=[node, PlanNode(id="n2", title="Average", goal="Average per region.", depends_on=["n1"])])
    exp = {"task_id": "0-past", "outcome": "done", "question": "Average order value?", "outline": "[✓] n1 Load", "summary": "done",
           "lessons": ["check amounts first"], "failures": [], "date": "2026-01-01", "cost_usd": 0.01, "score": 1.0, "cited": True}
    result = {"node": "n1", "title": "Load the data", "status": "done", "error": None, "result": "240 rows"}
    return {
        "task": task, "node": node, "plan": plan, "checklist": checklist(plan), "files": ["data/orders.csv"], "files_more": 0,
        "experiences": [exp], "new_results": [result], "old_results": [result], "running": [], "spent": "$0 of $1",
        "dep_results": [result], "step_dir": ".agent/tasks/1-sample/steps/0003-n1", "max_turns": 8, "data_dir": "/data",
        "py_tools": [{"name": "tabular", "doc": "helpers", "functions": [{"signature": "load_csv(path)", "doc": "rows"}]}],
        "obs": Observation(exit_code=0, stdout="ok"), "title": "t", "outcome": "done", "reason": None, "answer": "a",
        "results": [result], "cost_table": "|", "branch": "agent/task/1-sample", "memory": [exp], "question": "q", "instructions": ["also the median"],
        "brain_files": {"agents/analyst.yaml": "name: analyst"}, "last": 10, "now": "2026-01-01",
    }


def _sample_experience() -> dict[str, Any]:
    from gitops_agent.memory.experience import Experience, OutlineItem
    from gitops_agent.core.state import utcnow

    e = Experience(task_id="0-past", branch="agent/task/0-past", question="Average order value?", outcome="failed",
                   outline=[OutlineItem(id="n1", title="Load", status="failed", agent="analyst")], summary="s",
                   lessons=["l"], failures=["n1 failed: x"], date=utcnow())
    return e.model_dump(mode="json", by_alias=True)


def _render_check(dirs: list[Path], name: str, ctx: dict[str, Any]) -> str | None:
    # sandboxed, and (a template not of the package) in a child process with memory and time
    # limits: validating a proposal must not run it, nor let it exhaust the host
    try:
        render_raw(dirs, name, ctx)
        return None
    except jinja2.TemplateNotFound as e:
        return f"template {e.name!r} not found"
    except jinja2.TemplateError as e:
        return getattr(e, "message", None) or str(e)
    except Exception as e:  # noqa: BLE001 - a template that raises at render time
        return f"{type(e).__name__}: {e}"


def validate_dir(d: Path, where: str = BRAIN_BRANCH) -> Brain:
    """Load and check a brain override directory; every problem is a ConfigError naming
    ``<where>:<file>`` and the field or line."""
    d = Path(d)
    # agents
    for f in sorted((d / "agents").glob("*.yaml")) if (d / "agents").is_dir() else []:
        try:
            a = load_agent_file(f)
        except ConfigError as e:
            raise ConfigError(str(e).replace(str(f), f"{where}:agents/{f.name}", 1)) from None
        if a.name != f.stem:
            raise ConfigError(f"{where}:agents/{f.name}: field name: {a.name!r} must match the file name ({f.stem!r})")
    # prompts: syntax
    env = jinja2.Environment()
    for f in sorted((d / "prompts").glob("*.j2")) if (d / "prompts").is_dir() else []:
        try:
            env.parse(f.read_text(encoding="utf-8"))
        except jinja2.TemplateSyntaxError as e:
            raise ConfigError(f"{where}:prompts/{f.name}: line {e.lineno}: {e.message}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}:prompts/{f.name}: not UTF-8 text") from None
    # tools
    for f in sorted((d / "tools").glob("*.py")) if (d / "tools").is_dir() else []:
        if not f.stem.isidentifier():
            raise ConfigError(f"{where}:tools/{f.name}: the module name {f.stem!r} is not a Python identifier")
        if f.stem in sys.stdlib_module_names or f.stem in ("agent", "gitops_agent", "brain"):
            raise ConfigError(f"{where}:tools/{f.name}: the module name {f.stem!r} would hide a standard module; rename it")
        try:
            compile(f.read_bytes(), f"{where}:tools/{f.name}", "exec")
        except SyntaxError as e:
            raise ConfigError(f"{where}:tools/{f.name}: line {e.lineno}: {e.msg}") from None
        except (RecursionError, MemoryError, ValueError) as e:  # nested past what the compiler takes, a NUL byte
            raise ConfigError(f"{where}:tools/{f.name}: cannot be compiled ({type(e).__name__})") from None
    # the whole brain
    try:
        brain = load_brain(d)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}".replace(str(d) + "/", f"{where}:")) from None
    # templates each agent names must exist and render
    ctx = _sample_context()
    defaults = [default_prompts_dir()]
    for a in brain.agents.values():
        own = (d / "agents" / f"{a.name}.yaml").exists()
        ctx_a = {**ctx, "agent": a, "agents": list(brain.executors().values())}
        for field, name in (("system", a.prompts.system), ("task", a.prompts.task), ("state", a.prompts.state)):
            if name is None:
                continue
            overridden = (d / "prompts" / name).exists()
            if not overridden and not own:
                continue
            err = _render_check(brain.prompt_dirs, name, ctx_a)
            if err is None:
                continue
            if "not found" in err:
                raise ConfigError(f"{where}:agents/{a.name}.yaml: field prompts.{field}: template {name!r} not found in prompts/ "
                                  "of the brain branch or of the package")
            if overridden and _render_check(defaults, name, ctx_a) is None:
                raise ConfigError(f"{where}:prompts/{name}: does not render for agent {a.name!r} (prompts.{field}): {err}")
    for f in sorted((d / "prompts").glob("*.j2")) if (d / "prompts").is_dir() else []:
        if f.name in ("report.j2", "observation.j2", "evolve.j2", "evolve_system.j2"):
            ctx_f = {**ctx, "agent": brain.planner}
            if f.name.startswith("evolve"):
                ctx_f["experiences"] = [_sample_experience()]
            err = _render_check(brain.prompt_dirs, f.name, ctx_f)
            if err and _render_check(defaults, f.name, ctx_f) is None:
                raise ConfigError(f"{where}:prompts/{f.name}: does not render: {err}")
    return brain


def write_files(d: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        if classify(path) in (None, "readme"):
            continue
        p = d / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def validate_files(files: dict[str, bytes], where: str = BRAIN_BRANCH) -> list[str]:
    """Validate a brain given as {path: content}; returns the agent names it defines."""
    with tempfile.TemporaryDirectory(prefix="gitops-agent-brain-") as td:
        write_files(Path(td), files)
        brain = validate_dir(Path(td), where)
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
        entries = sorted((p for p in parent.iterdir() if p.name != keep and not p.name.startswith(".tmp-")),
                         key=lambda p: p.stat().st_mtime, reverse=True)
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
            _nl(difflib.unified_diff(a_lines, b_lines, f"{old_label}/{path}" if a is not None else "/dev/null", f"{new_label}/{path}"))
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
        return "branch, same as default" if defaults.get(path) == branch[path] else ("branch, changed" if path in defaults else "branch, new")

    lines.append("agents:")
    for a in sorted(brain.agents.values(), key=lambda a: (a.role != "planner", a.name)):
        lines.append(f"  {a.name:12} {a.role:8} model={a.model or '(task default)'}  [{origin(f'agents/{a.name}.yaml')}]")
        lines.append(f"  {'':12} {a.description}")
    lines.append("prompts:")
    names = sorted({p.split('/', 1)[1] for p in list(defaults) + list(branch) if p.startswith("prompts/")})
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
    "BRAIN_BRANCH", "brain_diff", "brain_show", "checkout_brain", "classify", "default_files", "diff_files", "init_brain",
    "list_tools", "load_repo_brain", "read_branch_files", "validate_dir", "validate_files",
]
