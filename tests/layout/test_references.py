"""Every module, file and document that a comment, a docstring or a page names exists.

Scanned: the comments and string literals of every .py file under gitops_agent/, tests/, bench/
and tools/, and every .md file at the top level and under docs/. A reference is

* a dotted module path, ``gitops_agent.core.state`` or ``gitops_agent.core.state.TaskFile``: the
  longest prefix that is a module must exist, and the next part, if any, must be a name defined
  (or imported) at the top of that module; a part after a class must be defined in the class
  (or may come from a base class outside the repository);
* the old package's dotted paths (``agent.memory``, ``agent.snapshot.load_snapshot``): there is
  no ``agent`` package any more, so each is stale;
* a file path, ``gitops_agent/core/state.py`` (or a folder, ``gitops_agent/eval/``), and the old
  package's ``agent/memory.py``;
* in Markdown: a bare path in backticks that names a package of gitops_agent/ (``core/state.py``,
  resolved at the top level first), a bare file name in a table row whose first cell names the
  folders (``| `core/` | `seams.py` … |``), and a link to a local file (``[text](path)``).

Not references: an attribute of a variable called ``agent`` (``agent.prompts``), text inside a
Jinja2 expression (``{{ agent.nmae }}``, a test's broken template), OpenTelemetry attribute names
(``gitops_agent.step.seq``, read from gitops_agent/observe/telemetry.py), and branch names
(``agent/task/<id>``, ``agent/brain/tools/x.py``: a file of the agent/brain branch).

A second test: no file of the repository cites the design document that is not in it; the
design document is docs/design.md.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from functools import lru_cache
from pathlib import Path

from tests.helpers import ROOT

AGENT = ROOT / "gitops_agent"
PY_DIRS = ("gitops_agent", "tests", "bench", "tools")
SKIP_PARTS = {"__pycache__", ".venv", ".git", "recordings", "artifacts", "out", ".cache"}
THIS = Path(__file__).resolve()

DOTTED = re.compile(r"(?<![\w.])gitops_agent(?:\.[A-Za-z_]\w*)+")
# the old package (before gitops_agent): `agent.memory`, `agent.gitstore`; never an attribute of a
# variable called agent (`agent.prompts.system`), which is what these names are
OLD_DOTTED = re.compile(r"(?<![\w.{\[(\"'$@-])agent\.([a-z_][a-z0-9_]*)(?:\.[A-Za-z_]\w*)*")
AGENT_FIELDS = {
    "name",
    "role",
    "description",
    "model",
    "cascade",
    "max_turns",
    "max_tokens",
    "max_corrections",
    "tools",
    "prompts",
    "instructions",
    "yaml",
    "yml",
    "md",
    "json",
    "py",
    "j2",
}
PATH = re.compile(r"(?<![\w./$<>-])gitops_agent/((?:[\w.-]+/)*(?:[\w-][\w.-]*\.(?:py|j2|jinja|ya?ml|json|csv|md)\b|[\w-]+/))")
# the old package's files: `agent/memory.py`, `agent/core/runtime.py` (one or two parts; `agent/brain/tools/x.py` is
# a file of the agent/brain branch, and `agent/task/`, `agent/memory` are branches)
OLD_PATH = re.compile(r"(?<![\w./$<>-])agent/(?:[\w-]+/)?[\w-]+\.py\b")
BACKTICK = re.compile(r"`([^`\s]+)`")
BARE = re.compile(r"[\w-]+(?:/[\w.-]+)*/[\w-][\w.-]*\.(?:py|j2|jinja)")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
PACKAGES = sorted(p.name for p in AGENT.iterdir() if p.is_dir() and (p / "__init__.py").exists())


# ----------------------------------------------------------------------------- what exists


def _module_file(parts: list[str]) -> Path | None:
    """The file of module ``parts`` (["gitops_agent", "core", "state"]), a folder without
    ``__init__.py`` (a namespace package, e.g. gitops_agent/eval/suites), or None."""
    base = ROOT.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if base.is_dir() and "__pycache__" not in parts:
        return base
    return None


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _top_statements(body: list[ast.stmt]):
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _top_statements(node.body)
            yield from _top_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _top_statements(block)


def _names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names bound by ``body`` (a module's or a class's): defs, classes, assignments, imports."""
    out: dict[str, ast.AST] = {}
    for node in _top_statements(body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                out[(a.asname or a.name).split(".")[0]] = node
    return out


def _imported_from(module: Path, node: ast.ImportFrom, name: str) -> tuple[Path, str] | None:
    """Where ``name``, imported by ``node`` in ``module``, is defined (inside the repository)."""
    if node.level or not (node.module or "").startswith("gitops_agent"):
        return None
    for a in node.names:
        if (a.asname or a.name) == name:
            f = _module_file(node.module.split("."))
            return (f, a.name) if f is not None else None
    return None


def _class_has(module: Path, cls: ast.ClassDef, attr: str, seen: frozenset = frozenset()) -> bool:
    """Whether ``attr`` is defined in the class or a base class; True when a base lies outside
    the repository (BaseModel, Protocol, Exception: its attributes are not checked)."""
    if attr in _names(cls.body) or (module, cls.name) in seen:
        return True
    seen = seen | {(module, cls.name)}
    for base in cls.bases:
        if not isinstance(base, ast.Name):
            return True
        found = _definition(module, base.id)
        if found is None:
            return True
        where, node = found
        if not isinstance(node, ast.ClassDef) or _class_has(where, node, attr, seen):
            return True
    return False


def _definition(module: Path, name: str) -> tuple[Path, ast.AST] | None:
    """The definition of ``name`` in ``module``, following imports inside the repository."""
    node = _names(_tree(module).body).get(name)
    if isinstance(node, ast.ImportFrom):
        target = _imported_from(module, node, name)
        return _definition(*target) if target is not None else None
    return (module, node) if node is not None else None


def dotted_problem(ref: str) -> str | None:
    parts = ref.split(".")
    k = len(parts)
    while k > 1 and _module_file(parts[:k]) is None:
        k -= 1
    if _module_file(parts[:k]) is None:
        return "no such module"
    rest = parts[k:]
    if not rest:
        return None
    module = _module_file(parts[:k])
    names = _names(_tree(module).body) if module.is_file() else {}
    if rest[0] not in names:
        return f"no module {'.'.join(parts[: k + 1])}, and {'.'.join(parts[:k])} defines no {rest[0]!r}"
    if len(rest) > 1:
        found = _definition(module, rest[0])
        if found is not None and isinstance(found[1], ast.ClassDef) and not _class_has(found[0], found[1], rest[1]):
            return f"{rest[0]} has no attribute {rest[1]!r}"
    return None


# ----------------------------------------------------------------------------- what is scanned


def _files() -> tuple[list[Path], list[Path]]:
    py = [
        f
        for d in PY_DIRS
        for f in sorted((ROOT / d).rglob("*.py"))
        if not SKIP_PARTS & set(f.relative_to(ROOT).parts) and f.resolve() != THIS
    ]
    md = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md"))
    return py, md


def _py_texts(path: Path):
    """(line, text) of every comment and string literal of a Python file."""
    src = path.read_text(encoding="utf-8")
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            yield tok.start[0], tok.string
        elif getattr(tokenize, "FSTRING_MIDDLE", None) == tok.type:
            yield tok.start[0], tok.string


def _lines(line: int, text: str):
    for i, part in enumerate(text.split("\n")):
        yield line + i, part


@lru_cache(maxsize=None)
def _span_attributes() -> frozenset[str]:
    """OpenTelemetry attribute names (``gitops_agent.step.seq``): dotted like a module, but not one."""
    f = AGENT / "observe" / "telemetry.py"
    if not f.is_file():
        return frozenset()
    return frozenset(
        n.value
        for n in ast.walk(_tree(f))
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and DOTTED.fullmatch(n.value) and dotted_problem(n.value)
    )


def _in_template(text: str, at: int) -> bool:
    """Whether position ``at`` is inside a Jinja2 expression or statement (``{{ agent.nmae }}``)."""
    before = text[:at]
    return before.rfind("{{") > before.rfind("}}") or before.rfind("{%") > before.rfind("%}")


def _common(rel: str, line: int, text: str, out: list[str]) -> None:
    """Dotted module paths and file paths, in any scanned text."""
    for m in DOTTED.finditer(text):
        ref = m.group(0)
        problem = dotted_problem(ref)
        if problem and ref not in _span_attributes():
            out.append(f"{rel}:{line}: {ref} ({problem})")
    for m in OLD_DOTTED.finditer(text):
        if m.group(1) not in AGENT_FIELDS and text[m.end() : m.end() + 1] not in ("(", "[") and not _in_template(text, m.start()):
            out.append(f"{rel}:{line}: {m.group(0)} (the old package `agent` is gone)")
    for m in PATH.finditer(text):
        rest = m.group(1)
        if "<" in rest or "*" in rest:
            continue
        target = AGENT / rest
        if not (target.is_dir() if rest.endswith("/") else target.is_file()):
            out.append(f"{rel}:{line}: gitops_agent/{rest} (no such {'folder' if rest.endswith('/') else 'file'})")
    for m in OLD_PATH.finditer(text):
        out.append(f"{rel}:{line}: {m.group(0)} (the old package `agent` is gone)")


def _table_folders(line: str) -> list[str] | None:
    """The folders a Markdown table row is about (its first cell: `` `core/` `` or `` `cli/`, `github/` ``)."""
    if not line.lstrip().startswith("|"):
        return None
    first = line.strip().strip("|").split("|")[0]
    folders = re.findall(r"`([\w-]+)/`", first)
    return [f for f in folders if f in PACKAGES] or None


def _markdown(path: Path, rel: str, out: list[str]) -> None:
    fenced = False
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if text.lstrip().startswith("```"):
            fenced = not fenced
        _common(rel, n, text, out)
        if fenced:
            continue
        folders = _table_folders(text)
        for m in BACKTICK.finditer(text):
            ref = m.group(1)
            if ref.startswith(("gitops_agent/", "agent/")) or "<" in ref or "*" in ref:
                continue
            if BARE.fullmatch(ref):
                if (ROOT / ref).exists() or (path.parent / ref).exists():
                    continue
                if ref.split("/")[0] in PACKAGES and not (AGENT / ref).is_file():
                    out.append(f"{rel}:{n}: {ref} (no such file under gitops_agent/)")
            elif folders and re.fullmatch(r"[\w-]+\.py", ref):
                if not any((AGENT / f / ref).is_file() for f in folders):
                    out.append(f"{rel}:{n}: {ref} (not in gitops_agent/{'/, gitops_agent/'.join(folders)}/)")
        for m in LINK.finditer(text):
            target = m.group(1).split("#", 1)[0]
            if not target or re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # an anchor on the same page, or a URL
            if not (path.parent / target).exists():
                out.append(f"{rel}:{n}: ({m.group(1)}) (no such file)")


def stale_references() -> list[str]:
    out: list[str] = []
    py, md = _files()
    for f in py:
        rel = f.relative_to(ROOT).as_posix()
        for line, text in _py_texts(f):
            for n, part in _lines(line, text):
                _common(rel, n, part, out)
    for f in md:
        _markdown(f, f.relative_to(ROOT).as_posix(), out)
    return out


def test_every_module_file_and_document_named_exists():
    stale = stale_references()
    assert not stale, f"{len(stale)} stale references:\n" + "\n".join(stale)


# ----------------------------------------------------------------------------- the design document

# spelt in pieces, so this file does not cite them itself
OLD_DESIGN = re.compile("(?<![\\w/])" + "DESIGN" + r"\.md" + "|" + "design" + r"-notes\.md", re.I)


def _repository_files() -> list[Path]:
    """The files git would commit: tracked, and new ones not ignored (not .git, .venv, caches)."""
    p = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, check=True
    )
    names = [n for n in p.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    return [
        ROOT / n for n in sorted(set(names)) if not n.startswith(("tests/data/recordings/", ".venv/")) and (ROOT / n).is_file()
    ]


def test_the_design_document_cited_is_in_the_repository():
    """Only docs/design.md: neither the outside document it replaced nor the notes folded into it."""
    found = []
    for f in _repository_files():
        if f.resolve() == THIS:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for m in OLD_DESIGN.finditer(line):
                found.append(f"{f.relative_to(ROOT).as_posix()}:{n}: {m.group(0)}")
    assert not found, "cite docs/design.md instead:\n" + "\n".join(found)
