#!/usr/bin/env python
"""The action's lock: what `action.yml` installs, pinned, with the hashes of every file of every
platform (uv resolves it for all of them, Python 3.10 and up).

    python tools/lock.py            # write requirements/action.txt and requirements/uv.txt (needs uv and the index)
    python tools/lock.py --check    # the lock still satisfies pyproject.toml; every pin has hashes (offline)

Change a dependency in pyproject.toml, run the first command, commit both files: the lock is
part of the release, and the action's tool-cache key is its hash.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "action.txt"
UV_LOCK = ROOT / "requirements" / "uv.txt"
UV_VERSION = "0.13.9"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)(\s*;\s*([^\\]+?))?\s*\\?$")


def pins(text: str) -> list[tuple[str, str, str | None, list[str]]]:
    """(name, version, marker, hashes) of each pin of a `uv pip compile --generate-hashes` file."""
    out: list[tuple[str, str, str | None, list[str]]] = []
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            out.append((m.group(1).lower().replace("_", "-"), m.group(2), m.group(4), []))
        elif line.strip().startswith("--hash=sha256:") and out:
            out[-1][3].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
    return out


def problems() -> list[str]:
    """What is wrong with the lock against pyproject.toml (an empty list: nothing)."""
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.version import Version

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    locked = pins(LOCK.read_text())
    bad = [f"{n}=={v}: no --hash" for n, v, _m, h in locked if not h]
    bad += [f"{n}=={v}: a hash is not 64 hex digits" for n, v, _m, h in locked for x in h if not re.fullmatch(r"[0-9a-f]{64}", x)]
    for dep in deps:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        mine = [(v, m) for n, v, m, _h in locked if n == name]
        if not mine:
            bad.append(f"{dep}: not in {LOCK.name}")
            continue
        for v, m in mine:
            # each Python the action supports gets a version the dependency accepts
            for py in ("3.10", "3.11", "3.12", "3.13"):
                if m and not Marker(m).evaluate({"python_version": py, "python_full_version": py + ".0"}):
                    continue
                if not req.specifier.contains(Version(v), prereleases=True):
                    bad.append(f"{dep}: locked at {v}, outside what pyproject.toml asks")
    uv = pins(UV_LOCK.read_text())
    if [(n, v) for n, v, _m, _h in uv] != [("uv", UV_VERSION)] or not uv[0][3]:
        bad.append(f"{UV_LOCK.name} must pin uv=={UV_VERSION} with its hashes")
    return bad


def write() -> None:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    common = ["--universal", "--generate-hashes", "--no-header", "--quiet"]
    subprocess.run(
        [uv, "pip", "compile", str(ROOT / "pyproject.toml"), "--python-version", "3.10", *common, "-o", str(LOCK)], check=True
    )
    with tempfile.NamedTemporaryFile("w", suffix=".in") as f:
        f.write(f"uv=={UV_VERSION}\n")
        f.flush()
        subprocess.run([uv, "pip", "compile", f.name, *common, "-o", str(UV_LOCK)], check=True)
        text = UV_LOCK.read_text().replace(f.name, "tools/lock.py")
        UV_LOCK.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="check the lock against pyproject.toml; write nothing")
    args = ap.parse_args()
    if not args.check:
        write()
    bad = problems()
    for b in bad:
        print(f"lock: {b}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
