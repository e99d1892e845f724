"""Where the broker reads the sources' URLs: the agent's environment, and on GitHub the caller's
``data-sources-env`` secret, lines of ``NAME=URL`` handed to the step as GITOPS_AGENT_DATA_SOURCES_ENV.
A team adds a source with a line in that secret and a `data.sources` entry naming NAME; the
workflows stay as they are.

The secret's lines never enter the process environment: the step takes the variable out of it
(nothing the step starts, git or the sandbox, inherits it), and only the broker looks a name up.
On GitHub each URL and its password are masked in the job's log before anything else runs."""

from __future__ import annotations

import os
import re
import sys
from collections import ChainMap
from typing import Mapping, MutableMapping

from gitops_agent.data.sources import secrets_of

VARIABLE = "GITOPS_AGENT_DATA_SOURCES_ENV"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_adopted: dict[str, str] = {}


def parse(text: str) -> tuple[dict[str, str], list[str]]:
    """``NAME=URL`` lines (blank lines and ``#`` comments skipped; ``export`` and quotes around the
    URL allowed): the variables, and a note per line that is not one. A note names the line's
    number, never its text, which may hold a password."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not eq or not _NAME.match(name) or not value:
            problems.append(f"line {n} of the data-sources-env secret is not NAME=URL; it was skipped")
            continue
        out[name] = value
    return out, problems


def adopt(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Take GITOPS_AGENT_DATA_SOURCES_ENV out of ``environ`` (the process's) and keep its variables
    for the broker; on GitHub, mask each value first. The problems found, for the log."""
    environ = os.environ if environ is None else environ
    text = environ.pop(VARIABLE, "")
    found, problems = parse(text)
    if environ.get("GITHUB_ACTIONS") == "true":
        for value in found.values():
            for secret in dict.fromkeys(secrets_of(value)):
                # a decoded password may hold a line break: each line masked, each escaped as the
                # runner reads a command's value (else the text after a break is a log line)
                for part in [secret, *secret.splitlines()]:
                    if part:
                        sys.stdout.write(f"::add-mask::{_command_value(part)}\n")
        sys.stdout.flush()
    _adopted.update(found)
    return problems


def _command_value(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def source_environ(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """What the broker looks a source's ``url_env`` up in: the adopted secret's lines first, then
    the environment (where the variable may also still be, locally)."""
    environ = os.environ if environ is None else environ
    return ChainMap(_adopted, parse(environ.get(VARIABLE, ""))[0], environ)
