"""The action's install step, run as the runner runs it (its own `run:` script from action.yml,
bash, a tool cache of its own): the locked dependencies with their hashes, fast, kept for the
next job, and nothing installed from a lock whose hashes do not match."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def install_script() -> str:
    steps = yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["steps"]
    return next(s for s in steps if s.get("id") == "install")["run"]


def run_install(
    action: Path, cache: Path, tmp: Path, cwd: Path | None = None, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, dict[str, str], float]:
    out = tmp / f"output-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "UV_"))}
    env.update(extra_env or {})
    env.update(
        ACTION_PATH=str(action),
        RUNNER_TOOL_CACHE=str(cache),
        GITHUB_OUTPUT=str(out),
        PATH=":".join(p for p in env["PATH"].split(":") if ".venv" not in p),
    )
    t0 = time.perf_counter()
    p = subprocess.run(
        ["bash", "-e", "-c", install_script()], env=env, cwd=cwd or tmp, capture_output=True, text=True, timeout=500
    )
    took = time.perf_counter() - t0
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines()) if out.exists() else {}
    return p, outputs, took


def locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / "action.txt").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, rest = line.split("==", 1)
            pins.setdefault(name.strip().lower(), set()).add(rest.split()[0].rstrip("\\ ;"))  # type: ignore[attr-defined]
    return pins  # type: ignore[return-value]


def action_copy(tmp: Path) -> Path:
    dst = tmp / "action"
    shutil.copytree(ROOT / "requirements", dst / "requirements")
    shutil.copy2(ROOT / "action.yml", dst / "action.yml")
    return dst


def test_a_cold_runner_installs_the_lock_and_the_next_job_reuses_it(tmp_path):
    cache = tmp_path / "toolcache"
    p, out, cold = run_install(ROOT, cache, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    py = Path(out["python"])
    assert py.is_file() and str(py).startswith(str(cache))
    # exactly the locked versions, and the agent's imports work with them
    listing = subprocess.run(
        [
            str(py),
            "-I",
            "-c",
            "import importlib.metadata as m; print('\\n'.join(f\"{d.metadata['Name'].lower()}=={d.version}\" "
            "for d in m.distributions()))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pins = locked()
    installed = dict(x.split("==", 1) for x in listing)
    for name, version in installed.items():
        n = name.replace("_", "-")
        assert n in pins and version in pins[n], f"{name}=={version} is not what requirements/action.txt locks"
    assert {"anthropic", "pygithub", "pydantic", "jinja2", "pyyaml"} <= set(installed)
    assert "numpy" not in installed and "bm25s" not in installed and "pip" not in installed
    r = subprocess.run(
        [str(py), "-c", "import gitops_agent.github.steps, gitops_agent.steps.engine, anthropic, openai"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    # the next job on this runner: the same environment, from the cache
    p2, out2, warm = run_install(ROOT, cache, tmp_path)
    assert p2.returncode == 0 and out2["python"] == out["python"] and "from the tool cache" in p2.stdout
    print(f"install: cold {cold:.1f} s, warm {warm:.2f} s")


def one_pin_lock(text: str, name: str) -> str:
    """The lock with only ``name``'s pin and its hashes (a small, fast install of the same kind)."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if not line[:1].isspace():
            inside = line.startswith(f"{name}==")
        if inside:
            out.append(line)
    return "".join(out)


def test_a_lock_whose_hash_does_not_match_installs_nothing(tmp_path):
    import re

    action = action_copy(tmp_path)
    lock = action / "requirements" / "action.txt"
    # every hash of the package replaced: what a tampered index or mirror serves does not match
    lock.write_text(re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, one_pin_lock(lock.read_text(), "idna")))
    cache = tmp_path / "toolcache"
    p, out, _ = run_install(action, cache, tmp_path)
    assert p.returncode != 0, "installed from a lock whose hashes do not match"
    assert "hash" in (p.stdout + p.stderr).lower() and "python" not in out
    assert [d.name for d in (cache / "gitops-agent").glob("venv-*")] == [], "an environment was kept"
    assert "installing with pip" not in p.stdout, "a hash that does not match is not a reason to try pip"


