"""What an action printed, given back as a head and a tail of each stream, redacted.

stdout and stderr go to files (never pipes: a flood of output cannot exhaust memory); only a
window at each end is read back, so 100 MB of output costs a few KB of reading.
"""

from __future__ import annotations

import os

from gitops_agent.safety.secrets import redact


def elision_marker(n: int, unit: str = "characters") -> str:
    return f"\n[... {n} {unit} elided ...]\n"


def truncate_middle(text: str, max_chars: int) -> tuple[str, bool]:
    """Keep the head and tail halves of ``text`` with a marker between; (text, truncated)."""
    if len(text) <= max_chars:
        return text, False
    head = max_chars // 2
    tail = max_chars - head
    return text[:head] + elision_marker(len(text) - head - tail) + text[-tail:], True


# Extra bytes read past each cut so that a secret straddling the cut is still redacted whole.
_REDACT_MARGIN = 1024


def read_output(path: str | os.PathLike[str], max_chars: int, secrets: list[str]) -> tuple[str, bool]:
    """Read a (possibly huge) output file as head + tail, decoded as UTF-8 and redacted.
    Returns (text, truncated)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= 4 * max_chars + 4 * _REDACT_MARGIN:
            text = redact(f.read().decode("utf-8", errors="replace"), secrets)
            return truncate_middle(text, max_chars)
        head = max_chars // 2
        tail = max_chars - head
        head_win = f.read(4 * head + _REDACT_MARGIN).decode("utf-8", errors="replace")
        f.seek(size - (4 * tail + _REDACT_MARGIN))
        tail_win = f.read().decode("utf-8", errors="replace")
    head_kept_bytes = len(head_win[:head].encode("utf-8", errors="replace"))
    tail_kept_bytes = len(tail_win[-tail:].encode("utf-8", errors="replace"))
    head_text = redact(head_win, secrets)[:head]
    tail_text = redact(tail_win, secrets)[-tail:]
    elided = max(size - head_kept_bytes - tail_kept_bytes, 0)
    return head_text + elision_marker(elided, "bytes") + tail_text, True
