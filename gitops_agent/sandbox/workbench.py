"""The workbench: the interpreter the model's code runs with, and exactly the packages declared
for it -- the data stack pinned in ``requirements/workbench.txt``, plus a repository's own
hashed ``sandbox.requirements`` -- separate from the agent's environment, so the agent's code
and its SDKs are not importable there.

One virtualenv per combined lock and interpreter, under the cache (the runner's tool cache on
GitHub, the user's cache directory locally), shared by every job and task on the machine. It is
built by uv (pip when there is no uv), wheels only, every file checked against its hash; built
under a lock so parallel jobs build it once; checked before each use (its record, each
package's metadata, the interpreter answering) and rebuilt when broken. The sandboxes mount it
read-only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from gitops_agent.core.errors import SandboxError
from gitops_agent.sandbox.installer import run_tool, uv_binary, uv_env
from gitops_agent.sandbox.requirements import LockFile, RequirementsError, additions, normalise, parse_lock

FORMAT = 3  # bump when the layout of a workbench changes: every cached one is then rebuilt
RECORD = ".gitops-agent-workbench.json"
INSTALL_TIMEOUT_S = 900
PRUNE_AFTER_S = 7 * 86400
LOCK_WAIT_S = 1200  # another job building the same workbench: wait for it rather than build twice


class WorkbenchError(SandboxError):
    """The workbench could not be built or used; the message says what was tried."""


class Workbench(BaseModel):
    root: str = Field(description="The virtualenv's directory.")
    python: str = Field(description="Its interpreter: what run_python runs.")
    key: str = Field(description="Hash of the combined lock and the interpreter: the directory's name.")
    packages: dict[str, str] = Field(description="Every distribution in it, normalised name -> version.")
    offered: list[str] = Field(description="The packages the model is told about (the declared ones, not their dependencies).")
    extra: str | None = Field(None, description="The repository's requirements file, when one was added.")
    built_s: float | None = Field(None, description="Seconds spent building it now; None when it was ready.")

    def listing(self) -> list[str]:
        """``name version`` of each offered package, for the executor's prompt."""
        return [f"{n} {self.packages[n]}" for n in self.offered if n in self.packages]


def requirements_dir() -> Path:
    """requirements/: beside the package in a source checkout (the action), inside it when installed."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "requirements", here / "_requirements"):
        if (candidate / "workbench.txt").is_file():
            return candidate
    raise WorkbenchError(f"cannot find requirements/workbench.txt next to {here}")


@lru_cache(maxsize=1)
def default_lock() -> LockFile:
    return parse_lock((requirements_dir() / "workbench.txt").read_bytes(), "requirements/workbench.txt")


@lru_cache(maxsize=1)
def default_offered() -> tuple[str, ...]:
    """The packages asked for in requirements/workbench.in (their dependencies come along)."""
    lines = (requirements_dir() / "workbench.in").read_text().splitlines()
    return tuple(normalise(x.split("#")[0].strip()) for x in lines if x.split("#")[0].strip())


def cache_base(environ: dict[str, str] | None = None) -> Path:
    """Where workbenches live: $GITOPS_AGENT_CACHE, else the runner's tool cache, else the
    user's cache directory."""
    e = os.environ if environ is None else environ
    if e.get("GITOPS_AGENT_CACHE"):
        return Path(e["GITOPS_AGENT_CACHE"])
    if e.get("RUNNER_TOOL_CACHE"):
        return Path(e["RUNNER_TOOL_CACHE"]) / "gitops-agent"
    xdg = e.get("XDG_CACHE_HOME") or str(Path(e.get("HOME") or Path.home()) / ".cache")
    return Path(xdg) / "gitops-agent"


# The host starts a workbench's interpreter only with -I -S (no site: a `.pth` file any installed
# package may carry never runs here) and with no credential in its environment.
_BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_TAG = (
    "import sys, os, platform; print(sys.implementation.name, sys.version, os.path.realpath(sys.base_prefix), platform.machine())"
)


