"""RELIABILITY.md stays honest: every test it names exists (file, function and parameter id)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.reliability.rhelpers import ROOT

REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(\[[^`]*\])?`")


def test_every_row_names_tests_that_exist():
    text = (ROOT / "RELIABILITY.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 20
    for row in rows:
        assert REF.search(row), f"a row without a test: {row[:80]}"
    refs = REF.findall(text)
    files = sorted({f for f, _, _ in refs})
    for f in files:
        assert (ROOT / f).exists(), f
    # the ids pytest would run, for every file named
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    collected = set(line.strip() for line in out.splitlines() if "::" in line)
    for f, name, param in refs:
        if param in ("", "[both]"):
            assert any(c == f"{f}::{name}" or c.startswith(f"{f}::{name}[") for c in collected), f"{f}::{name}"
        else:
            assert f"{f}::{name}{param}" in collected, f"{f}::{name}{param}"
