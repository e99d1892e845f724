"""The workbench (issue 24): the model's code runs with its own environment -- the data stack,
exactly as locked -- and never with the agent's; a repository adds packages only through a
hashed lock, refused before any branch or model call otherwise; a broken workbench is rebuilt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gitops_agent.sandbox.choose import bwrap_works
from gitops_agent.sandbox.mounts import unused_site_dirs
from gitops_agent.sandbox.requirements import RequirementsError, parse_lock
from gitops_agent.sandbox.workbench import RECORD, cache_base, ensure_workbench
from tests.helpers import agent_command, git, one_node_script, task_branch

ROOT = Path(__file__).resolve().parents[2]
TOOLZ = ROOT / "tests" / "data" / "requirements-toolz.txt"
needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot start a sandbox here")

PROBE = r"""
import importlib, json, os, glob, sys
seen = {}
for m in ["pandas", "numpy", "duckdb", "matplotlib", "pyarrow", "anthropic", "openai", "github", "gitops_agent",
          "pydantic", "yaml"]:
    try:
        importlib.import_module(m)
        seen[m] = True
    except ImportError:
        seen[m] = False
# the agent's own environment is not even there to put on sys.path
seen["agent_site"] = os.path.exists(AGENT_SITE)
# nor the base installation's packages, inside a prefix the interpreter needs
seen["base_site"] = any(os.path.isdir(d) and os.listdir(d) for d in BASE_SITES)
import duckdb, pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv("sales.csv")
top = duckdb.sql("select product, sum(revenue) r from df group by 1 order by 2 desc limit 1").fetchall()[0]
out = glob.glob(".agent/tasks/*/steps/*-n1")[0]
df.groupby("product")["revenue"].sum().plot.bar()
plt.savefig(os.path.join(out, "revenue.png"))
print(json.dumps(seen))
print(f"TOP={top[0]} {top[1]:.2f}")
"""


def _repo(tmp_path: Path, settings: str = "", files: dict[str, str] | None = None) -> Path:
    repo = tmp_path / "shop"
    (repo / ".github").mkdir(parents=True)
    (repo / "sales.csv").write_text("product,revenue\nwidget,35\ngadget,12\nwidget,5\n")
    (repo / ".github" / "gitops-agent.yml").write_text(settings)
    for name, text in (files or {}).items():
        (repo / name).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "data")
    return repo


@needs_bwrap
def test_the_models_code_has_the_data_stack_and_not_the_agents_packages(tmp_path):
    repo = _repo(tmp_path, "sandbox: {backend: bubblewrap}\n")
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "pydantic").exists())
    base_sites = unused_site_dirs(ensure_workbench().python)
    assert any(os.listdir(d) for d in base_sites)  # the base installation has packages of its own here
    probe = PROBE.replace("AGENT_SITE", repr(site)).replace("BASE_SITES", repr(base_sites))
    script = one_node_script(tmp_path / "probe.yaml", probe)
    r = agent_command("run", "--repo", str(repo), "--model", f"scripted:{script}", "Which product sells most?", cwd=repo)
    assert r.returncode == 0, r.stderr
    seen = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))
    assert seen == {
        **dict.fromkeys(["pandas", "numpy", "duckdb", "matplotlib", "pyarrow"], True),
        **dict.fromkeys(["anthropic", "openai", "github", "gitops_agent", "pydantic", "yaml", "agent_site", "base_site"], False),
    }
    assert "TOP=widget 40.00" in r.stdout
    branch = task_branch(repo)
    files = git(repo, "ls-tree", "-r", "--name-only", branch).split()
    png = next(f for f in files if f.endswith("/revenue.png"))
    blob = subprocess.run(["git", "-C", str(repo), "show", f"{branch}:{png}"], capture_output=True, check=True).stdout
    assert blob.startswith(b"\x89PNG\r\n\x1a\n") and len(blob) > 2000  # matplotlib drew it
    tid = branch.removeprefix("agent/task/")
    report = git(repo, "show", f"{branch}:.agent/tasks/{tid}/report.md")
    assert f"]({png.removeprefix(f'.agent/tasks/{tid}/')})" in report


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("pandas\n", 1, "is not pinned with =="),
        ("# ok\n\npandas>=2\n", 3, "is not pinned with =="),
        ("toolz==1.2.0\n", 1, "has no --hash"),
        ("--index-url https://evil.example/simple\ntoolz==1.2.0 --hash=sha256:" + "a" * 64 + "\n", 1, "is not allowed"),
        ("toolz @ https://evil.example/toolz.whl\n", 1, "names a URL"),
        ("toolz==1.2.0 \\\n    --hash=md5:abc\n", 1, "is not allowed"),
        ("-e .\n", 1, "is not allowed"),
    ],
)
def test_a_lock_that_is_not_pinned_with_hashes_is_refused_naming_the_line(text, line, what):
    with pytest.raises(RequirementsError) as e:
        parse_lock(text.encode(), "req/extra.txt")
    assert f"req/extra.txt, line {line}: " in str(e.value) and what in str(e.value)


def test_an_unhashed_requirements_file_stops_the_run_before_any_branch(tmp_path):
    repo = _repo(tmp_path, "sandbox: {requirements: analysis.txt}\n", {"analysis.txt": "scipy==1.14.1\n"})
    script = one_node_script(tmp_path / "s.yaml", "print('never')")
    r = agent_command("run", "--repo", str(repo), "--model", f"scripted:{script}", "Anything?", cwd=repo)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "analysis.txt, line 1: scipy==1.14.1 has no --hash" in r.stderr
    assert "uv pip compile --generate-hashes" in r.stderr
    assert git(repo, "for-each-ref", "refs/heads/agent/") == ""  # no task branch, no memory


def test_a_hashed_requirements_file_makes_its_package_importable(tmp_path):
    repo = _repo(tmp_path, "sandbox: {requirements: analysis.txt}\n", {"analysis.txt": TOOLZ.read_text()})
    code = "import toolz, pandas\nprint('toolz', toolz.__version__)"
    script = one_node_script(tmp_path / "s.yaml", code)
    r = agent_command("run", "--repo", str(repo), "--model", f"scripted:{script}", "Anything?", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "toolz 1.2.0" in r.stdout


def test_a_package_pinned_at_another_version_than_the_workbench_is_refused(tmp_path):
    wb = ensure_workbench()
    numpy = wb.packages["numpy"]
    other = "1.26.4" if numpy != "1.26.4" else "2.0.0"
    lock = parse_lock(f"numpy=={other} --hash=sha256:{'b' * 64}\n".encode(), "analysis.txt")
    with pytest.raises(RequirementsError) as e:
        ensure_workbench(lock)
    assert f"analysis.txt, line 1: numpy=={other}, but the workbench has numpy=={numpy}" in str(e.value)


def test_a_package_the_index_does_not_have_is_refused_naming_the_file():
    lock = parse_lock(f"no-such-package-gitops-agent==1.0 --hash=sha256:{'c' * 64}\n".encode(), "analysis.txt")
    with pytest.raises(RequirementsError) as e:
        ensure_workbench(lock)
    assert str(e.value).startswith("analysis.txt: the workbench with these packages could not be installed")
    assert "no-such-package-gitops-agent" in str(e.value)
    # a failed build leaves nothing half-made behind: the next try starts from nothing
    text = ensure_workbench().listing()  # the default set is untouched
    assert text and not [d for d in cache_base().glob("workbench-*") if not (d / RECORD).exists() and not _building(d)]


def _building(d: Path) -> bool:
    """Whether another test process holds ``d``'s build lock now (xdist runs them side by side)."""
    import fcntl
    import os

    lock = d.parent / f".workbench-{d.name.removeprefix('workbench-')}.lock"
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_a_broken_workbench_is_rebuilt_before_use(tmp_path):
    # a repository's additions (its own workbench, layered on the default set): built, then broken
    lock = parse_lock(TOOLZ.read_bytes(), f"{tmp_path.name}/broken.txt")  # its own key
    first = ensure_workbench(lock)
    assert first.built_s is not None
    assert ensure_workbench(lock).built_s is None  # ready: not built again
    site = next(Path(first.root).glob("lib/python*/site-packages"))
    shutil.rmtree(site / "toolz")
    for d in site.glob("toolz-*.dist-info"):
        shutil.rmtree(d)
    again = ensure_workbench(lock)
    assert again.built_s is not None and again.root == first.root
    code = "import toolz, pandas; print(toolz.__version__)"
    r = subprocess.run([again.python, "-I", "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "1.2.0", r.stderr
    shutil.rmtree(again.root)  # one per test run: not left in the shared cache


def test_docker_runs_the_workbench_mounted_read_only_with_its_interpreter():
    from gitops_agent.sandbox.docker import DockerSandbox
    from gitops_agent.sandbox.limits import SandboxLimits

    wb = ensure_workbench()
    sb = DockerSandbox(SandboxLimits(backend="docker", python=wb.python), docker="/usr/bin/docker")
    assert sb._python() == wb.python  # not the image's python3
    argv = sb.container_argv([wb.python, "-u", "/.agent-code/cell.py"], Path("/w/tree"), Path("/r/code"), {}, 30, "n")
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    binds = [m for m in mounts if m.startswith("type=bind,")]
    assert f"type=bind,source={wb.root},target={wb.root},readonly" in mounts
    base = subprocess.run([wb.python, "-I", "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True)
    assert any(m.startswith("type=bind,source=") and m.endswith(",readonly") and base.stdout.strip().startswith(
        m.split("source=")[1].split(",")[0]) for m in binds)  # fmt: skip
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p, "pydantic").exists())
    assert not any(site.startswith(m.split("source=")[1].split(",")[0] + "/") for m in binds)  # never the agent's
    roots = [m.split("source=")[1].split(",")[0] for m in binds]
    base_sites = [d for d in unused_site_dirs(wb.python) if any(d.startswith(r + "/") for r in roots)]
    assert base_sites  # the base installation's packages, inside its mounted prefix: an empty directory over them
    for d in base_sites:
        assert f"type=tmpfs,destination={d}" in mounts


def test_the_host_never_runs_a_pth_file_of_a_workbench(tmp_path, monkeypatch):
    """Any wheel may carry a `.pth` (code run at interpreter start): the host checks, compiles and
    inspects a workbench's interpreter without running it, and without its credentials."""
    from gitops_agent.sandbox import mounts

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-canary-0123456789")
    lock = parse_lock(TOOLZ.read_bytes(), f"{tmp_path.name}/pth.txt")  # a workbench of its own
    wb = ensure_workbench(lock)
    site = next(Path(wb.root).glob("lib/python*/site-packages"))
    ran = tmp_path / "ran.txt"
    (site / "zz_evil.pth").write_text(f"import os; open({str(ran)!r}, 'a').write(os.environ.get('ANTHROPIC_API_KEY', '-'))\n")
    try:
        assert ensure_workbench(lock).built_s is None  # checked before use: its interpreter started
        mounts._interpreter_facts.cache_clear()
        roots = mounts.python_roots(wb.python)
        # its own packages and, through its layering file (read as text), the default set's
        assert wb.root in roots and any(r.startswith(ensure_workbench().root) for r in roots), roots
        assert not ran.exists(), ran.read_text()
        # inside the sandbox the file is the code's own business: it runs there, with no key
        r = subprocess.run([wb.python, "-I", "-c", "pass"], capture_output=True, env={"PATH": "/usr/bin:/bin"})
        assert r.returncode == 0 and set(ran.read_text()) == {"-"}  # it ran, and found no key
    finally:
        shutil.rmtree(wb.root)


@pytest.mark.parametrize(
    ("value", "kept"),
    [("./reqs//wb.txt", "reqs/wb.txt"), ("reqs/wb.txt", "reqs/wb.txt"), ("./.git/x", None), ("a/../b", None), ("a\\b.txt", None)],
)
def test_the_requirements_path_is_one_normal_path_in_the_repository(value, kept):
    """Read at the base commit and protected from the model's writes under one spelling."""
    from pydantic import ValidationError

    from gitops_agent.sandbox.limits import SandboxLimits

    if kept is None:
        with pytest.raises(ValidationError, match="must be a path inside the repository"):
            SandboxLimits(requirements=value)
    else:
        assert SandboxLimits(requirements=value).requirements == kept