def test_without_uv_the_same_lock_is_installed_by_pip(tmp_path):
    action = action_copy(tmp_path)
    lock = action / "requirements" / "action.txt"
    lock.write_text(one_pin_lock(lock.read_text(), "idna"))
    uv = action / "requirements" / "uv.txt"
    import re

    uv.write_text(re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "1" * 64, uv.read_text()))  # uv cannot be had here
    cache = tmp_path / "toolcache"
    p, out, _ = run_install(action, cache, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "installing with pip" in p.stdout
    py = out["python"]
    r = subprocess.run(
        [py, "-I", "-c", "import importlib.metadata as m; print(m.version('idna'))"], cwd=tmp_path, capture_output=True, text=True
    )
    assert r.stdout.strip() in locked()["idna"]


def test_when_uv_cannot_reach_its_index_pip_installs_the_same_lock_and_says_what_was_tried(tmp_path):
    """Behind a proxy uv may fail where pip works (its own roots, no pip.conf): the job goes on
    with pip, the same lock and hashes, and the warning names the index and the trust uv used."""
    action = action_copy(tmp_path)
    lock = action / "requirements" / "action.txt"
    lock.write_text(one_pin_lock(lock.read_text(), "idna"))
    cache = tmp_path / "toolcache"
    p, out, _ = run_install(action, cache, tmp_path, extra_env={"UV_INDEX_URL": "http://127.0.0.1:9/simple"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "installing with pip" in p.stdout and "index http://127.0.0.1:9/simple" in p.stdout
    assert "system trust store" in p.stdout
    r = subprocess.run(
        [out["python"], "-I", "-c", "import importlib.metadata as m; print(m.version('idna'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.stdout.strip() in locked()["idna"]


def test_environments_of_other_locks_unused_for_a_week_are_pruned(tmp_path):
    action = action_copy(tmp_path)
    lock = action / "requirements" / "action.txt"
    lock.write_text(one_pin_lock(lock.read_text(), "idna"))
    cache = tmp_path / "toolcache"
    base = cache / "gitops-agent"
    old, recent = base / "venv-old0000000000000-py311", base / "venv-new0000000000000-py311"
    for d, age_days in ((old, 8), (recent, 1)):
        (d / "bin").mkdir(parents=True)
        marker = d / ".gitops-agent-complete"
        marker.touch()
        t = time.time() - age_days * 86400
        os.utime(marker, (t, t))
    p, out, _ = run_install(action, cache, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not old.exists() and recent.exists() and Path(out["python"]).is_file()


def test_a_cached_environment_whose_python_is_gone_is_replaced(tmp_path):
    action = action_copy(tmp_path)
    lock = action / "requirements" / "action.txt"
    lock.write_text(one_pin_lock(lock.read_text(), "idna"))
    cache = tmp_path / "toolcache"
    p, out, _ = run_install(action, cache, tmp_path)
    assert p.returncode == 0, p.stderr
    venv = Path(out["python"]).parent.parent
    # the interpreter it was made from is gone (a Python removed from the tool cache)
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").symlink_to(tmp_path / "no-such-python")
    p, out, _ = run_install(action, cache, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    r = subprocess.run([out["python"], "-I", "-c", "import idna"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_what_other_jobs_left_in_the_workspace_does_not_steer_the_install(tmp_path):
    """The step runs in the job's workspace, which other jobs wrote: a `pip` or `venv` package
    there, or a uv.toml, must not run or decide anything."""
    action = action_copy(tmp_path)
    lock = action / "requirements" / "action.txt"
    lock.write_text(one_pin_lock(lock.read_text(), "idna"))
    ws = tmp_path / "workspace"
    poison = tmp_path / "POISONED"
    for pkg in ("pip", "venv", "ensurepip"):
        (ws / pkg).mkdir(parents=True)
        (ws / pkg / "__init__.py").write_text(f"open({str(poison)!r}, 'a').write('{pkg}')\n")
        (ws / pkg / "__main__.py").write_text(f"open({str(poison)!r}, 'a').write('{pkg}')\n")
    (ws / "uv.toml").write_text(f'cache-dir = "{ws / ".uvcache"}"\nlink-mode = "symlink"\n')
    cache = tmp_path / "toolcache"
    p, out, _ = run_install(action, cache, tmp_path, cwd=ws)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not poison.exists(), poison.read_text()
    assert not (ws / ".uvcache").exists()
    site = next(Path(out["python"]).parent.parent.glob("lib/python*/site-packages"))
    assert (site / "idna" / "__init__.py").is_file() and not (site / "idna" / "__init__.py").is_symlink()
