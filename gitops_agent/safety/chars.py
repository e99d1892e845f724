"""Character-level hygiene, without a Markdown parser (cheap to import): invisible characters,
job-log lines that cannot be workflow commands, terminal text without escape sequences, and
quoting for prompt blocks."""

from __future__ import annotations

import re
import unicodedata

_DELIMS = re.compile(r"<(/?)(question|instruction|memory|untrusted_text|data)\b", re.I)


# ----------------------------------------------------------------------------- characters


def _invisible(cp: int) -> bool:
    if 0xE0000 <= cp <= 0xE007F or 0xE0100 <= cp <= 0xE01EF:  # tag characters, variation selectors supplement
        return True
    ch = chr(cp)
    if ch in "\t\n":
        return False
    cat = unicodedata.category(ch)
    return cat == "Cf" or (cat == "Cc" and ch != "\r")


def strip_invisible(text: str) -> str:
    """``text`` without characters a reader cannot see (format characters: zero-width, bidi
    controls, tag characters; control characters but tab and newline); line and paragraph
    separators become newlines."""
    if not text:
        return text or ""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    out = []
    for ch in text:
        cp = ord(ch)
        if (
            cp < 0x80
            and ch
            not in "\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17"
            "\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f"
        ):
            out.append(ch)
        elif not _invisible(cp):
            out.append(ch)
    return "".join(out)


# ----------------------------------------------------------------------------- prompts


def quote(text: str) -> str:
    """Untrusted text for a prompt delimiter block: the block's own tags cannot be closed or
    forged from inside it."""
    return _DELIMS.sub(lambda m: "‹" + m.group(1) + m.group(2), text or "")


# ----------------------------------------------------------------------------- terminals

_TERM_CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_text(text: str) -> str:
    """Text for a person's terminal: no escape sequences (window titles, clipboard writes) or
    other control characters; newlines and tabs stay."""
    return _TERM_CTRL.sub("", strip_invisible(text or "") if text else "")


# ----------------------------------------------------------------------------- logs

_CTRL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def log_line(text: object, limit: int = 300) -> str:
    """Model text for a job log: one line, control characters escaped, no workflow command."""
    s = strip_invisible(str(text if text is not None else ""))
    s = _CTRL.sub(lambda m: "\\n" if m.group(0) == "\n" else f"\\x{ord(m.group(0)):02x}", s)
    s = s.replace("::", ": :")
    return s if len(s) <= limit else s[: limit - 1] + "…"
