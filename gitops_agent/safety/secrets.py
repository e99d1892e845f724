"""Secrets kept out of everything the agent writes or posts: observations, commits, comments,
pull requests and job logs.

Defence in depth: the model's code never gets a credential (the sandbox), so nothing here should
ever find one. If it does, the value is masked in its plain form and in the encodings code uses
to smuggle it: reversed, hex (either case), URL-encoded, base64 (standard and URL-safe, at all
three byte alignments, so a secret inside a longer encoded text is found too), and any of these
with separators between the characters (spaces, dashes, line breaks: ``s k - a n t``), plus
common token shapes (GitHub, Anthropic, OpenAI, AWS, Slack, PEM keys) nobody declared.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import urllib.parse
from functools import lru_cache

REDACTED = "[REDACTED]"
SECRET_NAME_RE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET = 8
# Up to this many separator characters may stand between two characters of a secret.
_SEP = r"[\s\-_.,:;|/\\'\"+*]{0,3}"
# Texts longer than this are searched for the exact forms only (the separator-tolerant search
# costs more per character); commits of big data files stay fast.
FUZZY_LIMIT = 1 << 20

_TOKEN_PATTERNS: list[re.Pattern[str]] = [
    # PEM private keys (a block cut off by truncation is masked to the end of the text).
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL),
    re.compile(r"github_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"(?<![A-Za-z0-9])sk-ant-[A-Za-z0-9_\-]{10,}"),
    re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
]


def process_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """Values (8+ characters) of this process's variables whose names look like credentials
    (API keys, tokens, passwords): what the agent holds and the model's code never gets."""
    environ = os.environ if environ is None else environ
    return [v for k, v in environ.items() if SECRET_NAME_RE.search(k) and len(v) >= MIN_SECRET]


def _b64_cores(raw: bytes) -> list[str]:
    """The parts of base64(x + raw + y) that depend on ``raw`` alone, for each alignment of
    ``raw`` in the encoded stream (0, 1 or 2 bytes before it), standard and URL-safe."""
    out = []
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw + b"\0\0\0").decode()
        first = (k + 2) // 3  # the first 3-byte group holding only bytes of raw
        last = (k + len(raw)) // 3  # one past the last such group
        core = enc[4 * first : 4 * last]
        if len(core) >= 12:
            out += [core, core.translate(str.maketrans("+/", "-_"))]
    return out


def encoded_forms(secret: str) -> list[str]:
    """The secret and the encodings of it that redaction looks for."""
    raw = secret.encode("utf-8", "surrogateescape")
    forms = {
        secret,
        secret[::-1],
        raw.hex(),
        raw.hex().upper(),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
    }
    forms.update(_b64_cores(raw))
    forms.update(_b64_cores(raw[::-1]))
    return sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True)


def _spaced(form: str) -> str:
    return _SEP.join(re.escape(c) for c in form)


class Redactor:
    """Masks a fixed set of secrets (in every form of ``encoded_forms``) and token shapes."""

    def __init__(self, secrets: list[str] | tuple[str, ...]):
        self.secrets = tuple(sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True))
        forms: list[str] = []
        for s in self.secrets:
            forms += encoded_forms(s)
        self.forms = sorted(set(forms), key=len, reverse=True)
        self._exact = re.compile("|".join(re.escape(f) for f in self.forms)) if self.forms else None
        self._fuzzy = re.compile("|".join(_spaced(f) for f in self.forms), re.IGNORECASE) if self.forms else None

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._exact is not None:
            text = self._exact.sub(REDACTED, text)
            if len(text) <= FUZZY_LIMIT:
                text = self._fuzzy.sub(REDACTED, text)
        for pat in _TOKEN_PATTERNS:
            text = pat.sub(REDACTED, text)
        return text


_cache_lock = threading.Lock()


@lru_cache(maxsize=32)
def _redactor(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redact(text: str, secrets: list[str] | tuple[str, ...] | None = None) -> str:
    """``text`` with ``secrets`` (default: this process's, see ``process_secrets``) masked in
    every form redaction knows, and common token shapes masked."""
    secrets = process_secrets() if secrets is None else secrets
    key = tuple(sorted({s for s in secrets if s and len(s) >= MIN_SECRET}))
    with _cache_lock:
        r = _redactor(key)
    return r(text)


def redact_bytes(data: bytes, secrets: list[str] | None = None) -> bytes:
    """Text data redacted (as UTF-8); binary data as it is."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    red = redact(text, secrets)
    return red.encode("utf-8") if red != text else data


def _redact_obj(obj, secrets: list[str]):
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, list):
        return [_redact_obj(x, secrets) for x in obj]
    if isinstance(obj, dict):
        return {k: _redact_obj(v, secrets) for k, v in obj.items()}
    return obj


def redact_jsonl(data: bytes, secrets: list[str] | None = None) -> bytes:
    """JSON lines (turns.jsonl) with secrets redacted inside their strings, so every line stays
    valid JSON; a line that changes is written again, the others are kept byte for byte."""
    secrets = process_secrets() if secrets is None else secrets
    out = []
    for line in data.decode("utf-8", "replace").splitlines(keepends=True):
        try:
            obj = json.loads(line)
        except ValueError:
            out.append(redact_bytes(line.encode(), secrets).decode("utf-8", "replace"))
            continue
        red = _redact_obj(obj, secrets)
        out.append(line if red == obj else json.dumps(red, ensure_ascii=False) + "\n")
    return "".join(out).encode()


def redact_for_commit(path: str, data: bytes) -> bytes:
    """What a commit may hold of ``data`` at ``path``: secrets redacted, JSON kept valid (JSON
    and JSON-lines files are redacted string by string, other text as text; binary data as is)."""
    secrets = process_secrets()
    if path.endswith(".jsonl"):
        return redact_jsonl(data, secrets)
    if path.endswith(".json"):
        try:
            obj = json.loads(data)
        except ValueError:
            return redact_bytes(data, secrets)
        red = _redact_obj(obj, secrets)
        return data if red == obj else (json.dumps(red, indent=2, ensure_ascii=False) + "\n").encode()
    return redact_bytes(data, secrets)
