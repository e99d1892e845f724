"""What the model's code may change: refused paths, a size cap, and secrets kept out of commits."""

from __future__ import annotations

import fnmatch
import os
import re

from .config import PolicyConfig

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
        from .sandbox import redact
    except ImportError:  # pragma: no cover
        return data
    secrets = known_secrets()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    red = redact(text, secrets)
    return red.encode("utf-8") if red != text else data
