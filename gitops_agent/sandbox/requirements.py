"""Hashed requirements files: the workbench's own lock and a repository's `sandbox.requirements`.

Only what `uv pip compile --generate-hashes` writes is accepted: ``name==version`` (an optional
environment marker after ``;``) followed by its ``--hash=sha256:…`` lines, and comments. Anything
else -- an unpinned name, a range, a URL or path, extras, an option line (``-r``, ``-e``,
``--index-url``, ``--find-links``…) -- is refused naming the file and the line: such a file could
install something nobody reviewed, from somewhere nobody chose. What reaches the installer is
rebuilt from the parsed pins, never the file's own text.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from gitops_agent.core.errors import UsageError

MAX_FILE_BYTES = 1_000_000  # a lock of a few hundred packages is well under this
MAX_PINS = 500

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_PIN = re.compile(rf"^(?P<name>{_NAME})\s*==\s*(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)\s*(?:;\s*(?P<marker>[^\\]+?))?$")
_HASH = re.compile(r"^--hash=sha256:(?P<hex>[0-9a-f]{64})$")
# markers hold only what PEP 508 markers are made of: no backslash, no newline, no option
_MARKER = re.compile(r"^[A-Za-z0-9_.'\"<>=!~ ()*,-]+$")


class RequirementsError(UsageError):
    """A requirements file the workbench will not install, with the file and the line (the
    user's input is wrong: exit 2)."""


class Pin(BaseModel):
    name: str = Field(description="The normalised distribution name (PEP 503).")
    version: str
    marker: str | None = Field(None, description="The environment marker, as written (uv evaluates it).")
    hashes: list[str] = Field(description="sha256 of every file the install may use.")
    line: int = Field(description="Where the pin starts in its file (1-based).")

    def as_text(self) -> str:
        head = f"{self.name}=={self.version}" + (f" ; {self.marker}" if self.marker else "")
        return " \\\n".join([head] + [f"    --hash=sha256:{h}" for h in self.hashes]) + "\n"


class LockFile(BaseModel):
    source: str = Field(description="Where the file came from, as the user knows it (a path in the repository).")
    pins: list[Pin]

    def names(self) -> list[str]:
        return list(dict.fromkeys(p.name for p in self.pins))

    def as_text(self) -> str:
        return f"# {self.source}\n" + "".join(p.as_text() for p in self.pins)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: comments dropped, continuations joined."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        cont = line.endswith("\\")
        line = line[:-1].strip() if cont else line.strip()
        if pending is not None:
            pending = (pending[0], f"{pending[1]} {line}".strip())
        elif line:
            pending = (no, line)
        if not cont and pending is not None:
            out.append(pending)
            pending = None
    if pending is not None:
        out.append(pending)
    return out


def _pin(source: str, no: int, line: str) -> Pin:
    head, *hashes = re.split(r"\s+(?=--)", line)
    where = f"{source}, line {no}"
    if head.startswith("-"):
        raise RequirementsError(
            f"{where}: {head.split()[0]!r} is not allowed; only name==version lines with --hash=sha256:… "
            "(make the file with `uv pip compile --generate-hashes`)"
        )
    m = _PIN.match(head)
    if not m:
        what = "is not pinned with ==" if "==" not in head else "is not name==version"
        if "@" in head or "/" in head or "[" in head:
            what = "names a URL, a path or extras"
        raise RequirementsError(
            f"{where}: {head[:80]!r} {what}; every package must be pinned, e.g. pandas==2.2.3 with its "
            "--hash=sha256:… lines (`uv pip compile --generate-hashes`)"
        )
    marker = (m.group("marker") or "").strip() or None
    if marker and not _MARKER.match(marker):
        raise RequirementsError(f"{where}: the environment marker {marker[:80]!r} has characters a marker never has")
    found = []
    for h in hashes:
        hm = _HASH.match(h.strip())
        if not hm:
            raise RequirementsError(f"{where}: {h.strip()[:80]!r} is not allowed; only --hash=sha256:<64 hex digits>")
        found.append(hm.group("hex"))
    if not found:
        raise RequirementsError(
            f"{where}: {m.group('name')}=={m.group('version')} has no --hash=sha256:…; the workbench installs only "
            "files whose hashes the repository names (`uv pip compile --generate-hashes`)"
        )
    return Pin(name=normalise(m.group("name")), version=m.group("version"), marker=marker, hashes=found, line=no)


def parse_lock(text: str | bytes, source: str) -> LockFile:
    """The pins of a hashed requirements file; RequirementsError naming ``source`` and the line."""
    if isinstance(text, bytes):
        if len(text) > MAX_FILE_BYTES:
            raise RequirementsError(f"{source}: {len(text)} bytes; a requirements file may have {MAX_FILE_BYTES}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequirementsError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    pins = [_pin(source, no, line) for no, line in _logical_lines(text)]
    if not pins:
        raise RequirementsError(f"{source}: no packages in it")
    if len(pins) > MAX_PINS:
        raise RequirementsError(f"{source}: {len(pins)} packages; the workbench takes at most {MAX_PINS}")
    return LockFile(source=source, pins=pins)


def additions(extra: LockFile, installed: dict[str, str]) -> LockFile | None:
    """The pins of a repository's lock that the workbench does not have yet (None: nothing to
    add). ``installed`` is what the workbench's own lock put in for this interpreter: a package
    the repository pins at that version is already there; at another version it is refused,
    naming the line (the two could not both be imported)."""
    keep: list[Pin] = []
    for p in extra.pins:
        have = installed.get(p.name)
        if have is not None and have == p.version:
            continue
        if have is not None and not p.marker:
            raise RequirementsError(
                f"{extra.source}, line {p.line}: {p.name}=={p.version}, but the workbench has {p.name}=={have}; "
                "compile your file against it: `gitops-agent workbench --lock > workbench.txt`, then "
                "`uv pip compile --generate-hashes -c workbench.txt requirements.in`"
            )
        keep.append(p)
    return LockFile(source=extra.source, pins=keep) if keep else None
