"""Find command-line tools installed with the test extra: next to the running interpreter
(a virtualenv's bin/, which need not be on PATH), else on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)
