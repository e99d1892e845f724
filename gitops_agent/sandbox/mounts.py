"""What bubblewrap shows the model's code: an allow-list, never the host's root.

* the system's programs and libraries, read-only: ``/usr`` and the ``/bin``, ``/sbin``, ``/lib*``
  links or directories beside it;
* a minimal ``/etc``: the loader's cache, time zones, certificates, fonts, MIME types, the
  ``alternatives`` links -- and a ``passwd``/``group`` written for the sandbox (no user list of
  the host);
* the interpreter: its installation prefixes and the site-packages it uses, read-only (never
  another directory on ``sys.path``: a checkout, a home directory);
* read-only data the caller adds (shared data sets, brain tools), the action's code file, a
  private size-capped ``/tmp`` (also ``HOME``) and ``/dev/shm``, a new ``/proc``, a minimal
  ``/dev``;
* the working tree, read-write.

Everything else does not exist inside: home directories, ``/run`` (the docker socket, mounted
secrets), ``/opt``, ``/var``, ``/mnt``, every runner's directory (``.credentials``, ``_diag``,
other jobs' workspaces and their ``.git/config``, ``event.json``, the job's file commands).
``hide_paths`` is still applied inside what is shown, as a second line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("gitops_agent.sandbox")

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "alternatives",
    "ssl",
    "pki",
    "ca-certificates",
    "ca-certificates.conf",
    "mime.types",
    "fonts",
    "os-release",
    "debian_version",
    "lsb-release",
    "protocols",
    "services",
    "hosts",
    "host.conf",
    "gai.conf",
    "nsswitch.conf",
    "locale.alias",
    "terminfo",
    "magic",
    "magic.mime",
    "matplotlibrc",
    "papersize",
)
NETWORK_ETC = ("resolv.conf",)


def _site_dir(p: str) -> bool:
    parts = Path(p).parts
    return "site-packages" in parts or "dist-packages" in parts


@lru_cache(maxsize=16)
def _interpreter_facts(python: str) -> tuple[str, ...]:
    """Prefixes and site directories of another interpreter (asked once, on the host). Run with
    -S: no `.pth` file of its site-packages runs here (any package may ship one, and this is
    the host); the directories a workbench's own `.pth` adds are read from it as text."""
    code = (
        "import sys, json, os, site\n"
        "root = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))\n"
        "venv = os.path.isfile(os.path.join(root, 'pyvenv.cfg'))\n"  # without site, sys.prefix is the base's
        "v = 'python%d.%d' % sys.version_info[:2]\n"
        "sp = [os.path.join(root, 'lib', v, 'site-packages')] if venv else site.getsitepackages()\n"
        "pth = [os.path.join(d, 'gitops-agent-workbench.pth') for d in sp]\n"
        "extra = [line.strip() for p in pth if os.path.isfile(p) for line in open(p) if line.strip()]\n"
        "print(json.dumps([root if venv else sys.prefix, sys.base_prefix, sys.exec_prefix] + sp + extra))"
    )
    try:
        out = subprocess.run(
            [python, "-I", "-S", "-c", code],
            capture_output=True,
            text=True,
            timeout=20,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        ).stdout
        items = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return ()
    return tuple(str(x) for x in items[:3]) + tuple(str(x) for x in items[3:] if x and _site_dir(str(x)))


def python_roots(python: str) -> list[str]:
    """Directories the interpreter needs: its installation prefixes (a virtualenv and the base
    installation it links to) and the site-packages directories in use."""
    roots: set[str] = set()
    for exe in {python, os.path.realpath(python)}:
        if os.path.isabs(exe):
            roots.add(os.path.dirname(os.path.dirname(os.path.abspath(exe))))  # <prefix>/bin/python -> <prefix>
    # the same path, not the same file: a virtualenv's python resolves to its base interpreter,
    # and another virtualenv on that base (the workbench) must not bring this one's packages
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        roots |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
        roots |= {p for p in sys.path if p and os.path.isdir(p) and _site_dir(p)}
    else:
        roots |= set(_interpreter_facts(python))
    return sorted({os.path.realpath(r) for r in roots if r and os.path.isdir(r)})