def _interpreter_tag(python: str) -> str:
    """What a virtualenv depends on in its interpreter: version, build and where it lives."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return " ".join([sys.implementation.name, sys.version, os.path.realpath(sys.base_prefix), platform.machine()])
    r = subprocess.run(
        [python, "-I", "-S", "-c", _TAG], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=_BARE_ENV
    )
    if r.returncode != 0:
        raise WorkbenchError(f"the interpreter {python} does not start: {r.stderr.strip()[-300:]}")
    return r.stdout.strip()


def _key(text: str, python: str) -> str:
    return hashlib.sha256(f"{FORMAT}\n{_interpreter_tag(python)}\n{text}".encode()).hexdigest()[:16]


def _site_packages(root: Path) -> list[Path]:
    return sorted(root.glob("lib/python*/site-packages"))


def _on_disk(root: Path) -> dict[str, str]:
    """name -> version of each distribution whose metadata is in the environment."""
    found: dict[str, str] = {}
    for site in _site_packages(root):
        for d in site.glob("*.dist-info"):
            name, _, version = d.name.removesuffix(".dist-info").rpartition("-")
            if name and (d / "METADATA").is_file():
                found[normalise(name)] = version
    return found


def _ready(root: Path, key: str) -> dict | None:
    """The record of a usable workbench at ``root``, or None (absent, half-made or broken)."""
    try:
        rec = json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        return None
    python = root / "bin" / "python"
    if not isinstance(rec, dict) or rec.get("key") != key or not os.access(python, os.X_OK):
        return None
    if _on_disk(root) != rec.get("packages"):  # a package removed or changed since it was built
        return None
    try:
        ok = subprocess.run(
            [str(python), "-I", "-S", "-c", ""], timeout=30, stdin=subprocess.DEVNULL, capture_output=True, env=_BARE_ENV
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rec if ok.returncode == 0 else None


@contextlib.contextmanager
def _locked(path: Path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WorkbenchError(
                        f"another process has been building the workbench for {LOCK_WAIT_S} s ({path})"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _install(req: Path, root: Path, python: str) -> None:
    """A new virtualenv at ``root`` with exactly the pins of ``req``: wheels only (no package's
    build script runs here), every file's hash checked, no dependency added."""
    env, uv = uv_env(), uv_binary()
    if uv:
        steps = [
            [uv, "venv", "-q", "--python", python, str(root)],
            [uv, "pip", "install", "-q", "--python", str(root / "bin" / "python"), "--require-hashes", "--no-deps"]
            + ["--no-build", "-r", str(req)],
        ]
    else:
        steps = [
            [python, "-I", "-m", "venv", str(root)],
            [str(root / "bin" / "python"), "-I", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            + ["--require-hashes", "--no-deps", "--only-binary", ":all:", "-r", str(req)],
        ]
    for argv in steps:
        rc, out = run_tool(argv, env=env, timeout=INSTALL_TIMEOUT_S, errors_first=True)
        if rc != 0:
            tool = "uv" if uv else "pip"
            raise WorkbenchError(f"{tool} failed ({' '.join(argv[1:3])}): {' '.join(out.splitlines()[-4:])[:600]}")
    # bytecode now: the sandbox mounts the workbench read-only, so an import could never cache it
    # (pandas and matplotlib then import in 1 s, not 3.5 s, in every action). The packages' own
    # test suites are left out: half the files, never imported. A file that does not compile is
    # only slower to import (compileall's exit code is ignored).
    for site in _site_packages(root):
        run_tool(
            [str(root / "bin" / "python"), "-I", "-S", "-m", "compileall", "-q", "-j", "0", "-x", r"[/\\]tests?[/\\]", str(site)],
            env=env,
            timeout=INSTALL_TIMEOUT_S,
        )


def _build(text: str, key: str, base: Path, python: str, under: Path | None = None) -> tuple[dict, float | None]:
    """The workbench ``key`` (``text`` installed), built now unless it is ready. ``under``: a
    workbench whose packages this one sees after its own (a repository's additions layered on
    the default set, which is installed and compiled once for all of them)."""
    root = base / f"workbench-{key}"
    rec = _ready(root, key)
    if rec is not None:
        os.utime(root / RECORD)  # in use: not pruned as stale
        return rec, None
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / f".workbench-{key}.lock"):
        rec = _ready(root, key)  # built by the process we waited for
        if rec is not None:
            return rec, None
        t0 = time.monotonic()
        shutil.rmtree(root, ignore_errors=True)  # half-made or broken: rebuilt from nothing
        req = base / f".workbench-{key}.txt"
        req.write_text(text)
        try:
            _install(req, root, python)
            if under is not None:
                (_site_packages(root)[0] / "gitops-agent-workbench.pth").write_text(
                    "".join(f"{p}\n" for p in _site_packages(under))
                )
        except WorkbenchError:
            shutil.rmtree(root, ignore_errors=True)
            raise
        rec = {"key": key, "format": FORMAT, "packages": _on_disk(root), "python": _interpreter_tag(python)}
        (root / RECORD).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        _prune(base, keep=root)
        return rec, round(time.monotonic() - t0, 2)


