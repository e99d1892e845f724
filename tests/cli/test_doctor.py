"""`gitops-agent doctor`: one line per check of what gitops-agent needs here, each check against
the real thing — bubblewrap starting a sandbox, an index over HTTP, the Messages API pre-flight
on a local server, the settings file — and a failing one named with what to do."""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from gitops_agent.sandbox.choose import bwrap_works
from tests.fakes.anthropic_server import FakeAnthropic
from tests.helpers import agent_command as cli
from tests.helpers import make_repo

KEY = "sk-ant-doctor-0123456789abcdef"


class Index:
    """A package index on 127.0.0.1 that has `pip` (a PEP 503 page)."""

    def __enter__(self):
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                ok = self.path.rstrip("/").endswith("/simple/pip")
                self.send_response(200 if ok else 404)
                self.end_headers()
                self.wfile.write(b"<a href='pip-24.0.tar.gz'>pip-24.0.tar.gz</a>" if ok else b"")

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.srv.server_port}/simple"
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()


def lines(out: str) -> dict[str, str]:
    return {ln.split()[1]: ln for ln in out.splitlines() if ln[:1] in "✓!✗" and len(ln.split()) > 1}


@pytest.mark.skipif(not bwrap_works(), reason="bubblewrap cannot start a sandbox here (apt-get install bubblewrap)")
def test_the_runner_checks_on_this_machine(tmp_path):
    with Index() as idx:
        summary = tmp_path / "summary.md"
        r = cli("doctor", "--runner", "--summary", str(summary), env={"PIP_INDEX_URL": idx.url})
    got = lines(r.stdout)
    assert set(got) >= {"python", "git", "sandbox", "cgroups", "index"}, r.stdout
    assert got["sandbox"].startswith("✓") and "user namespaces" in got["sandbox"]
    assert got["index"].startswith("✓") and idx.url in got["index"] and "PIP_INDEX_URL" in got["index"]
    assert "trust store" in got["index"]
    assert "model" not in got and "settings" not in got, "--runner: the machine only"
    assert r.returncode == 0, r.stdout
    table = summary.read_text()
    assert "### gitops-agent doctor" in table and "| ✓ | sandbox |" in table


def test_an_index_that_cannot_be_reached_is_named_with_the_trust_store(tmp_path):
    with Index() as idx:
        dead = idx.url.replace(str(idx.srv.server_port), "9")  # discard port: nothing listens
    r = cli("doctor", "--runner", env={"PIP_INDEX_URL": dead, "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"})
    got = lines(r.stdout)
    assert got["index"].startswith("✗") and dead in got["index"] and "cannot be reached" in got["index"]
    assert r.returncode == 1 and "problem" in r.stdout


def test_without_bubblewrap_the_sandbox_line_says_what_to_install(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("git"), bin_dir / "git")
    r = cli("doctor", "--runner", env={"PATH": str(bin_dir), "PIP_INDEX_URL": "http://127.0.0.1:9/simple"})
    got = lines(r.stdout)
    assert got["sandbox"].startswith("✗") and "apt-get install bubblewrap" in got["sandbox"]
    assert got["git"].startswith("✓"), "every check runs, whatever failed before it"


def test_models_and_settings_of_a_repository(tmp_path):
    repo = make_repo(tmp_path)
    with FakeAnthropic(api_key=KEY) as llm, Index() as idx:
        env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": llm.url, "PIP_INDEX_URL": idx.url}
        r = cli("doctor", "--repo", str(repo), env=env)
        got = [ln for ln in r.stdout.splitlines() if " model " in ln]
        assert len(got) == 2 and all(ln.startswith("✓") for ln in got), r.stdout
        assert any(rec.path.startswith("/v1/models/") for rec in llm.lookups), "the real pre-flight ran"
        r = cli("doctor", "--repo", str(repo), env={**env, "ANTHROPIC_API_KEY": "sk-ant-wrong-key-000000000"})
        assert any(ln.startswith("✗") and "refused the key" in ln for ln in r.stdout.splitlines()), r.stdout
        (Path(repo) / ".github").mkdir(exist_ok=True)
        (Path(repo) / ".github" / "gitops-agent.yml").write_text("budget: {max_stepz: 3}\n")
        r = cli("doctor", "--repo", str(repo), env=env)
    assert lines(r.stdout)["settings"].startswith("✗") and "max_stepz" in lines(r.stdout)["settings"]
    assert r.returncode == 1
