"""The executor's tools, each declared once: its name and schema (what the model is shown) and
its effect (what it does with the sandbox and the working tree). An agent of the brain lists the
ones it may use (``tools:``); adding a tool is one declaration here and its test.

An effect returns an Observation (what the code printed) or Finished (the node's result), and
raises ToolInputError when the arguments do not fit: its message goes back to the model as the
tool's error result, and the exchange goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gitops_agent.core.messages import ToolSpec
from gitops_agent.core.seams import Sandbox
from gitops_agent.core.state import Observation


class ToolInputError(Exception):
    """The arguments of a tool call do not fit its schema; the message is for the model."""


@dataclass(frozen=True)
class Finished:
    status: str  # done | failed
    result: str


class ToolContext(Protocol):
    """What an effect may use: the sandbox, the node's working tree, and how long a run may take
    (the action's limit, never past the task's wall budget)."""

    sandbox: Sandbox
    tree: Path

    def timeout(self) -> float: ...


Effect = Callable[[ToolContext, dict[str, Any]], "Observation | Finished"]


@dataclass(frozen=True)
class ExecutorTool:
    spec: ToolSpec
    run: Effect

    @property
    def name(self) -> str:
        return self.spec.name


EXECUTOR_TOOLS: dict[str, ExecutorTool] = {}


def executor_tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> Callable[[Effect], Effect]:
    """Declare the decorated effect as the executor tool ``name``."""
    spec = ToolSpec(
        name=name, description=description, input_schema={"type": "object", "properties": properties, "required": required}
    )

    def register(effect: Effect) -> Effect:
        EXECUTOR_TOOLS[name] = ExecutorTool(spec, effect)
        return effect

    return register


def _text(args: dict[str, Any], key: str, tool: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ToolInputError(f"`{tool}` needs a non-empty `{key}` string")
    return value


@executor_tool(
    "run_python",
    "Run Python code as a fresh process in the task's working tree. Returns exit code, stdout, stderr.",
    {"code": {"type": "string"}},
    ["code"],
)
def run_python(ctx: ToolContext, args: dict[str, Any]) -> Observation:
    return ctx.sandbox.run_python(_text(args, "code", "run_python"), ctx.tree, timeout=ctx.timeout())


@executor_tool(
    "run_shell",
    "Run a bash command in the task's working tree. Returns exit code, stdout, stderr.",
    {"command": {"type": "string"}},
    ["command"],
)
def run_shell(ctx: ToolContext, args: dict[str, Any]) -> Observation:
    return ctx.sandbox.run_shell(_text(args, "command", "run_shell"), ctx.tree, timeout=ctx.timeout())


@executor_tool(
    "finish_step",
    "End this node with its result (Markdown) and status done or failed.",
    {
        "result": {"type": "string", "description": "What this node found or produced, with figures."},
        "status": {"type": "string", "enum": ["done", "failed"]},
    },
    ["result", "status"],
)
def finish_step(ctx: ToolContext, args: dict[str, Any]) -> Finished:
    status, result = args.get("status", "done"), args.get("result")
    if status not in ("done", "failed") or not isinstance(result, str) or not result.strip():
        raise ToolInputError('finish_step needs {"result": non-empty markdown, "status": "done" | "failed"}')
    return Finished(status, result)