def _prune(base: Path, keep: Path) -> None:
    """Workbenches nobody used for a week go: a self-hosted runner's disk fills up otherwise (a
    lock per repository's requirements, per Python). One in use is touched at every use."""
    for old in base.glob("workbench-*"):
        rec = old / RECORD
        try:
            stale = old != keep and time.time() - rec.stat().st_mtime > PRUNE_AFTER_S
        except OSError:
            continue  # no record: being built now, or half-made (rebuilt when next asked for)
        if stale:
            shutil.rmtree(old, ignore_errors=True)
            for f in (base / f".workbench-{old.name.removeprefix('workbench-')}.txt",):
                f.unlink(missing_ok=True)


def ensure_workbench(extra: LockFile | None = None, *, python: str | None = None, base: Path | None = None) -> Workbench:
    """The workbench for ``extra`` (a repository's hashed requirements, or None: the default
    set), built if it is not ready. Raises WorkbenchError (the install failed: the message says
    what was tried) or RequirementsError (the repository's file conflicts with the default set)."""
    python = python or sys.executable
    base = base or cache_base()
    lock = default_lock()
    default_text = lock.as_text()
    rec, built = _build(default_text, _key(default_text, python), base, python)
    offered = list(default_offered())
    if extra is None:
        root = base / f"workbench-{rec['key']}"
        return Workbench(root=str(root), python=str(root / "bin" / "python"), key=rec["key"], packages=rec["packages"],
                         offered=offered, built_s=built)  # fmt: skip
    add = additions(extra, rec["packages"])
    offered += [n for n in extra.names() if n not in offered]
    under = base / f"workbench-{rec['key']}"
    if add is None:  # everything it names is in the default set already
        return Workbench(root=str(under), python=str(under / "bin" / "python"), key=rec["key"], packages=rec["packages"],
                         offered=offered, extra=extra.source, built_s=built)  # fmt: skip
    text = add.as_text()
    try:
        rec2, built2 = _build(text, _key(default_text + text, python), base, python, under=under)
    except WorkbenchError as e:
        raise RequirementsError(f"{extra.source}: the workbench with these packages could not be installed: {e}") from None
    root = base / f"workbench-{rec2['key']}"
    total = None if built is None and built2 is None else (built or 0) + (built2 or 0)
    return Workbench(root=str(root), python=str(root / "bin" / "python"), key=rec2["key"],
                     packages={**rec["packages"], **rec2["packages"]}, offered=offered, extra=extra.source,
                     built_s=total)  # fmt: skip


def default_status(python: str | None = None, base: Path | None = None) -> tuple[Path, dict | None]:
    """(where the default workbench is, its record when it is ready there): built by nothing."""
    python = python or sys.executable
    text = default_lock().as_text()
    key = _key(text, python)
    root = (base or cache_base()) / f"workbench-{key}"
    return root, _ready(root, key)


def is_workbench(python: str) -> bool:
    """Whether ``python`` is a workbench's interpreter (its record beside it)."""
    return (Path(python).parent.parent / RECORD).is_file()
