"""Charts: the PNG and JPEG files an executor's code left in its step folder, shown with the answer
-- in report.md (a relative link), the pull request body and the answer comment (the repository's
own file at the task branch's commit), the HTML trace (embedded as a data: URI) and `show` (named).

This module is the one place that decides which files of a task are charts: only the latest step
of each node counts (an earlier run of a node is history, not the answer); a file is a chart when
its name says PNG or JPEG *and* its first bytes agree (an HTML page named chart.png is not one:
a browser sniffing it, or a renderer trusting the name, would be fooled); and there are at most
MAX_CHARTS of at most MAX_CHART_BYTES each. Whatever is left out is said, in every place.
No SVG: it is a document that can hold script and links, not a picture.
"""

from __future__ import annotations

import base64
from typing import Any, Iterable, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gitops_agent.core.state import step_dirname, task_dir
from gitops_agent.safety.text import DEFAULT_IMAGE_HOSTS, OwnImages, inline_text, outbound

# A matplotlib figure at 100-200 dpi is 20-150 KB; 1 MiB leaves room for a dense one while a page
# that embeds six of them (base64: +33%) stays under 10 MB and a reader's PR view loads quickly.
MAX_CHART_BYTES = 1 << 20
# An answer with more charts than this is a gallery, not an answer: a reviewer scrolls past the
# rest. The files stay committed in their step folders either way.
MAX_CHARTS = 6
# How many of the left-out files a note names (the rest are counted).
_NAMED = 10

_KINDS: dict[str, Literal["png", "jpeg"]] = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


def image_kind(data: bytes) -> Literal["png", "jpeg"] | None:
    """What ``data`` is by its magic bytes: a PNG (signature, then the IHDR chunk), a JPEG (SOI
    marker, then another marker), or neither."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


class Chart(BaseModel):
    """One chart shown with the answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str = Field(description="In the repository: .agent/tasks/<id>/steps/<seq>-<node>/<file>.")
    rel: str = Field(description="From the task folder (report.md's): steps/<seq>-<node>/<file>.")
    node: str
    kind: Literal["png", "jpeg"]
    size: int
    data: bytes = Field(repr=False, exclude=True)

    @model_validator(mode="after")
    def _bytes_say_so(self) -> "Chart":
        # a chart is made only of bytes that are what its kind says: the page embeds them as that type
        if image_kind(self.data) != self.kind:
            raise ValueError(f"{self.path}: not a {self.kind.upper()} file")
        return self

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]

    def data_uri(self) -> str:
        """The image inside a page (its kind was checked against its bytes when it was made)."""
        return f"data:image/{self.kind};base64,{base64.b64encode(self.data).decode()}"


class Charts(BaseModel):
    """A task's charts: those shown, in step order, and a line for each file (or group) left out."""

    model_config = ConfigDict(extra="forbid")
    shown: list[Chart] = Field(default_factory=list)
    left_out: list[str] = Field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.shown or self.left_out)


def _candidates(task_id: str, steps: Iterable[Any]) -> list[tuple[str, str]]:
    """(path, node) of every file with an image name in the step folder of each node's latest
    executor step. ``steps``: StepRecords or TraceSteps (seq, role, node, artifacts)."""
    latest: dict[str, Any] = {}
    for s in steps:
        if s.role == "executor" and s.node and (s.node not in latest or s.seq > latest[s.node].seq):
            latest[s.node] = s
    out = []
    for s in sorted(latest.values(), key=lambda s: s.seq):
        folder = f"{task_dir(task_id)}/steps/{step_dirname(s.seq, s.node)}/"
        for p in sorted(s.artifacts):
            if p.startswith(folder) and "." in p and "." + p.rsplit(".", 1)[-1].lower() in _KINDS:
                out.append((p, s.node))
    return out


