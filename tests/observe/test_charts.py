"""Charts are part of the answer (issue 24, item 4): a PNG the model's code writes in its step
folder is committed with the step, linked from report.md, embedded in `trace --html` and named
by `show`; a file named .png that is not a PNG, a chart over the size cap and charts over the
count cap are left out, and each place says so. One real task (`gitops-agent run`, a scripted
model, the sandbox) for the whole module."""

from __future__ import annotations

import base64
import html as html_lib
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from gitops_agent.git.repo import GitRepo
from gitops_agent.observe.charts import MAX_CHARTS, Chart, find_charts, image_kind
from gitops_agent.sandbox.choose import bwrap_works
from tests.helpers import agent_command, git, make_repo, task_branch
from tests.observe.chart_script import tiny_png, write_script

BACKEND = "bubblewrap" if bwrap_works() else "subprocess"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """(repo, branch, task folder) of a finished task whose n1 wrote chart.png, extra1..6.png,
    a_fake.png (HTML) and b_huge.png (a real PNG over the cap)."""
    tmp = tmp_path_factory.mktemp("charts")
    repo = tmp / "shop"
    (repo / ".github").mkdir(parents=True)
    (repo / "sales.csv").write_text("product,revenue\nwidget,35\n")
    (repo / ".github" / "gitops-agent.yml").write_text(f"sandbox: {{backend: {BACKEND}}}\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data")
    script = write_script(tmp / "answers.yaml", extras=True)
    r = agent_command("run", "--repo", str(repo), "--model", f"scripted:{script}", "Which product leads? Show a chart.", cwd=repo)
    assert r.returncode == 0, r.stderr
    branch = task_branch(repo)
    return repo, branch, f".agent/tasks/{branch.removeprefix('agent/task/')}"


def subprocess_bytes(repo: Path, spec: str) -> bytes:
    """A blob as bytes (the helper `git` decodes text)."""
    return subprocess.run(["git", "-C", str(repo), "show", spec], capture_output=True, check=True).stdout


def _step_dir(repo: Path, branch: str, root: str) -> str:
    files = git(repo, "ls-tree", "-r", "--name-only", branch, f"{root}/steps/").split()
    return next(f for f in files if f.endswith("/chart.png")).rsplit("/", 1)[0]


def test_the_png_is_committed_in_the_step_folder_as_an_artifact(task):
    repo, branch, root = task
    sdir = _step_dir(repo, branch, root)
    blob = subprocess_bytes(repo, f"{branch}:{sdir}/chart.png")
    assert image_kind(blob) == "png" and len(blob) < 2000
    step = git(repo, "show", f"{branch}:{sdir}/step.json")
    assert f"{sdir}/chart.png" in step and f"{sdir}/b_huge.png" in step  # artifacts: every file is kept
    assert "agent(execute): n1" in git(repo, "log", "-1", "--format=%s", branch, "--", f"{sdir}/chart.png")


def test_report_links_the_chart_relatively_and_says_what_was_left_out(task):
    repo, branch, root = task
    sdir = _step_dir(repo, branch, root).removeprefix(root + "/")
    report = git(repo, "show", f"{branch}:{root}/report.md")
    charts = report.split("## Charts", 1)[1].split("\n## ", 1)[0]
    assert f"![chart.png]({sdir}/chart.png)" in charts
    links = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", report)
    assert len(links) == MAX_CHARTS and all(not u.startswith(("http", "/", "data:")) for u in links), links
    assert "a_fake.png" not in " ".join(links) and "b_huge.png" not in " ".join(links)
    assert f"{sdir}/a\\_fake.png not shown: not a PNG file" in charts or f"{sdir}/a_fake.png not shown: not a PNG file" in charts
    assert re.search(r"b\\?_huge\.png not shown: 1\.\d MiB, over the 1 MiB limit", charts), charts
    assert f"1 more chart not shown (at most {MAX_CHARTS} per answer): {sdir}/extra6.png" in charts


