"""The model-facing tools of the planner and of evolve: their JSON schemas (docs/design.md,
"Model-facing tools"). The executor's tools, schema and effect together, are in
gitops_agent/core/executor_tools.py."""

from __future__ import annotations

from gitops_agent.core.executor_tools import EXECUTOR_TOOLS
from gitops_agent.core.messages import ToolSpec

_NODE_PROPS = {
    "id": {"type": "string", "description": "Short id, unique in the plan, e.g. n1, n2a."},
    "title": {"type": "string", "description": "A few words."},
    "goal": {"type": "string", "description": "What the executor must find or produce, precisely."},
    "agent": {"type": "string", "description": "The agent that runs this node (default: analyst)."},
    "depends_on": {"type": "array", "items": {"type": "string"}, "description": "Ids of nodes that must be done first."},
    "children": {
        "type": "array",
        "items": {"type": "object", "description": "A sub-node with the same fields as a node."},
        "description": "Sub-nodes; a node with children is done when its children are.",
    },
}

UPDATE_PLAN = ToolSpec(
    name="update_plan",
    description=(
        "Propose the whole plan tree. Done and running nodes must be kept unchanged; pending and failed "
        "nodes may be changed or dropped. Ready leaves are dispatched to executors right away."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "nodes": {
                "type": "array",
                "items": {"type": "object", "properties": _NODE_PROPS, "required": ["id", "title", "goal"]},
            },
            "note": {"type": "string", "description": "Why the plan is (or changed to) this, in one or two lines."},
        },
        "required": ["nodes"],
    },
)

FINISH = ToolSpec(
    name="finish",
    description="End the task with the final answer (Markdown, with the computed figures and where they came from).",
    input_schema={
        "type": "object",
        "properties": {
            "answer": {"type": "string", "description": "The final answer in Markdown."},
            "summary": {"type": "string", "description": "One line."},
            # memory: kept in the task's experience for future tasks
            "lessons": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Optional: short lessons for future tasks: what worked, what failed and why (one line each).",
            },
        },
        "required": ["answer", "summary"],
    },
)

# evolve (gitops_agent/evolve/propose.py): the model proposes changes to the brain branch
PROPOSE_BRAIN_CHANGE = ToolSpec(
    name="propose_brain_change",
    description=(
        "Propose concrete changes to this repository's brain (agent definitions, prompt templates, helper tools), "
        "based on the experiences shown. Each change is the whole new content of one file; content null deletes "
        "the file from the brain branch (the packaged default applies again)."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "changes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "agents/<name>.yaml, prompts/<name>.j2 or tools/<module>.py"},
                        "content": {"type": ["string", "null"], "description": "The complete new file content."},
                    },
                    "required": ["path", "content"],
                },
            },
            "title": {"type": "string", "description": "One line for the pull request title."},
            "rationale": {"type": "string", "description": "Why these changes, in Markdown, citing what the experiences showed."},
            "experiences": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Task ids of the experiences behind the changes.",
            },
        },
        "required": ["changes", "rationale", "experiences"],
    },
)

PLANNER_TOOLS = {t.name: t for t in (UPDATE_PLAN, FINISH)}
ALL = {**PLANNER_TOOLS, **{n: t.spec for n, t in EXECUTOR_TOOLS.items()}, PROPOSE_BRAIN_CHANGE.name: PROPOSE_BRAIN_CHANGE}


def specs(names: list[str]) -> list[ToolSpec]:
    return [ALL[n] for n in names]
