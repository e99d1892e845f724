"""What the action runs is pinned: its dependencies by version and hash (requirements/action.txt,
checked against pyproject.toml by tools/lock.py), uv by hash, third-party actions by commit."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helpers import ROOT
from tools import lock


def test_the_lock_satisfies_pyproject_and_every_pin_has_hashes():
    assert lock.problems() == []
    # every platform's files are hashed, not only this machine's: a runner on macOS or arm64 installs too
    anthropic = next(p for p in lock.pins(lock.LOCK.read_text()) if p[0] == "pydantic-core")
    assert len(anthropic[3]) >= 20


def drop_block(text: str, name: str, keep_pin: bool = False) -> str:
    """The lock without ``name``'s pin (or, with ``keep_pin``, without its hashes)."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if not line[:1].isspace():
            inside = line.startswith(f"{name}==")
            if inside and keep_pin:
                out.append(line.split(" \\")[0].rstrip() + "\n")
                continue
        if not inside or (keep_pin and not line.strip().startswith("--hash")):
            out.append(line)
    return "".join(out)


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda t: drop_block(t, "pyyaml"), "pyyaml>=6: not in"),
        (lambda t: t.replace("jinja2==3.1.6", "jinja2==2.11.3"), "jinja2>=3.1: locked at 2.11.3"),
        (lambda t: drop_block(t, "nh3", keep_pin=True), "nh3==0.3.8: no --hash"),
    ],
)
def test_a_lock_that_drifts_from_pyproject_is_named(tmp_path, monkeypatch, change, needle):
    bad = tmp_path / "action.txt"
    bad.write_text(change(lock.LOCK.read_text()))
    assert bad.read_text() != lock.LOCK.read_text()
    monkeypatch.setattr(lock, "LOCK", bad)
    assert any(needle in p for p in lock.problems()), lock.problems()


def test_third_party_actions_are_pinned_by_commit():
    found = 0
    for path in (ROOT / "action.yml", ROOT / ".github" / "workflows" / "agent.yml"):
        for ref in re.findall(r"uses:\s*([^\s#]+)", path.read_text()):
            if ref.startswith(("gitops-agent/gitops-agent", "./")):
                continue  # this action itself: the caller pins it (README: verifying a release)
            found += 1
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref} is not pinned to a commit"
    assert found >= 1


def test_the_install_step_takes_only_the_lock_with_its_hashes():
    steps = yaml.safe_load((ROOT / "action.yml").read_text())["runs"]["steps"]
    script = next(s for s in steps if s.get("id") == "install")["run"]
    commands = script.replace("\\\n", " ").splitlines()  # continuation lines joined
    installs = [x for x in commands if " install " in x and not x.strip().startswith("#")]
    assert len(installs) == 3, installs  # uv itself, the lock with uv, the lock with pip
    joined = "\n".join(installs)
    assert joined.count("--require-hashes") == 3 and joined.count("--no-deps") == 3
