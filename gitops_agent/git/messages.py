"""Commit messages: a subject, an optional body and ``Agent-*`` trailers (docs/design.md,
"Commits"), written and parsed the way ``git interpret-trailers`` reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TRAILER_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# "Fixes #12" closes issue 12 when a pull request whose body, or a commit whose message, says so
# lands on the default branch (a merge or rebase keeps commit messages): neither a model nor an
# issue author decides that. Forms GitHub reads: #N, GH-N, owner/repo#N and an issue's URL.
CLOSING = re.compile(
    r"\b(close[sd]?|fix(?:e[sd])?|resolve[sd]?)(?=\s*:?\s+(?:(?:[\w.-]+/[\w.-]+)?#\d|GH-\d|https?://\S+/issues/\d))", re.I
)


def defuse_closing(text: str) -> str:
    """``text`` with every closing keyword made inert ("Fixes #5" -> "Fixes (see) #5")."""
    return CLOSING.sub(lambda m: m.group(1) + " (see)", text)


_TRAILER_LINE = re.compile(r"([A-Za-z0-9-]+)[ \t]*:[ \t]*(.*)")


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    body: str
    trailers: dict[str, str] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)


def one_line(value: str) -> str:
    return " ".join(str(value).split())


def shorten(text: str, limit: int) -> str:
    """``text`` as one line of at most ``limit`` characters: cut at a word boundary, with "…"
    (a single word longer than that is cut inside it)."""
    line = one_line(text)
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    if line[limit - 1] != " " and " " in cut[limit // 2 :]:  # the cut is inside a word: drop the rest of it
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-") + "…"


def format_message(subject: str, trailers: dict[str, str], body: str = "") -> str:
    """``subject``, blank line, optional ``body``, blank line, ``Key: value`` trailer lines.

    The result is what ``git interpret-trailers --parse`` reads back as ``trailers``. Newlines in
    the subject or in trailer values are folded into single spaces; keys must be trailer tokens
    (letters, digits, '-'). Closing keywords are defused in all of it: subjects and bodies carry
    issue titles, node titles and summaries."""
    subject = defuse_closing(one_line(subject))
    if not subject:
        raise ValueError("commit subject is empty")
    parts = [subject]
    body = defuse_closing((body or "").strip("\n"))
    if body.strip():
        parts.append("\n".join(line.rstrip() for line in body.splitlines()))
    if trailers:
        lines = []
        for key, value in trailers.items():
            if not _TRAILER_KEY.fullmatch(key):
                raise ValueError(f"bad trailer key {key!r}: use letters, digits and '-'")
            lines.append(f"{key}: {defuse_closing(one_line(value))}".rstrip())
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _paragraphs(message: str) -> list[list[str]]:
    paras: list[list[str]] = []
    cur: list[str] = []
    for line in message.replace("\r\n", "\n").split("\n"):
        if line.strip():
            cur.append(line.rstrip())
        elif cur:
            paras.append(cur)
            cur = []
    if cur:
        paras.append(cur)
    return paras


def _trailer_block(lines: list[str]) -> dict[str, str] | None:
    """The trailers of a paragraph if every line is a trailer (or a continuation), else None."""
    out: dict[str, str] = {}
    last: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t"):
            if last is None:
                return None
            out[last] = (out[last] + " " + line.strip()).strip()
            continue
        m = _TRAILER_LINE.fullmatch(line)
        if not m:
            return None
        last = m.group(1)
        out[last] = m.group(2).strip()
    return out


def parse_trailers(message: str) -> dict[str, str]:
    """Trailers of a commit message: the last paragraph (never the subject) if all of its lines
    are ``Key: value`` (continuation lines are unfolded). A repeated key keeps its last value."""
    paras = _paragraphs(message)
    if len(paras) < 2:
        return {}
    return _trailer_block(paras[-1]) or {}


def split_message(message: str) -> tuple[str, str, dict[str, str]]:
    paras = _paragraphs(message)
    if not paras:
        return "", "", {}
    subject = " ".join(line.strip() for line in paras[0])
    rest = paras[1:]
    trailers: dict[str, str] = {}
    if rest:
        block = _trailer_block(rest[-1])
        if block is not None:
            trailers = block
            rest = rest[:-1]
    body = "\n\n".join("\n".join(p) for p in rest)
    return subject, body, trailers