def _why_not(path: str, data: bytes | None) -> str | None:
    """Why the file at ``path`` is not shown, or None when it is a chart."""
    want = _KINDS["." + path.rsplit(".", 1)[-1].lower()]
    if data is None:
        return "not in the branch"
    if image_kind(data) != want:
        return f"not a {want.upper()} file (its first bytes say otherwise)"
    if len(data) > MAX_CHART_BYTES:
        return f"{len(data) / 2**20:.1f} MiB, over the {MAX_CHART_BYTES / 2**20:g} MiB limit"
    return None


def find_charts(git: Any, tip: str, task_id: str, steps: Iterable[Any]) -> Charts:
    """The charts of a task at ``tip``, checked and capped (see the module docstring). Files are
    read a few at a time, and no more once MAX_CHARTS are found."""
    root = task_dir(task_id) + "/"
    found = Charts()
    todo = _candidates(task_id, steps)
    while todo and len(found.shown) < MAX_CHARTS:
        batch, todo = todo[:MAX_CHARTS], todo[MAX_CHARTS:]
        blobs = git.read_files(tip, [p for p, _ in batch])
        for i, (path, node) in enumerate(batch):
            if len(found.shown) == MAX_CHARTS:
                todo = batch[i:] + todo
                break
            data = blobs.get(path)
            why = _why_not(path, data)
            if why:
                found.left_out.append(f"{path.removeprefix(root)} not shown: {why}")
                continue
            assert data is not None
            kind = image_kind(data)
            assert kind is not None
            found.shown.append(Chart(path=path, rel=path.removeprefix(root), node=node, kind=kind, size=len(data), data=data))
    if todo:
        names = ", ".join(p.removeprefix(root) for p, _ in todo[:_NAMED]) + (", …" if len(todo) > _NAMED else "")
        found.left_out.append(
            f"{len(todo)} more chart{'s' if len(todo) > 1 else ''} not shown (at most {MAX_CHARTS} per answer): {names}"
        )
    return found


# ----------------------------------------------------------------------------- renderings


def _markdown(charts: Charts, url: Any) -> str:
    """Each chart as an image with its path under it, then what was left out."""
    out = []
    for c in charts.shown:
        out += [
            f"![{inline_text(c.name, 100)}]({url(c)})",
            "",
            f"*{inline_text(c.rel, 200)}* (node {inline_text(c.node, 40)})",
            "",
        ]
    out += [f"- {inline_text(line, 1000)}" for line in charts.left_out]
    return "\n".join(out).strip()


def report_markdown(charts: Charts) -> str:
    """The charts for report.md: links relative to its folder, which GitHub's file view resolves
    in the same commit. Sanitised here too (outbound with relative images allowed)."""
    if not charts:
        return ""
    return outbound(_markdown(charts, lambda c: quote(c.rel, safe="/")), (), OwnImages(relative=True))


def raw_prefix(server_url: str, repo: str) -> str:
    """Where GitHub serves a repository's files by commit: ``https://HOST/OWNER/REPO/raw/``."""
    return f"{server_url.rstrip('/')}/{repo}/raw/"


def remote_markdown(charts: Charts, server_url: str, repo: str, sha: str, image_hosts: Any = DEFAULT_IMAGE_HOSTS) -> str:
    """The charts for the pull request body and the answer comment: the repository's own files
    at commit ``sha``, and only those (the sanitiser's allow-list gets exactly this repository)."""
    if not charts:
        return ""
    prefix = raw_prefix(server_url, repo)
    try:
        own: OwnImages | None = OwnImages(raw_prefix=prefix)
    except ValueError:  # a server that is not https: the images become a note, the paths stay
        own = None
    md = _markdown(charts, lambda c: prefix + sha + "/" + quote(c.path, safe="/"))
    return outbound(md, tuple(image_hosts), own)


def terminal_lines(charts: Charts) -> list[str]:
    """For `show`: the file path of every chart, one a line, then what was left out."""
    if not charts:
        return []
    return ["Charts:", *[f"  {c.path}" for c in charts.shown], *[f"  - {line}" for line in charts.left_out]]
