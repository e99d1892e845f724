"""Scripted models: the shipped demo (``scripted:demo``) or a script file (``scripted:FILE.yaml``,
gitops_agent/models/scripted.py). In a brain file only a name the run was given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gitops_agent.models.registry import Provider

DEMO_SCRIPT = Path(__file__).resolve().parents[2] / "demo" / "script.yaml"


def _build(name: str, endpoint: str | None, timeouts: Any, kw: dict[str, Any]) -> Any:
    from gitops_agent.models.scripted import ScriptedModel

    return ScriptedModel.from_file(DEMO_SCRIPT if name == "demo" else Path(name), **kw)


PROVIDER = Provider("scripted", _build, in_data=False, example="scripted:demo")
