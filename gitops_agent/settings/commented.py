"""The settings file as `gitops-agent init` writes it: every setting with its default and what it
does, commented out, made from the models themselves (so it never says a default the code does
not have). Taking the leading ``# `` off every line gives a file that loads as the defaults.
"""

from __future__ import annotations

import textwrap

import yaml
from pydantic import BaseModel

from gitops_agent import __version__
from gitops_agent.settings.config import CONFIG_PATH, AgentConfig

# Defaults that depend on the machine that writes the file, not on gitops-agent: left out.
MACHINE_DEFAULTS = {("sandbox", "python")}
WIDTH = 100

HEADER = f"""\
## gitops-agent settings ({CONFIG_PATH}), written by `gitops-agent init` (gitops-agent {__version__}).
## Every setting is here with its default, commented out: uncomment a section's first line and
## the settings you change. A wrong name or value stops the job with one line naming it.
## On GitHub the file is read from the default branch (a task branch or pull request cannot
## change it). Reference: README.md, "Configuration".
"""


def _value(v: object) -> str:
    if isinstance(v, BaseModel):
        v = v.model_dump(mode="json")
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(" ".join(text.split()), WIDTH - len(indent) - 4)]


def _section(name: str, model: BaseModel, indent: str = "") -> list[str]:
    lines = [f"{indent}{name}:"]
    for field, info in type(model).model_fields.items():
        if (name, field) in MACHINE_DEFAULTS:
            continue
        value = getattr(model, field)
        if info.description:
            lines += _comment(info.description, indent + "  ")
        lines.append(f"{indent}  {field}: {_value(value)}")
    return lines


def commented_settings() -> str:
    """The whole file: every line either a ``##`` note or a commented-out setting."""
    cfg = AgentConfig()
    body: list[str] = []
    for name, info in AgentConfig.model_fields.items():
        value = getattr(cfg, name)
        body.append("")
        if isinstance(value, BaseModel):
            doc = info.description or (type(value).__doc__ or "").strip().split("\n\n")[0]
            body += _comment(doc, "#")  # a note: "## ..." once the setting lines are uncommented
            body += _section(name, value)
        else:
            body += _comment(info.description or name, "#")
            body.append(f"{name}: {_value(value)}")
    out = [HEADER.rstrip("\n")]
    for line in body:
        out.append("#" if not line else (line if line.startswith("##") else f"# {line}"))
    return "\n".join(out) + "\n"
