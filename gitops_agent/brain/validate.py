"""Checking a brain directory before any use: the agent files, the templates' syntax, the tool
modules' names and syntax, and a sample render of every template an agent names (with
representative values for every variable the steps pass).

Separate from gitops_agent/brain/branch.py, which reads, caches and writes the agent/brain branch:
the checks take a plain directory (a checkout of the branch, a proposal written to a temporary
one) and know nothing of Git.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2

from gitops_agent.brain.agents import Brain, default_prompts_dir, load_agent_file, load_brain
from gitops_agent.core.errors import ConfigError
from gitops_agent.templates.prompts import render_raw


def _sample_context() -> dict[str, Any]:
    """Representative values for every variable the steps pass to the templates."""
    from gitops_agent.core.plan import Plan, PlanNode
    from gitops_agent.core.state import Observation, TaskFile, TaskModels, utcnow
    from gitops_agent.observe.render import checklist

    task = TaskFile(
        task_id="1-sample",
        question="What is the average order value per region?",
        base_ref="main",
        base_sha="0" * 40,
        models=TaskModels(planner="scripted:demo", executor="scripted:demo"),
        created_at=utcnow(),
        instructions=["Also the median."],
    )
    node = PlanNode(id="n1", title="Load the data", goal="Load data/orders.csv and report the columns.")
    plan = Plan(
        version=1,
        goal=task.question,
        nodes=[node, PlanNode(id="n2", title="Average", goal="Average per region.", depends_on=["n1"])],
    )
    exp = {
        "task_id": "0-past",
        "outcome": "done",
        "question": "Average order value?",
        "outline": "[✓] n1 Load",
        "summary": "done",
        "lessons": ["check amounts first"],
        "failures": [],
        "date": "2026-01-01",
        "cost_usd": 0.01,
        "score": 1.0,
        "cited": True,
    }
    result = {"node": "n1", "title": "Load the data", "status": "done", "error": None, "result": "240 rows"}
    return {
        "task": task,
        "node": node,
        "plan": plan,
        "checklist": checklist(plan),
        "files": ["data/orders.csv"],
        "files_more": 0,
        "experiences": [exp],
        "new_results": [result],
        "old_results": [result],
        "running": [],
        "spent": "$0 of $1",
        "dep_results": [result],
        "step_dir": ".agent/tasks/1-sample/steps/0003-n1",
        "max_turns": 8,
        "data_dir": "/data",
        "py_tools": [{"name": "tabular", "doc": "helpers", "functions": [{"signature": "load_csv(path)", "doc": "rows"}]}],
        "obs": Observation(exit_code=0, stdout="ok"),
        "workbench": ["pandas 2.2.3", "duckdb 1.1.3"],
        "queries": "- node `n1`: `shop` · 3 rows",
        "data_sources": [{"name": "shop", "description": "d", "tables": [{"name": "orders", "columns": [{"name": "id"}]}]}],
        "title": "t",
        "outcome": "done",
        "reason": None,
        "answer": "a",
        "results": [result],
        "cost_table": "|",
        "branch": "agent/task/1-sample",
        "memory": [exp],
        "charts": "![chart.png](steps/0003-n1/chart.png)",
        "question": "q",
        "instructions": ["also the median"],
        "brain_files": {"agents/analyst.yaml": "name: analyst"},
        "last": 10,
        "now": "2026-01-01",
    }


def _sample_experience() -> dict[str, Any]:
    from gitops_agent.core.state import utcnow
    from gitops_agent.memory.experience import Experience, OutlineItem

    e = Experience(
        task_id="0-past",
        branch="agent/task/0-past",
        question="Average order value?",
        outcome="failed",
        outline=[OutlineItem(id="n1", title="Load", status="failed", agent="analyst")],
        summary="s",
        lessons=["l"],
        failures=["n1 failed: x"],
        date=utcnow(),
    )
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


_COMPILE = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
try:
    compile(sys.stdin.buffer.read(), "tool", "exec")
    print(json.dumps(None))
except SyntaxError as e:
    print(json.dumps(f"line {e.lineno}: {e.msg}"))
except (RecursionError, MemoryError, ValueError, SystemError) as e:
    print(json.dumps(f"cannot be compiled ({type(e).__name__})"))
"""


def compile_problem(source: bytes) -> str | None:
    """Why a tool module does not compile, or None. In a child process: a module nested past what
    the compiler takes leaves CPython's own recursion bookkeeping broken for the process that
    tried (later compiles fail with 'AST constructor recursion depth mismatch')."""
    try:
        p = subprocess.run([sys.executable, "-I", "-c", _COMPILE], input=source, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "cannot be compiled (it took too long)"
    if p.returncode != 0 or not p.stdout.strip():
        return "cannot be compiled (the compiler gave up)"
    return json.loads(p.stdout)


def validate_dir(d: Path, where: str) -> Brain:
    """Load and check a brain override directory; every problem is a ConfigError naming
    ``<where>:<file>`` (``where``: the branch, e.g. agent/brain) and the field or line."""
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
        problem = compile_problem(f.read_bytes())
        if problem:
            raise ConfigError(f"{where}:tools/{f.name}: {problem}")
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
                raise ConfigError(
                    f"{where}:agents/{a.name}.yaml: field prompts.{field}: template {name!r} not found in prompts/ "
                    "of the brain branch or of the package"
                )
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


__all__ = ["validate_dir"]