def test_trace_html_embeds_the_chart_as_a_data_uri_and_nothing_else(task, tmp_path):
    repo, branch, root = task
    page = tmp_path / "trace.html"
    r = agent_command("trace", branch.removeprefix("agent/task/"), "--html", str(page), "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    html = page.read_text()
    sdir = _step_dir(repo, branch, root)
    want = base64.b64encode(subprocess_bytes(repo, f"{branch}:{sdir}/chart.png")).decode()
    srcs = re.findall(r'<img src="([^"]*)"', html)
    assert f"data:image/png;base64,{want}" in srcs and len(srcs) == MAX_CHARTS
    embedded = [base64.b64decode(s.removeprefix("data:image/png;base64,")) for s in srcs]
    assert all(s.startswith("data:image/png;base64,") for s in srcs) and all(image_kind(b) == "png" for b in embedded)
    fake = subprocess_bytes(repo, f"{branch}:{sdir}/a_fake.png")
    assert fake not in embedded and "a_fake.png not shown: not a PNG file" in html
    assert "over the 1 MiB limit" in html
    csp = html_lib.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html).group(1))
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["img-src"] == "data:" and directives["default-src"] == "'none'"  # data: images only


def test_show_names_the_charts_one_a_line(task):
    repo, branch, root = task
    r = agent_command("show", branch.removeprefix("agent/task/"), "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    sdir = _step_dir(repo, branch, root)
    tail = r.stdout.split("\nCharts:\n", 1)[1].splitlines()
    assert tail[0].strip() == f"{sdir}/chart.png"
    assert [line.strip() for line in tail[:MAX_CHARTS]] == [f"{sdir}/chart.png"] + [f"{sdir}/extra{i}.png" for i in range(1, 6)]
    assert any("a_fake.png not shown" in line for line in tail) and any("1 more chart not shown" in line for line in tail)


def test_which_files_are_charts_jpeg_too_by_their_bytes_and_only_the_latest_run_of_a_node(tmp_path):
    """find_charts over a real commit: a JPEG is a chart; a PNG named .jpg is not, nor an SVG, nor
    an image outside the step folder, nor one of an earlier run of the same node."""
    root = ".agent/tasks/t1"
    old, new, other = f"{root}/steps/0003-n1", f"{root}/steps/0007-n1", f"{root}/steps/0004-n2"
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32 + b"\xff\xd9"
    files = {
        f"{old}/old.png": tiny_png(),
        f"{new}/photo.jpeg": jpeg,
        f"{new}/wrong.jpg": tiny_png(),
        f"{new}/plot.svg": b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        f"{other}/bars.PNG": tiny_png(),
        "docs/outside.png": tiny_png(),
    }
    repo = make_repo(tmp_path, files={"README.md": "r\n"})
    for path, data in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "steps")
    steps = [
        SimpleNamespace(seq=3, role="executor", node="n1", artifacts=[f"{old}/old.png"]),
        SimpleNamespace(seq=4, role="executor", node="n2", artifacts=[f"{other}/bars.PNG", "docs/outside.png"]),
        SimpleNamespace(
            seq=7, role="executor", node="n1", artifacts=[f"{new}/photo.jpeg", f"{new}/wrong.jpg", f"{new}/plot.svg"]
        ),
    ]
    charts = find_charts(GitRepo(repo), "HEAD", "t1", steps)
    assert [(c.rel, c.kind) for c in charts.shown] == [("steps/0004-n2/bars.PNG", "png"), ("steps/0007-n1/photo.jpeg", "jpeg")]
    assert charts.left_out == ["steps/0007-n1/wrong.jpg not shown: not a JPEG file (its first bytes say otherwise)"]
    assert charts.shown[1].data_uri().startswith("data:image/jpeg;base64,/9j/")
    with pytest.raises(ValueError):  # a chart cannot be made of bytes that are not what it says
        Chart(path="x.png", rel="x.png", node="n1", kind="png", size=4, data=b"<svg")
