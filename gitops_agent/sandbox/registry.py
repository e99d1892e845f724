"""The sandbox backends by name. A backend is a ProcessSandbox subclass with a ``name``
(gitops_agent/sandbox/base.py registers it here as its class is defined); its module is found by
importing the package's modules, so declaring the class is all a new backend takes."""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Any

BACKENDS: dict[str, Any] = {}


@lru_cache(maxsize=1)
def backends() -> dict[str, Any]:
    """Every backend by name, in the order ``auto`` prefers them (lowest ``preference`` first)."""
    import gitops_agent.sandbox as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    return dict(sorted(BACKENDS.items(), key=lambda kv: kv[1].preference))
