"""Sandbox backends: output, exit codes, cwd, scrubbed environment, redaction, limits, isolation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from gitops_agent.core.errors import SandboxError
from gitops_agent.core.seams import Sandbox
from gitops_agent.safety.secrets import redact
from gitops_agent.sandbox import choose
from gitops_agent.sandbox.bubblewrap import BubblewrapSandbox
from gitops_agent.sandbox.choose import available_backends, bwrap_works, make_sandbox
from gitops_agent.sandbox.docker import DockerSandbox
from gitops_agent.sandbox.env import scrubbed_env
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.output import truncate_middle
from gitops_agent.sandbox.plain import SubprocessSandbox

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bwrap is missing or cannot create namespaces here")

BACKENDS = [pytest.param("subprocess", id="subprocess"), pytest.param("bubblewrap", id="bubblewrap", marks=needs_bwrap)]


def sandbox(backend: str, **limits) -> Sandbox:
    lim = SandboxLimits(backend=backend, **limits)
    return SubprocessSandbox(lim) if backend == "subprocess" else BubblewrapSandbox(lim)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "tree"
    d.mkdir()
    return d


# -- basics -------------------------------------------------------------------------------------


def test_protocol_and_hello(backend, work):
    sb = sandbox(backend)
    assert isinstance(sb, Sandbox) and sb.name == backend
    obs = sb.run_python("print('hello world')", work)
    assert obs.exit_code == 0
    assert obs.stdout == "hello world\n"
    assert obs.stderr == ""
    assert not obs.timed_out and not obs.truncated
    assert obs.backend == backend
    assert obs.duration_ms >= 0

    obs = sb.run_shell("echo hi; echo err >&2; exit 3", work)
    assert (obs.exit_code, obs.stdout, obs.stderr) == (3, "hi\n", "err\n")


def test_traceback_in_stderr(backend, work):
    sb = sandbox(backend)
    obs = sb.run_python("x = 1\nraise ValueError('boom 42')\n", work)
    assert obs.exit_code == 1
    assert "Traceback (most recent call last)" in obs.stderr
    assert obs.stderr.rstrip().splitlines()[-1] == "ValueError: boom 42"


def test_traceback_tail_survives_long_stderr(backend, work):
    sb = sandbox(backend, max_output_chars=2000)
    code = "import sys\nsys.stderr.write('noise ' * 200_000)\nraise KeyError('the-last-line')\n"
    obs = sb.run_python(code, work)
    assert obs.exit_code == 1 and obs.truncated
    assert "elided" in obs.stderr
    assert obs.stderr.rstrip().endswith("KeyError: 'the-last-line'")
    assert len(obs.stderr) < 2200


def test_cwd_and_files_persist(backend, work):
    sb = sandbox(backend)
    obs = sb.run_python("import os\nprint(os.getcwd())\nopen('out.txt', 'w').write('data')\n", work)
    assert obs.exit_code == 0, obs.stderr
    assert obs.stdout.strip() == str(work.resolve())
    assert (work / "out.txt").read_text() == "data"
    obs = sb.run_shell("cat out.txt && pwd", work)
    assert obs.stdout == f"data{work.resolve()}\n"
    # the code file is not left in the working tree
    assert sorted(p.name for p in work.iterdir()) == ["out.txt"]


def test_python_on_path_is_the_same_interpreter(backend, work):
    """`python` in the sandbox is the agent's interpreter, in its environment: the same file (a
    virtualenv's `python` and `python3` are links to one interpreter) and the same prefix."""
    sb = sandbox(backend)
    obs = sb.run_shell("python -c 'import sys, pydantic; print(sys.executable); print(sys.prefix)'", work)
    assert obs.exit_code == 0, obs.stderr
    exe, prefix = obs.stdout.split()
    assert os.path.realpath(exe) == os.path.realpath(SandboxLimits().python)
    assert os.path.realpath(prefix) == os.path.realpath(sys.prefix)


def test_missing_cwd_is_a_sandbox_error(backend, tmp_path):
    with pytest.raises(SandboxError, match="does not exist"):
        sandbox(backend).run_python("print(1)", tmp_path / "nope")


# -- environment and secrets --------------------------------------------------------------------


