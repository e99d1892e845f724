"""What the model's code printed, quoted in Markdown as it was printed: a fenced code block.

``fenced`` makes one, with a fence longer than any backtick run inside, so the text can never
close it. ``output_as_code`` is a step of the outbound sanitiser (``gitops_agent/safety/text.py``):
before the Markdown is parsed, the code's output it quotes becomes fenced code, so a traceback
keeps its indentation, ``**`` and ``<module>`` stay as printed, and no tag is left to be shown as
a stray HTML block. Output is recognised in two forms, outside code the text already has:

* a ``<stdout>`` / ``<stderr>`` block, each tag alone on its line (how an observation shows it
  to the model, ``prompts/observation.j2``, and so how a result that quotes it carries it);
* a Python traceback: ``Traceback (most recent call last):``, its indented lines, and the
  exception's line.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

_TAG = re.compile(r"<(stdout|stderr)>")
_TRACEBACK = "Traceback (most recent call last):"
_BACKTICKS = re.compile(r"`+")


def fenced(text: str, info: str = "") -> str:
    """``text`` as a fenced code block whose fence is longer than any backtick run inside."""
    longest = max((len(m.group(0)) for m in _BACKTICKS.finditer(text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") or not text else text + "\n"
    return f"{fence}{info}\n{body}{fence}"


def code_lines(md: str) -> set[int]:
    """The lines of ``md`` that are code already (fenced or indented code blocks)."""
    lines: set[int] = set()
    for t in MarkdownIt("commonmark").parse(md):
        if t.type in ("fence", "code_block") and t.map:
            lines.update(range(*t.map))
    return lines


def _tagged_end(lines: list[str], i: int) -> tuple[str, int] | None:
    """(stream, index of the closing tag's line) when line ``i`` opens a ``<stdout>`` or
    ``<stderr>`` block that is closed further down."""
    m = _TAG.fullmatch(lines[i].strip())
    if m is None:
        return None
    close = f"</{m.group(1)}>"
    end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == close), None)
    return None if end is None else (m.group(1), end)


def _traceback_end(lines: list[str], i: int) -> int | None:
    """The index of a traceback's last line (its exception) when line ``i`` starts one."""
    if lines[i].strip() != _TRACEBACK:
        return None
    j = i + 1
    while j < len(lines) and lines[j][:1] in (" ", "\t"):
        j += 1
    return j if j < len(lines) and lines[j].strip() and j > i + 1 else None


def _first_output(lines: list[str], code: set[int]) -> tuple[int, int, str, list[str]] | None:
    """The first quoted output outside code: (first line, last line, fence info, its text)."""
    for i in range(len(lines)):
        if i in code:
            continue
        tagged = _tagged_end(lines, i)
        if tagged is not None:
            stream, end = tagged
            return i, end, stream, lines[i + 1 : end]
        end = _traceback_end(lines, i)
        if end is not None:
            return i, end, "text", lines[i : end + 1]
    return None


def output_as_code(md: str) -> str:
    """``md`` with every quoted output of code (see the module docstring) as a fenced block."""
    if "<stdout>" not in md and "<stderr>" not in md and _TRACEBACK not in md:
        return md
    done: list[str] = []
    lines = md.split("\n")
    while True:  # one block at a time: what was code is found again on the rest
        found = _first_output(lines, code_lines("\n".join(lines)))
        if found is None:
            return "\n".join(done + lines)
        start, end, info, body = found
        done += [*lines[:start], "", fenced("\n".join(body), info), ""]
        lines = lines[end + 1 :]
