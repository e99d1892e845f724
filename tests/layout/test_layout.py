"""The layout of gitops_agent/ stays readable: packages per part, in layers that import one way
down (LAYERS), no module doing several jobs (none over ~400 lines), no function doing several
(none over MAX_FUNCTION_LINES), and no import circle between modules or packages (imports under
TYPE_CHECKING do not count; imports inside functions do)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

AGENT = ROOT / "gitops_agent"
MAX_LINES = 430
MAX_FUNCTION_LINES = 80  # def to last line, decorators not counted
# The packages, lowest first: each imports only packages before it (docs/design.md, "Layers").
LAYERS = [
    "core",
    "git",
    "safety",
    "templates",
    "models",
    "sandbox",
    "settings",
    "data",
    "memory",
    "observe",
    "brain",
    "runtime",
    "steps",
    "app",
    "eval",
    "evolve",
    "github",
    "cli",
]
PACKAGES = {*LAYERS, "demo"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in AGENT.rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for n in node.body:
                lines.update(range(n.lineno, (n.end_lineno or n.lineno) + 1))
    return lines


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if getattr(node, "lineno", 0) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")
                    up = up[: len(up) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod and t != "gitops_agent":
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert cycles(import_graph()) == []


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package -> the packages its modules import (a module at the top, like __main__, is its own)."""

    def pkg(mod: str) -> str:
        parts = mod.split(".")
        return parts[1] if len(parts) > 2 or (len(parts) == 2 and (AGENT / parts[1]).is_dir()) else mod

    out: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        out.setdefault(pkg(mod), set()).update(pkg(t) for t in targets if pkg(t) != pkg(mod))
    return out


def test_packages_import_one_way_down():
    """core imports no other package; every package imports only the packages below it."""
    pg = package_graph(import_graph())
    assert pg.get("core", set()) == set(), pg.get("core")
    rank = {p: i for i, p in enumerate(LAYERS)}
    upward = sorted((p, t) for p, ts in pg.items() if p in rank for t in ts if t in rank and rank[t] > rank[p])
    assert upward == [], f"imports that point up a layer: {upward}"
    assert cycles(pg) == []
    assert set(pg) - {"gitops_agent.__main__", "gitops_agent.__init__", "gitops_agent"} <= PACKAGES


def test_the_package_checker_finds_an_upward_import():
    graph = {"gitops_agent.core.state": {"gitops_agent.steps.plan"}, "gitops_agent.steps.plan": set()}
    assert package_graph(graph) == {"core": {"steps"}, "steps": set()}


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_does_several_jobs():
    long = {str(p.relative_to(ROOT)): n for p in AGENT.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def long_functions(source: str, filename: str = "<source>", limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """Every function and method (nested ones too) longer than ``limit`` lines, as "file:line name length"."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1  # lineno is the def's, after any decorator
            if length > limit:
                out.append((node.lineno, f"{filename}:{node.lineno} {node.name} {length}"))
    return [hit for _, hit in sorted(out)]


def test_no_function_is_longer_than_80_lines():
    long = [hit for p in sorted(AGENT.rglob("*.py")) for hit in long_functions(p.read_text(), str(p.relative_to(ROOT)))]
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines (split them into helpers named after what they do): {long}"


def test_the_function_checker_finds_a_long_function():
    body = "".join(f"        x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))  # with its def: one line too many
    source = f"@decorator\ndef short():\n    return 1\n\n\nclass C:\n    @property\n    def long(self):\n{body}"
    assert long_functions(source, "m.py") == [f"m.py:8 long {MAX_FUNCTION_LINES + 1}"]
    # exactly the cap is fine, and the decorator above the def does not count
    assert long_functions(source.replace("        x0 = 0\n", "", 1), "m.py") == []
    nested = f"def outer():\n    async def inner():\n{body}    return inner\n"
    assert long_functions(nested, "n.py") == [f"n.py:1 outer {MAX_FUNCTION_LINES + 3}", f"n.py:2 inner {MAX_FUNCTION_LINES + 1}"]


def test_every_module_lives_in_a_package_of_the_architecture():
    top = sorted(p.name for p in AGENT.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]
    assert {p.name for p in AGENT.iterdir() if p.is_dir() and not p.name.startswith("_")} <= PACKAGES


def test_every_package_is_shipped():
    tomllib = pytest.importorskip("tomllib")
    shipped = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(f.parent.relative_to(ROOT).parts) for f in AGENT.rglob("__init__.py")}
    assert packages - shipped == set()  # a package pyproject does not list is missing from an install


def test_the_console_script_names_a_function():
    """`gitops-agent` (pyproject's [project.scripts]) must resolve to a callable, not a module: the
    README's first command runs it (the layout change once left it pointing at gitops_agent.cli.main's module)."""
    import importlib
    import os
    import subprocess
    import sys

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["gitops-agent"]
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    assert callable(fn) and not isinstance(fn, type(sys)), f"{target} is not a function"
    script = os.path.join(os.path.dirname(sys.executable), "gitops-agent")
    if os.path.exists(script):  # the installed one, as the README runs it
        p = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout.startswith("gitops-agent "), p.stderr[-500:]