def test_environment_scrubbed_and_secrets_redacted(backend, work, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-abcdefghijklmnopqrstuvwxyz")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_abcdefghijklmnopqrstuvwxyz0123456789")
    monkeypatch.setenv("MY_SECRET_TOKEN", "plain-value-hunter2-xyz")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKLMNOP")
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    sb = sandbox(backend)
    code = "import os, json\nprint(json.dumps(dict(os.environ)))\nprint('leak:', 'plain-value-hunter2-xyz')\n"
    obs = sb.run_python(code, work)
    assert obs.exit_code == 0, obs.stderr
    env_line, leak_line = obs.stdout.splitlines()
    import json

    env = json.loads(env_line)
    for name in ("ANTHROPIC_API_KEY", "GITHUB_TOKEN", "MY_SECRET_TOKEN", "AWS_ACCESS_KEY_ID", "PYTHONPATH"):
        assert name not in env
    assert not [k for k in env if any(w in k for w in ("KEY", "TOKEN", "SECRET", "GITHUB", "ANTHROPIC", "AWS"))]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["MPLBACKEND"] == "Agg"
    assert env["HOME"] != os.environ.get("HOME")
    assert leak_line == "leak: [REDACTED]"

    obs = sb.run_shell("echo $HOME; touch $HOME/x && echo home-writable; echo ghp_0123456789abcdefghijABCDEFGHIJ012345", work)
    assert obs.exit_code == 0, obs.stderr
    assert "home-writable" in obs.stdout
    assert "ghp_" not in obs.stdout and "[REDACTED]" in obs.stdout


def test_extra_env_passes_but_not_credentials(backend, work):
    lim = SandboxLimits(backend=backend)
    cls = SubprocessSandbox if backend == "subprocess" else BubblewrapSandbox
    sb = cls(lim, env={"AGENT_STEP_DIR": "/steps/1"})
    assert sb.run_shell("echo $AGENT_STEP_DIR", work).stdout == "/steps/1\n"
    with pytest.raises(SandboxError, match="credential"):
        cls(lim, env={"OPENAI_API_KEY": "x"})


def test_scrubbed_env_allow_list(monkeypatch, tmp_path):
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_x" * 10)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-" + "a" * 30)
    monkeypatch.setenv("SOMETHING_ELSE", "harmless")
    env = scrubbed_env({"AGENT_STEP_DIR": "/s"}, home=tmp_path, tmpdir=tmp_path)
    assert set(env) == {
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "TERM",
        "HOME",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
        "PYTHONHASHSEED",
        "MPLBACKEND",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "MALLOC_ARENA_MAX",
        "AGENT_STEP_DIR",
    }
    assert env["HOME"] == str(tmp_path)
    with pytest.raises(SandboxError):
        scrubbed_env({"PYTHONPATH": "/x"}, home=tmp_path, tmpdir=tmp_path)


def test_redact_patterns():
    text = (
        "a ghp_abcdefghijklmnopqrstuvwxyz0123456789 b github_pat_11ABCDEFG0123456789_abcdefghijklmnop "
        "c sk-ant-api03-abc_def-ghijklmnop d sk-proj-abcdefghijklmnopqrstuvwx e AKIAIOSFODNN7EXAMPLE "
        "f -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- g mysecretvalue h short"
    )
    out = redact(text, ["mysecretvalue", "short"])
    for frag in ("ghp_", "github_pat_", "sk-ant", "sk-proj", "AKIA", "MIIEow", "mysecretvalue"):
        assert frag not in out
    assert "short" in out  # under 8 characters: not treated as a secret
    assert out.count("[REDACTED]") == 7
    assert redact("task-list and risk-free words", []) == "task-list and risk-free words"
    assert "MIIE" not in redact("x -----BEGIN OPENSSH PRIVATE KEY-----\nMIIE... (cut)", [])


def test_truncate_middle():
    text, cut = truncate_middle("a" * 50 + "b" * 50, 20)
    assert cut and text.startswith("a" * 10) and text.endswith("b" * 10)
    assert "[... 80 characters elided ...]" in text
    assert truncate_middle("short", 20) == ("short", False)


# -- limits -------------------------------------------------------------------------------------


