"""What the model's code may change: refused paths, a size cap, and secrets kept out of commits."""

from __future__ import annotations

import fnmatch
import os
import re

from agent.core.config import PolicyConfig

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.I)


def known_secrets() -> list[str]:
    """Values of this process's secret-looking environment variables (never given to the sandbox)."""
    return [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8]


def filter_changes(
    changes: dict[str, bytes | None], policy: PolicyConfig, allowed_prefixes: tuple[str, ...] = ()
) -> tuple[dict[str, bytes | None], list[str]]:
    """Split changes into (committed, refused-with-reason). Paths under ``allowed_prefixes`` (the
    step's own folder) pass the path rules but not the size cap."""
    keep: dict[str, bytes | None] = {}
    refused: list[str] = []
    cap = int(policy.max_file_mb * 1024 * 1024)
    for path, data in sorted(changes.items()):
        own = any(path.startswith(p) for p in allowed_prefixes)
        if not own and (path.startswith(".git/") or any(fnmatch.fnmatch(path, pat) for pat in policy.refused_paths)):
            refused.append(f"{path}: refused (path matches a protected pattern)")
            continue
        if data is not None and len(data) > cap:
            refused.append(f"{path}: refused ({len(data) / 1e6:.1f} MB is over the {policy.max_file_mb:g} MB cap)")
            continue
        keep[path] = redact_bytes(data) if data is not None else None
    return keep, refused


def redact_bytes(data: bytes) -> bytes:
    try:
        from agent.sandbox.backends import redact
    except ImportError:  # pragma: no cover
        return data
    secrets = known_secrets()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    red = redact(text, secrets)
    return red.encode("utf-8") if red != text else data


def _redact_obj(obj, secrets: list[str]):
    from agent.sandbox.backends import redact

    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, list):
        return [_redact_obj(x, secrets) for x in obj]
    if isinstance(obj, dict):
        return {k: _redact_obj(v, secrets) for k, v in obj.items()}
    return obj


def redact_jsonl(data: bytes) -> bytes:
    """JSON lines (turns.jsonl) with secrets redacted inside their strings, so every line stays
    valid JSON; a line that changes is written again, the others are kept byte for byte."""
    import json

    secrets = known_secrets()
    out = []
    for line in data.decode("utf-8", "replace").splitlines(keepends=True):
        try:
            obj = json.loads(line)
        except ValueError:
            out.append(redact_bytes(line.encode()).decode("utf-8", "replace"))
            continue
        red = _redact_obj(obj, secrets)
        out.append(line if red == obj else json.dumps(red, ensure_ascii=False) + "\n")
    return "".join(out).encode()


def redact_for_commit(path: str, data: bytes) -> bytes:
    """What a commit may hold of ``data`` at ``path``: secrets redacted, JSON kept valid (JSON
    and JSON-lines files are redacted string by string, other text as text; binary data as is)."""
    import json

    if path.endswith(".jsonl"):
        return redact_jsonl(data)
    if path.endswith(".json"):
        try:
            obj = json.loads(data)
        except ValueError:
            return redact_bytes(data)
        red = _redact_obj(obj, known_secrets())
        return data if red == obj else (json.dumps(red, indent=2, ensure_ascii=False) + "\n").encode()
    return redact_bytes(data)