def unused_site_dirs(python: str) -> list[str]:
    """The base installation's site-packages when ``python`` is a virtualenv that does not use
    them: they are inside a prefix that is shown, and code could put them on its path and import
    whatever the machine has installed there (on a runner: SDKs, the agent itself)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    cfg = Path(root, "pyvenv.cfg")
    try:
        text = cfg.read_text(errors="replace").lower()
    except OSError:
        return []  # not a virtualenv: its site-packages are its own
    if "include-system-site-packages = true" in text.replace("\t", " "):
        return []
    used = set(python_roots(python))
    base = [r for r in used if not _site_dir(r) and os.path.realpath(r) != os.path.realpath(root)]
    found = []
    # the base's own, and a Debian system's (apt's and `sudo pip`'s, under the /usr shown anyway)
    for prefix in [*base, "/usr", "/usr/local"]:
        for lib in ("lib", "lib64"):
            for pattern in ("python3*/site-packages", "python3*/dist-packages", "python3/dist-packages"):
                for d in Path(prefix, lib).glob(pattern):
                    real = os.path.realpath(d)
                    if d.is_dir() and real not in used:
                        found.append(real)
    return sorted(set(found))


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return root == "/" or path == root or path.startswith(root + "/")


def _protected(environ: dict[str, str] | None = None) -> list[str]:
    """Places a mounted root must never contain: home directories and the runner's own places."""
    e = os.environ if environ is None else environ
    out = ["/home", "/root", "/run", "/var/run"]
    if e.get("HOME"):
        out.append(e["HOME"])
    for var in (
        "RUNNER_TEMP",
        "RUNNER_WORKSPACE",
        "GITHUB_WORKSPACE",
        "GITHUB_EVENT_PATH",
        "GITHUB_ENV",
        "GITHUB_OUTPUT",
        "GITHUB_PATH",
        "GITHUB_STEP_SUMMARY",
        "RUNNER_TOOL_CACHE",
    ):
        v = e.get(var)
        if v and os.path.isabs(v):
            out.append(v)
            parts = Path(v).parts
            if "_work" in parts:  # the runner's own directory: .credentials, .runner, _diag
                out.append(str(Path(*parts[: parts.index("_work")])))
    return sorted({os.path.realpath(p) for p in out})


def safe_roots(roots: list[str], environ: dict[str, str] | None = None) -> list[str]:
    """``roots`` minus any that is ``/`` or holds a protected place (a virtualenv that would
    show its user's home), each dropped with a warning; nested ones folded into their parent."""
    prot = _protected(environ)
    keep = []
    for r in sorted(set(roots)):
        bad = [p for p in prot if _inside(p, r) and p != r] + (["/"] if r == "/" else [])
        if bad or r in ("/home", "/root"):
            log.warning(
                "sandbox: not showing %s to the model's code (it holds %s); the interpreter may lack files",
                r,
                ", ".join(bad) or r,
            )
            continue
        keep.append(r)
    return [r for r in keep if not any(r != q and _inside(r, q) for q in keep)]


def system_args() -> list[str]:
    """The read-only system: /usr, and /bin, /sbin, /lib* as the links or directories they are."""
    args: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return args


def etc_args(run_dir: Path, network: bool) -> list[str]:
    """A minimal /etc with a passwd and group of the sandbox's own."""
    etc = run_dir / "etc"
    etc.mkdir(exist_ok=True)
    uid, gid = os.getuid(), os.getgid()
    users = "root:x:0:0:root:/root:/bin/sh\n" + (f"sandbox:x:{uid}:{gid}:sandbox:/tmp/home:/bin/sh\n" if uid else "")
    (etc / "passwd").write_text(users)
    (etc / "group").write_text("root:x:0:\n" + (f"sandbox:x:{gid}:\n" if gid else ""))
    args = ["--dir", "/etc", "--ro-bind", str(etc / "passwd"), "/etc/passwd", "--ro-bind", str(etc / "group"), "/etc/group"]
    for name in ETC_ENTRIES + (NETWORK_ETC if network else ()):
        p = f"/etc/{name}"
        if os.path.lexists(p) and os.path.exists(p):
            args += ["--ro-bind", p, p]
    return args


def hide_args(hide_paths: list[str], shown: list[str], has_perms: bool) -> list[str]:
    """``hide_paths`` that lie inside something shown, covered: directories by an empty
    read-only tmpfs, files by /dev/null."""
    args: list[str] = []
    for p in sorted({os.path.realpath(h) for h in hide_paths if os.path.isabs(h)}):
        if not os.path.lexists(p) or not any(_inside(p, s) and p != s for s in shown):
            continue
        if os.path.isdir(p):
            args += (["--perms", "0555"] if has_perms else []) + ["--tmpfs", p]
        else:
            args += ["--ro-bind", "/dev/null", p]
    return args