def _live_processes_with(marker: str) -> list[int]:
    """Host pids (not zombies) whose command line contains marker."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmd and state != "Z":
            found.append(int(d))
    return found


def _live_group_members(pgid: int) -> list[int]:
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(d))
    return found


def test_timeout_kills_loop_and_children(backend, work):
    sb = sandbox(backend)
    marker = f"1000.{uuid.uuid4().int % 10**8:08d}"  # unique `sleep` argument to find it by
    cmd = f"sleep {marker} &\necho $$\nwhile :; do :; done\n"
    t0 = time.monotonic()
    obs = sb.run_shell(cmd, work, timeout=1.5)
    assert time.monotonic() - t0 < 10
    assert obs.timed_out
    assert obs.exit_code is None or obs.exit_code < 0
    assert "timed out after 1.5 s" in obs.stderr
    assert 1400 <= obs.duration_ms < 10000
    deadline = time.monotonic() + 3
    while _live_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_processes_with(marker) == []
    if backend == "subprocess":
        pgid = int(obs.stdout.split()[0])  # bash -c is the session and group leader
        # Dead members may linger briefly as zombies until init reaps them; none may be alive.
        assert _live_group_members(pgid) == []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            assert _live_group_members(pgid) == []


def test_timeout_kills_a_forked_child_without_cgroups(work, monkeypatch):
    """Where no cgroup can be made (and without bubblewrap's PID namespace), the timeout must kill
    the whole process group: a child the code forked, which would write a file a little later,
    dies with it."""
    monkeypatch.setattr(SubprocessSandbox, "_cgroup", lambda self: None)  # a runner without cgroups
    late = work / "late.txt"
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    time.sleep(1.2)\n"
        f"    open({str(late)!r}, 'w').write('the child outlived the timeout')\n"
        "    os._exit(0)\n"
        "print('forked', flush=True)\n"
        "while True:\n"
        "    time.sleep(0.05)\n"
    )
    obs = sandbox("subprocess").run_python(code, work, timeout=0.6)
    assert obs.timed_out and obs.stdout == "forked\n"
    time.sleep(1.5)  # past the moment the child would have written
    assert not late.exists()


def test_python_timeout(backend, work):
    obs = sandbox(backend).run_python("print('started', flush=True)\nwhile True:\n    pass\n", work, timeout=1)
    assert obs.timed_out and obs.stdout == "started\n"
    assert "timed out after 1 s" in obs.stderr


def test_background_process_does_not_outlive_a_normal_exit(backend, work):
    marker = f"1000.{uuid.uuid4().int % 10**8:08d}"
    obs = sandbox(backend).run_shell(f"sleep {marker} &\necho done", work, timeout=10)
    assert obs.exit_code == 0 and obs.stdout == "done\n" and not obs.timed_out
    deadline = time.monotonic() + 3
    while _live_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_processes_with(marker) == []


def test_huge_output_is_bounded(backend, work):
    sb = sandbox(backend, max_output_chars=4000)
    code = (
        "import sys\n"
        "sys.stdout.write('FIRST-LINE\\n')\n"
        "chunk = ('x' * 1023 + '\\n') * 1024\n"
        "for _ in range(100):\n"
        "    sys.stdout.write(chunk)\n"  # 100 MiB
        "sys.stdout.write('LAST-LINE\\n')\n"
    )
    t0 = time.monotonic()
    obs = sb.run_python(code, work, timeout=30)
    elapsed = time.monotonic() - t0
    assert obs.exit_code == 0, obs.stderr
    assert obs.truncated
    assert obs.stdout.startswith("FIRST-LINE\n")
    assert obs.stdout.endswith("LAST-LINE\n")
    assert "bytes elided" in obs.stdout
    assert len(obs.stdout) < 4200
    assert elapsed < 15


def test_memory_limit(backend, work):
    sb = sandbox(backend, memory_mb=512)
    obs = sb.run_python("b = bytearray(4 * 1024**3)\nprint('allocated')\n", work, timeout=20)
    assert obs.exit_code != 0
    assert "allocated" not in obs.stdout
    assert "MemoryError" in obs.stderr


def test_cpu_time_limit_ends_a_busy_loop_before_the_wall_timeout(backend, work):
    """cpu_s is CPU seconds: a busy loop with cpu_s=1 is stopped by the CPU limit within a few
    seconds, long before the 20 s wall timeout."""
    sb = sandbox(backend, cpu_s=1)
    t0 = time.monotonic()
    obs = sb.run_python("print('spinning', flush=True)\nwhile True:\n    pass\n", work, timeout=20)
    assert time.monotonic() - t0 < 10
    assert not obs.timed_out and obs.stdout == "spinning\n"
    assert obs.exit_code is not None and obs.exit_code != 0


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("subprocess", id="subprocess"),
        pytest.param("bubblewrap", id="bubblewrap", marks=[needs_bwrap]),  # bwrap reports SIGXCPU as exit code 152
    ],
)
def test_code_stopped_by_the_cpu_limit_is_told_why(backend, work):
    """The model reads why its code stopped: the observation names the CPU time limit."""
    obs = sandbox(backend, cpu_s=1).run_python("while True:\n    pass\n", work, timeout=20)
    assert not obs.timed_out and "CPU time limit reached" in obs.stderr, (obs.exit_code, obs.stderr)


def test_file_size_limit(backend, work):
    sb = sandbox(backend, file_size_mb=5)
    code = "with open('big.bin', 'wb') as f:\n    for _ in range(8):\n        f.write(b'\\0' * 1024 * 1024)\nprint('wrote')\n"
    obs = sb.run_python(code, work, timeout=20)
    assert obs.exit_code != 0
    assert "wrote" not in obs.stdout
    assert "File too large" in obs.stderr
    assert (work / "big.bin").stat().st_size <= 5 * 1024 * 1024


# -- bubblewrap isolation -----------------------------------------------------------------------


@needs_bwrap
def test_bwrap_cannot_write_outside_cwd(work):
    sb = sandbox("bubblewrap")
    name = f"agent-sandbox-probe-{uuid.uuid4().hex[:8]}"
    for target in (f"/etc/{name}", f"/root/{name}", f"/usr/{name}"):
        obs = sb.run_shell(f"echo x > {target}", work)
        assert obs.exit_code != 0, target
        # /root is hidden behind an empty read-only tmpfs (hide_paths): "Permission denied" there
        assert "Read-only file system" in obs.stderr or "Permission denied" in obs.stderr, obs.stderr
        assert not os.path.exists(target)
    # the tree's parent is under the private /tmp here: writable inside, never reaches the host
    obs = sb.run_shell(f"echo x > ../{name}", work)
    assert not (work.parent / name).exists()
    # /tmp inside is a private tmpfs: writable, but gone afterwards
    obs = sb.run_shell(f"echo x > /tmp/{name} && cat /tmp/{name}", work)
    assert obs.exit_code == 0 and obs.stdout == "x\n"
    assert not os.path.exists(f"/tmp/{name}")


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    stop = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                c.close()
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


NET_CODE = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n"
    "    print('connected')\n"
    "except OSError as e:\n"
    "    print('failed', e)\n"
)


@needs_bwrap
def test_bwrap_network_off(work, listener):
    # sanity: the listener answers from the host (and from the subprocess backend)
    obs = sandbox("subprocess").run_python(NET_CODE.format(port=listener), work)
    assert obs.stdout.startswith("connected"), obs
    obs = sandbox("bubblewrap").run_python(NET_CODE.format(port=listener), work)
    assert obs.stdout.startswith("failed"), obs
    obs = sandbox("bubblewrap", network=True).run_python(NET_CODE.format(port=listener), work)
    assert obs.stdout.startswith("connected"), obs


@needs_bwrap
def test_bwrap_hides_host_processes(work):
    obs = sandbox("bubblewrap").run_shell("ls /proc | grep -c '^[0-9]'", work)
    assert obs.exit_code == 0
    assert int(obs.stdout) < 10  # only the sandbox's own processes


@needs_bwrap
def test_bwrap_extra_ro_paths(work, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello")
    sb = sandbox("bubblewrap", extra_ro_paths=[(str(data), "/tmp/data")])
    obs = sb.run_shell("cat /tmp/data/a.txt; echo x > /tmp/data/b.txt", work)
    assert obs.stdout == "hello"
    assert obs.exit_code != 0 and "Read-only" in obs.stderr


@needs_bwrap
def test_bwrap_refuses_tmp_as_cwd():
    with pytest.raises(SandboxError, match="subdirectory"):
        sandbox("bubblewrap").run_shell("true", Path("/tmp"))


# -- choosing a backend -------------------------------------------------------------------------


@needs_bwrap
def test_a_python_prefix_that_holds_a_home_or_the_runners_directory_is_never_mounted():
    """bubblewrap shows the interpreter's prefixes read-only; one that holds $HOME, a home
    directory, /run or the runner's own directory (credentials) is left out, and / never goes in."""
    from gitops_agent.sandbox.mounts import safe_roots

    assert safe_roots(["/home/u", "/usr"], environ={"HOME": "/home/u/x"}) == ["/usr"]
    assert safe_roots(["/opt/venv", "/srv/py"], environ={"HOME": "/srv/py/home"}) == ["/opt/venv"]
    runner = {"HOME": "/nohome", "RUNNER_TEMP": "/opt/actions-runner/_work/_temp"}
    assert safe_roots(["/opt", "/usr/lib/python3"], environ=runner) == ["/usr/lib/python3"]
    assert safe_roots(["/", "/usr"], environ={"HOME": "/nohome"}) == ["/usr"]
    assert safe_roots(["/usr", "/usr/lib/python3"], environ={"HOME": "/nohome"}) == ["/usr"]  # nested: the parent


def test_auto_picks_bubblewrap_here():
    assert available_backends()[0] == "bubblewrap"
    sb = make_sandbox()
    assert sb.name == "bubblewrap"
    assert make_sandbox(SandboxLimits(backend="subprocess")).name == "subprocess"


def test_auto_falls_back_to_subprocess(monkeypatch):
    monkeypatch.setattr(BubblewrapSandbox, "available", classmethod(lambda cls: False))
    monkeypatch.setattr(DockerSandbox, "available", classmethod(lambda cls: False))
    assert choose.available_backends() == ["subprocess"]
    assert choose.make_sandbox().name == "subprocess"
    with pytest.raises(SandboxError, match="'bubblewrap' is not available here; available: subprocess"):
        choose.make_sandbox(SandboxLimits(backend="bubblewrap"))


def test_docker_without_an_engine_is_a_clear_error():
    from gitops_agent.sandbox.choose import docker_engine_answers

    if docker_engine_answers():
        pytest.skip("a docker engine answers here")
    with pytest.raises(SandboxError, match="sandbox backend 'docker' is not available") as e:
        make_sandbox(SandboxLimits(backend="docker"))
    assert "available:" in str(e.value)


def test_bubblewrap_runs_an_interpreter_that_lives_under_tmp(tmp_path):
    """A checkout (and its .venv) under /tmp must still run: the private /tmp would hide it."""
    if not bwrap_works():
        pytest.skip("bubblewrap cannot run here")
    assert str(tmp_path).startswith("/tmp/")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    work = tmp_path / "work"
    work.mkdir()
    sb = BubblewrapSandbox(SandboxLimits(python=str(venv / "bin" / "python"), timeout_s=30))
    obs = sb.run_python("import sys; print(sys.prefix)", work)
    assert obs.exit_code == 0, obs.stderr
    assert obs.stdout.strip() == str(venv)


def test_a_backend_is_one_class():
    """A new backend is a ProcessSandbox subclass with a name: `auto`, `require_isolation` and the
    settings' check find it without any list being edited."""
    from gitops_agent.sandbox import registry

    class JailSandbox(SubprocessSandbox):  # a stand-in: the subprocess backend under another name
        name = "jail"
        isolating = True
        preference = 5

    registry.backends.cache_clear()  # defining the class registered it
    try:
        assert choose.available_backends()[0] == "jail" and "jail" in choose.isolating()
        assert make_sandbox(SandboxLimits(require_isolation=True)).name == "jail"
        assert SandboxLimits(backend="jail").backend == "jail"
        with pytest.raises(ValueError, match="unknown backend 'nsjail'"):
            SandboxLimits(backend="nsjail")
    finally:
        registry.BACKENDS.pop("jail", None)
        registry.backends.cache_clear()
