"""Workflow commands of GitHub Actions (groups, error annotations), escaped as the toolkit does."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator, TextIO

# --------------------------------------------------------------------------- workflow commands


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def gha_escape_data(s: str) -> str:
    """A workflow command's message, escaped as GitHub's toolkit does."""
    return str(s).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def gha_escape_property(s: str) -> str:
    """A workflow command's property value (file=, title=): also ':' and ','."""
    return gha_escape_data(s).replace(":", "%3A").replace(",", "%2C")


@contextmanager
def gha_group(title: str, out: TextIO | None = None) -> Iterator[None]:
    """A collapsible group of log lines on GitHub Actions (``::group::``/``::endgroup::``);
    elsewhere just the title as a line."""
    stream = out or sys.stdout
    if in_github_actions():
        print(f"::group::{gha_escape_data(title)}", file=stream, flush=True)
        try:
            yield
        finally:
            print("::endgroup::", file=stream, flush=True)
    else:
        print(f"== {title}", file=stream, flush=True)
        yield


def gha_error(
    msg: str, file: str | None = None, *, line: int | None = None, title: str | None = None, out: TextIO | None = None
) -> None:
    """An error annotation on GitHub Actions (``::error file=…::msg``, escaped); elsewhere a
    plain ``error: …`` line on stderr."""
    if in_github_actions():
        props = []
        if file:
            props.append(f"file={gha_escape_property(file)}")
        if line is not None:
            props.append(f"line={int(line)}")
        if title:
            props.append(f"title={gha_escape_property(title)}")
        head = "::error" + (" " + ",".join(props) if props else "") + "::"
        print(head + gha_escape_data(msg), file=out or sys.stdout, flush=True)
    else:
        where = f"{file}{f':{line}' if line is not None else ''}: " if file else ""
        print(f"error: {where}{msg}", file=out or sys.stderr, flush=True)
