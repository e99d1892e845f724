"""The model's code as an attacker (or a bug): it hunts for secrets, writes outside its working
tree, phones home, loops forever, eats memory, forks without end, floods its output, leaves
daemons behind. Each backend is tried; what a backend cannot stop is shown by a control test
(that is why `sandbox.require_isolation` exists)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from gitops_agent.app.local import make_runtime, run_question
from gitops_agent.core.errors import SandboxError
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.models.scripted import ScriptedModel
from gitops_agent.sandbox.bubblewrap import BubblewrapSandbox
from gitops_agent.sandbox.cgroups import pids_cgroup_parent
from gitops_agent.sandbox.choose import make_sandbox
from gitops_agent.sandbox.docker import DockerSandbox
from gitops_agent.sandbox.env import SANE_PATH, scrubbed_env
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.plain import SubprocessSandbox
from gitops_agent.settings.config import AgentConfig
from tests.reliability.rhelpers import (
    BACKENDS,
    BEST,
    ROOT,
    make_repo,
    needs_bwrap,
    needs_docker,
    process_limit_enforced,
    processes_under,
)

CLASSES = {"subprocess": SubprocessSandbox, "bubblewrap": BubblewrapSandbox, "docker": DockerSandbox}


def sandbox(backend: str, **limits):
    return CLASSES[backend](SandboxLimits(backend=backend, **limits))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "tree"
    d.mkdir()
    return d


# ---------------------------------------------------------------------------------------------
# secrets: the environment, other processes, credential files


DRIVER = """
import json, sys
from pathlib import Path
from gitops_agent.sandbox.bubblewrap import BubblewrapSandbox
from gitops_agent.sandbox.limits import SandboxLimits
from gitops_agent.sandbox.plain import SubprocessSandbox
backend, work, code = sys.argv[1], sys.argv[2], sys.stdin.read()
cls = {"subprocess": SubprocessSandbox, "bubblewrap": BubblewrapSandbox}[backend]
obs = cls(SandboxLimits(backend=backend, timeout_s=30)).run_python(code, Path(work))
print(json.dumps(obs.model_dump()))
"""

# The probe never prints a secret (redaction would hide a leak): it prints where it found it.
HUNT = r"""
import glob, os, socket
needle = {needle!r}[::-1].encode()
found, scanned = [], 0
def look(where, data):
    global scanned
    scanned += 1
    if needle in data:
        found.append(where)
look("os.environ", repr(dict(os.environ)).encode())
places = ["/proc/self/environ", "/proc/1/environ", f"/proc/{{os.getppid()}}/environ", "/proc/{agent_pid}/environ"]
for p in places + glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        look(p, open(p, "rb").read())
    except OSError:
        pass
for p in {files!r}:
    try:
        look(p, open(p, "rb").read())
    except OSError as e:
        print("UNREADABLE", p, type(e).__name__)
for s in {sockets!r}:
    c = socket.socket(socket.AF_UNIX)
    c.settimeout(2)
    try:
        c.connect(s)
        print("CONNECTED", s.replace(chr(0), "@"))
    except OSError as e:
        print("REFUSED", s.replace(chr(0), "@"), type(e).__name__)
print("SCANNED", scanned)
for f in found:
    print("FOUND", f)
"""


def hunt(backend: str, work: Path, secret: str, env: dict[str, str] | None = None, files=(), sockets=()) -> tuple[dict, int]:
    """Run the secret hunt in a sandbox made by a separate agent process that was *started*
    with the secret in its environment (as the real agent is with ANTHROPIC_API_KEY, so it is in
    /proc/<agent pid>/environ). Returns (observation, agent pid)."""
    penv = {**os.environ, "PYTHONPATH": str(ROOT), "GITOPS_PROBE_API_KEY": secret, **(env or {})}
    p = subprocess.Popen(
        [sys.executable, "-c", DRIVER, backend, str(work)],
        env=penv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    code = HUNT.format(needle=secret[::-1], agent_pid=p.pid, files=list(files), sockets=list(sockets))
    out, err = p.communicate(code, timeout=60)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), p.pid


def secret_value() -> str:
    return "probe-" + uuid.uuid4().hex  # no token shape: only isolation can keep it in


@needs_bwrap
def test_bubblewrap_code_cannot_read_any_secret_of_the_agent_process(work):
    secret = secret_value()
    obs, agent_pid = hunt("bubblewrap", work, secret)
    assert obs["exit_code"] == 0, obs["stderr"]
    assert "FOUND" not in obs["stdout"], obs["stdout"]
    scanned = int(obs["stdout"].split("SCANNED ")[1].split()[0])
    assert 3 <= scanned < 40  # its own few processes only: the agent's /proc entry does not exist in there


def test_subprocess_backend_can_read_the_agents_environment_so_isolation_is_required(work):
    """The control for the test above, and the documented gap: the plain subprocess backend
    scrubs the child's own environment, but the child can read /proc/<agent pid>/environ."""
    secret = secret_value()
    obs, agent_pid = hunt("subprocess", work, secret)
    assert obs["exit_code"] == 0, obs["stderr"]
    assert "FOUND os.environ" not in obs["stdout"] and "FOUND /proc/self/environ" not in obs["stdout"]
    assert f"FOUND /proc/{agent_pid}/environ" in obs["stdout"]


@needs_bwrap
def test_bubblewrap_hides_credential_files_runner_directories_and_sockets(work, tmp_path):
    secret = secret_value()
    home_file = Path(os.path.expanduser("~")) / f".gitops-agent-probe-{uuid.uuid4().hex[:8]}"
    runner = Path("/var/tmp") / f"gitops-agent-probe-{uuid.uuid4().hex[:8]}"
    run_sock = Path("/run") / f"gitops-agent-probe-{uuid.uuid4().hex[:8]}.sock"
    abstract = f"\0gitops-agent-probe-{uuid.uuid4().hex[:8]}"
    servers = []
    try:
        home_file.write_text(f"token={secret}\n")
        (runner / "_work" / "_temp").mkdir(parents=True)
        (runner / ".credentials").write_text(json.dumps({"token": secret}))  # what a self-hosted runner keeps
        ws = runner / "_work" / "repo" / "repo"
        (ws / ".git").mkdir(parents=True)
        (ws / ".git" / "config").write_text(
            f"[http]\n\textraheader = AUTHORIZATION: basic {secret}\n"
        )  # persisted checkout token
        for addr in (str(run_sock), abstract):  # the docker socket lives in /run; abstract sockets live in the netns
            s = socket.socket(socket.AF_UNIX)
            s.bind(addr)
            s.listen(1)
            servers.append(s)
        files = [str(home_file), str(runner / ".credentials"), str(ws / ".git" / "config")]
        env = {"RUNNER_TEMP": str(runner / "_work" / "_temp"), "GITHUB_WORKSPACE": str(ws)}
        obs, _ = hunt("bubblewrap", work, secret, env=env, files=files, sockets=[str(run_sock), abstract])
        assert obs["exit_code"] == 0, obs["stderr"]
        assert "FOUND" not in obs["stdout"], obs["stdout"]
        assert obs["stdout"].count("UNREADABLE") == 3 and "CONNECTED" not in obs["stdout"], obs["stdout"]
        # control: the same files and sockets are there for the agent itself
        obs, _ = hunt("subprocess", work, secret, env=env, files=files, sockets=[str(run_sock), abstract])
        assert obs["stdout"].count("FOUND") >= 3 and obs["stdout"].count("CONNECTED") == 2, obs["stdout"]
    finally:
        for s in servers:
            s.close()
        home_file.unlink(missing_ok=True)
        run_sock.unlink(missing_ok=True)
        shutil.rmtree(runner, ignore_errors=True)


def test_the_environment_is_scrubbed_in_every_backend(backend, work, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-" + uuid.uuid4().hex)
    monkeypatch.setenv("GITOPS_AGENT_GITHUB_TOKEN", "ghs_" + uuid.uuid4().hex)
    monkeypatch.setenv("SOME_SERVICE_PASSWORD", uuid.uuid4().hex)
    obs = sandbox(backend).run_python("import os, json; print(json.dumps(sorted(os.environ)))", work)
    names = json.loads(obs.stdout)
    assert not [n for n in names if any(w in n for w in ("KEY", "TOKEN", "PASSWORD", "ANTHROPIC", "GITHUB"))]


# ---------------------------------------------------------------------------------------------
# writing outside the working tree, the network


@needs_bwrap
def test_bubblewrap_code_cannot_write_outside_its_working_tree(work):
    name = f"gitops-agent-probe-{uuid.uuid4().hex[:8]}"
    targets = [
        f"/var/tmp/{name}",
        os.path.join(os.path.expanduser("~"), name),
        f"/etc/{name}",
        f"/usr/local/{name}",
        str(work.parent / name),
    ]
    code = (
        "import sys\nfor t in sys.argv[1:] or %r:\n    try:\n        open(t, 'w').write('x'); print('WROTE', t)\n"
        "    except OSError as e:\n        print('DENIED', t, e.strerror)\nopen('inside.txt', 'w').write('ok')\n" % targets
    )
    try:
        obs = sandbox("bubblewrap").run_python(code, work)
        assert obs.exit_code == 0, obs.stderr
        for t in targets:
            assert not os.path.exists(t), t  # nothing reached the host
        # /var/tmp and the tree's parent live in the private /tmp inside; everything else is read-only
        assert obs.stdout.count("DENIED") >= 3
        assert (work / "inside.txt").read_text() == "ok"
    finally:
        for t in targets:
            if os.path.isfile(t):
                os.unlink(t)


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    stop = threading.Event()

    def accept():
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
    srv.close()


NET = """
import socket
for host, port in [("127.0.0.1", {port}), ("1.1.1.1", 443)]:
    try:
        socket.create_connection((host, port), timeout=2).close(); print("CONNECTED", host)
    except OSError as e:
        print("FAILED", host, type(e).__name__)
try:
    socket.getaddrinfo("api.anthropic.com", 443); print("RESOLVED")
except OSError:
    print("NO DNS")
"""


@needs_bwrap
def test_bubblewrap_code_cannot_open_a_network_connection(work, listener):
    obs = sandbox("bubblewrap").run_python(NET.format(port=listener), work)
    assert "CONNECTED" not in obs.stdout and "RESOLVED" not in obs.stdout, obs.stdout
    assert "FAILED 127.0.0.1" in obs.stdout  # not even the agent's own loopback (e.g. a local model server)
    obs = sandbox("subprocess").run_python(NET.format(port=listener), work)  # control: the fallback cannot stop it
    assert "CONNECTED 127.0.0.1" in obs.stdout


# ---------------------------------------------------------------------------------------------
# resource attacks


def test_an_infinite_loop_is_killed_at_the_timeout(backend, work):
    obs = sandbox(backend, timeout_s=1).run_python(
        "import subprocess\nsubprocess.Popen(['sleep', '300'])\nwhile True:\n    pass\n", work
    )
    assert obs.timed_out and "timed out after 1 s" in obs.stderr
    assert not processes_under(work)  # the loop and its child are gone


def test_an_infinite_loop_in_a_step_times_out_and_the_task_goes_on(tmp_path):
    repo = make_repo(tmp_path)
    script = {
        "planner": [
            {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "N1", "goal": "sum"}]}},
            {"tool": "finish", "input": {"answer": "{{ results.n1 }}", "summary": "sum"}},
        ],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": "while True:\n    pass\n"}},
            {
                "tool": "run_python",
                "input": {"code": "print('SUM=%d' % sum(int(x) for x in open('numbers.txt').read().split()))"},
            },
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
    }
    cfg = AgentConfig()
    cfg.sandbox.backend = BEST
    cfg.sandbox.timeout_s = 1
    model = ScriptedModel(script)
    rt = make_runtime(repo, config=cfg, models={"scripted:t": model})
    res = run_question(rt, "sum?", planner_model="scripted:t", executor_model="scripted:t")
    assert res.outcome == "done" and "SUM=55" in res.answer
    second = [c for c in model.calls if c.meta.get("node") == "n1"][1]
    told = json.dumps([m.model_dump() for m in second.messages])
    assert "timed out after 1 s" in told  # the model heard what happened and went on


def test_a_memory_bomb_hits_the_memory_limit(backend, work):
    bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 2**20))\n"
    obs = sandbox(backend, memory_mb=256, timeout_s=30).run_python(bomb, work)
    assert obs.exit_code != 0 and not obs.timed_out
    assert "MemoryError" in obs.stderr or "killed" in obs.stderr


def test_process_spawning_is_bounded(backend, work):
    """A bounded spawning loop (never a real fork bomb here): with max_processes=24 the code
    cannot have more than that many processes, however it tries."""
    ok, why = process_limit_enforced()
    if not ok:
        pytest.skip(why)
    spawner = (
        "import os, time\nn = 0\nfor i in range(400):\n    try:\n        pid = os.fork()\n    except OSError as e:\n"
        "        print('LIMIT', n, e.strerror); break\n    if pid == 0:\n        time.sleep(30); os._exit(0)\n    n += 1\n"
        "else:\n    print('NO LIMIT', n)\n"
    )
    obs = sandbox(backend, max_processes=24, timeout_s=30).run_python(spawner, work)
    assert obs.stdout.startswith("LIMIT"), obs.stdout + obs.stderr
    assert int(obs.stdout.split()[1]) < 24
    assert not processes_under(work)  # the sleeping children died with the action


@needs_bwrap
def test_a_real_fork_bomb_is_contained_under_bubblewrap(work):
    """Only where it is safe: bubblewrap's PID namespace, a real process limit (a pids cgroup,
    or RLIMIT_NPROC for a non-root user) of 64, and a 3 s timeout."""
    ok, why = process_limit_enforced()
    if not ok:
        pytest.skip(f"not safe here: {why}")
    obs = sandbox("bubblewrap", max_processes=64, timeout_s=3).run_shell(":(){ :|:& };:", work)
    assert obs.timed_out or obs.exit_code is not None
    assert not processes_under(work)
    assert subprocess.run(["true"]).returncode == 0  # the machine can still start processes


def test_daemons_do_not_outlive_the_action(backend, work):
    """Code that double-forks, calls setsid and ignores SIGTERM/SIGHUP (leaving the process group
    that the timeout kills) is still gone when the action ends."""
    if backend == "subprocess" and pids_cgroup_parent() is None:
        pytest.skip("the subprocess backend without a pids cgroup cannot find processes that left its group (use bubblewrap)")
    daemon = (
        "import os, signal, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        signal.signal(signal.SIGTERM, signal.SIG_IGN); signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "        time.sleep(300)\n    os._exit(0)\ntime.sleep(0.3)\nprint('spawned')\n"
    )
    obs = sandbox(backend, timeout_s=20).run_python(daemon, work)
    assert obs.stdout.strip() == "spawned"
    assert not processes_under(work)


def test_100_mb_of_output_is_bounded(backend, work):
    code = (
        "import sys\nsys.stdout.write('HEAD-MARK\\n'); sys.stdout.flush()\nblock = b'x' * 2**20\n"
        "for _ in range(100):\n    sys.stdout.buffer.write(block)\nsys.stdout.buffer.flush()\n"
        "sys.stdout.write('\\nTAIL-MARK\\n')\n"
    )
    obs = sandbox(backend, max_output_chars=4000, timeout_s=60).run_python(code, work)
    assert obs.exit_code == 0, obs.stderr
    assert obs.truncated and len(obs.stdout) < 4000 + 200
    assert obs.stdout.startswith("HEAD-MARK") and obs.stdout.rstrip().endswith("TAIL-MARK")
    assert "bytes elided" in obs.stdout


def test_a_100_mb_file_from_the_code_is_refused_not_committed(tmp_path):
    repo = make_repo(tmp_path)
    code = "open('big.bin', 'wb').write(b'0' * (100 * 2**20)); open('small.txt', 'w').write('ok'); print('written')"
    script = {
        "planner": [
            {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "N1", "goal": "write"}]}},
            {"tool": "finish", "input": {"answer": "done", "summary": "done"}},
        ],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": code}},
            {"tool": "finish_step", "input": {"status": "done", "result": "ok"}},
        ],
    }
    cfg = AgentConfig()
    cfg.sandbox.backend = BEST
    rt = make_runtime(repo, config=cfg, models={"scripted:t": ScriptedModel(script)})
    res = run_question(rt, "write files", planner_model="scripted:t", executor_model="scripted:t")
    assert res.outcome == "done"
    rec = load_snapshot(rt.git, res.task_id).latest_step_for("n1")
    assert "small.txt" in rec.artifacts and "big.bin" not in rec.artifacts
    assert any(r.startswith("big.bin: refused (104.9 MB is over the 10 MB cap)") for r in rec.refused), rec.refused
    files = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", res.branch], capture_output=True, text=True
    ).stdout.split()
    assert "big.bin" not in files and "small.txt" in files


# ---------------------------------------------------------------------------------------------
# choosing a backend: loud fallback, require_isolation


def test_falling_back_to_subprocess_warns_loudly(monkeypatch, caplog):
    monkeypatch.setattr(BubblewrapSandbox, "available", classmethod(lambda cls: False))
    monkeypatch.setattr(DockerSandbox, "available", classmethod(lambda cls: False))
    with caplog.at_level(logging.WARNING, logger="gitops_agent.sandbox"):
        assert make_sandbox(SandboxLimits()).name == "subprocess"
    assert any(
        "falling back to the subprocess backend" in r.message and "/proc/<agent pid>/environ" in r.message for r in caplog.records
    )


def test_require_isolation_refuses_to_run_code_without_bubblewrap_or_docker(monkeypatch):
    monkeypatch.setattr(BubblewrapSandbox, "available", classmethod(lambda cls: False))
    monkeypatch.setattr(DockerSandbox, "available", classmethod(lambda cls: False))
    for limits in (SandboxLimits(require_isolation=True), SandboxLimits(require_isolation=True, backend="subprocess")):
        with pytest.raises(SandboxError, match="require_isolation is set and no isolating backend") as e:
            make_sandbox(limits)
        assert "apt-get install bubblewrap" in str(e.value) and "require_isolation: false" in str(e.value)
    assert make_sandbox(SandboxLimits(require_isolation=False)).name == "subprocess"  # local default: allowed, warned


@needs_bwrap
def test_require_isolation_is_met_by_bubblewrap():
    assert make_sandbox(SandboxLimits(require_isolation=True)).name == "bubblewrap"


def test_github_steps_require_isolation_unless_the_repository_opts_out(tmp_path):
    from gitops_agent.git.repo import GitRepo
    from gitops_agent.github.steps import Settings, StepRunner

    repo = make_repo(tmp_path)
    runner = StepRunner(Settings(repo="o/r", workdir=tmp_path), client=None)
    try:
        assert runner.config(GitRepo(repo), "HEAD").sandbox.require_isolation is True
        (repo / ".github").mkdir()
        (repo / ".github" / "gitops-agent.yml").write_text("sandbox: {require_isolation: false}\n")
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "opt out"], check=True
        )
        assert runner.config(GitRepo(repo), "HEAD").sandbox.require_isolation is False
    finally:
        runner.close()
    assert AgentConfig().sandbox.require_isolation is None  # locally: not required (a warning instead)


def test_a_refused_sandbox_ends_the_task_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(BubblewrapSandbox, "available", classmethod(lambda cls: False))
    monkeypatch.setattr(DockerSandbox, "available", classmethod(lambda cls: False))
    repo = make_repo(tmp_path)
    script = {
        "planner": [{"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "N1", "goal": "x"}]}}],
        "executor:n1": [{"tool": "run_python", "input": {"code": "print(1)"}}],
    }
    cfg = AgentConfig()
    cfg.sandbox.require_isolation = True
    rt = make_runtime(repo, config=cfg, models={"scripted:t": ScriptedModel(script)})
    res = run_question(rt, "anything", planner_model="scripted:t", executor_model="scripted:t")
    assert res.outcome == "error" and "require_isolation" in (res.reason or "") and "require_isolation" in res.report


# ---------------------------------------------------------------------------------------------
# docker


def test_docker_run_command_line():
    sb = DockerSandbox(
        SandboxLimits(
            backend="docker",
            memory_mb=512,
            total_memory_mb=None,  # the container's --memory is then memory_mb
            cpus=1.5,
            max_processes=64,
            file_size_mb=100,
            tmp_mb=100,
            extra_ro_paths=[("/srv/data", "/data")],
            docker_image="python:3.12-slim",
        ),
        docker="/usr/bin/docker",
    )
    env = scrubbed_env({"AGENT_DATA_DIR": "/data"}, home="/tmp", tmpdir="/tmp", python="python3")
    orig_exists = os.path.exists
    try:
        os.path.exists = lambda p: True if p == "/srv/data" else orig_exists(p)  # noqa: E731
        argv = sb.container_argv(
            ["python3", "-u", "/.agent-code/cell.py"],
            Path("/w/tree"),
            Path("/r/code"),
            env,
            30,
            "gitops-agent-abc",
            uid=1001,
            gid=121,
        )
    finally:
        os.path.exists = orig_exists
    envs = [f"--env={k}={v}" for k, v in env.items()]
    assert argv == [
        "/usr/bin/docker",
        "run",
        "--rm",
        "--name",
        "gitops-agent-abc",
        "--init",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=100m",
        "--memory",
        "512m",
        "--memory-swap",
        "512m",
        "--cpus",
        "1.5",
        "--pids-limit",
        "64",
        "--ulimit",
        f"fsize={100 * 2**20}:{100 * 2**20}",
        "--ulimit",
        "cpu=35:40",
        "--ulimit",
        "core=0:0",
        "--ulimit",
        "nofile=1024:1024",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "1001:121",
        "--hostname",
        "sandbox",
        "--label",
        "gitops-agent.sandbox=1",
        "--mount",
        "type=bind,source=/r/code,target=/.agent-code,readonly",
        "--mount",
        "type=bind,source=/srv/data,target=/data,readonly",
        "--mount",
        "type=bind,source=/w/tree,target=/w/tree",
        "--workdir",
        "/w/tree",
        *[x for e in envs for x in e.split("=", 1)],
        "python:3.12-slim",
        "timeout",
        "-s",
        "KILL",
        "35",
        "python3",
        "-u",
        "/.agent-code/cell.py",
    ]
    assert env["PATH"] == SANE_PATH and env["HOME"] == "/tmp"  # nothing of the host's interpreter leaks in
    assert not [a for a in argv if any(w in a for w in ("KEY", "TOKEN", "SECRET"))]
    with_net = DockerSandbox(SandboxLimits(backend="docker", network=True), docker="/usr/bin/docker").container_argv(
        ["true"], Path("/w"), Path("/c"), {}, 5, "n", uid=0, gid=0
    )
    assert with_net[with_net.index("--network") + 1] == "bridge"
    with pytest.raises(SandboxError, match="cannot mount"):
        DockerSandbox(SandboxLimits(backend="docker"), docker="/usr/bin/docker").container_argv(
            ["true"], Path("/w/a,b"), Path("/c"), {}, 5, "n"
        )


def test_docker_timeout_kills_the_container(monkeypatch, tmp_path):
    """Without an engine: a fake `docker` that hangs; on timeout the agent runs `docker kill NAME`."""
    log = tmp_path / "docker.log"
    fake = tmp_path / "docker"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = run ] && exec sleep 60\nexit 0\n')
    fake.chmod(0o755)
    work = tmp_path / "w"
    work.mkdir()
    obs = DockerSandbox(SandboxLimits(backend="docker", timeout_s=1), docker=str(fake)).run_shell("echo hi", work)
    assert obs.timed_out
    lines = log.read_text().splitlines()
    name = lines[0].split("--name ")[1].split()[0]
    assert lines[0].startswith("run --rm --name gitops-agent-") and f"kill {name}" in lines[1:]


def test_docker_pulls_a_missing_image_before_the_first_action(tmp_path):
    log = tmp_path / "docker.log"
    fake = tmp_path / "docker"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = image ] && exit 1\n[ "$1" = pull ] && exit "${{PULL_RC:-0}}"\nexit 0\n'
    )
    fake.chmod(0o755)
    sb = DockerSandbox(SandboxLimits(backend="docker", docker_image="example/py:1"), docker=str(fake))
    sb.ensure_image()
    assert log.read_text().splitlines() == ["image inspect example/py:1", "pull example/py:1"]
    os.environ["PULL_RC"] = "1"
    try:
        with pytest.raises(SandboxError, match="cannot pull 'example/py:1'"):
            sb.ensure_image()
    finally:
        del os.environ["PULL_RC"]


# A `docker` without an engine that runs the container's command as a process that is not the
# client's child (as containerd-shim's children are): double fork and setsid, its pid in STATE/NAME.
FAKE_DOCKER = """#!PYTHON
import os, sys, time
STATE = 'STATEDIR'
a = sys.argv[1:]
if a[0] == 'image':
    sys.exit(0)
if a[0] == 'inspect':
    try:
        print(open(os.path.join(STATE, a[-1])).read())
    except OSError:
        sys.exit('Error: No such object: ' + a[-1])
    sys.exit(0)
if a[0] == 'kill':
    os.killpg(int(open(os.path.join(STATE, a[-1])).read()), 9)
    os.unlink(os.path.join(STATE, a[-1]))
    sys.exit(0)
name, cwd = a[a.index('--name') + 1], a[a.index('--workdir') + 1]
i, env = a.index('--workdir') + 2, {}
while a[i] == '--env':
    k, v = a[i + 1].split('=', 1); env[k] = v; i += 2
mounts = [dict(kv.split('=', 1) for kv in m.split(',') if '=' in kv) for p, m in zip(a, a[1:]) if p == '--mount']
cmd = ['PYTHON' if c == 'python3' else c for c in a[i + 1:]]  # the image's python
for m in mounts:
    cmd = [c.replace(m['target'], m['source'], 1) if c.startswith(m['target'] + '/') else c for c in cmd]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.chdir(cwd)
        open(os.path.join(STATE, '.new'), 'w').write(str(os.getpid()))
        os.rename(os.path.join(STATE, '.new'), os.path.join(STATE, name))
        os.execvpe(cmd[0], cmd, env)
    os._exit(0)
os.wait()
while not os.path.exists(os.path.join(STATE, name)):
    time.sleep(0.02)
def running(pid):
    try:
        return open(f'/proc/{pid}/stat').read().rsplit(') ', 1)[1][0] != 'Z'
    except OSError:
        return False
while running(open(os.path.join(STATE, name)).read()):
    time.sleep(0.05)
os.unlink(os.path.join(STATE, name))
"""


def test_docker_deleted_open_files_of_the_container_count_against_the_disk_budget(tmp_path):
    """Red team F5: the container's processes are not the client's children; their deleted but
    still open files must count all the same."""
    state = tmp_path / "state"
    state.mkdir()
    fake = tmp_path / "docker"
    fake.write_text(FAKE_DOCKER.replace("PYTHON", sys.executable).replace("STATEDIR", str(state)))
    fake.chmod(0o755)
    work = tmp_path / "w"
    work.mkdir()
    sb = DockerSandbox(SandboxLimits(backend="docker", disk_mb=20, timeout_s=15), docker=str(fake))
    sb.ensure_image()
    attack = (
        "import os, time\nfd = os.open('hidden.bin', os.O_CREAT | os.O_WRONLY, 0o600)\nos.unlink('hidden.bin')\n"
        "for _ in range(30):\n    os.write(fd, b'x' * (1 << 20))\nprint('wrote 30 MiB unlinked', flush=True)\ntime.sleep(60)\n"
    )
    obs = sb.run_python(attack, work)
    assert "wrote 30 MiB unlinked" in obs.stdout, obs.stderr
    assert not obs.timed_out and "to disk (sandbox.disk_mb)" in obs.stderr, obs.stderr
    assert not list(state.iterdir())  # the container is gone
    assert not processes_under(work)


@needs_docker
def test_docker_live(work):
    sb = make_sandbox(SandboxLimits(backend="docker", timeout_s=120))
    obs = sb.run_python("import os; open('x.txt', 'w').write('ok'); print(sorted(os.environ))", work)
    assert obs.exit_code == 0, obs.stderr
    assert (work / "x.txt").read_text() == "ok"
    obs = sb.run_python(NET.format(port=9), work)
    assert "CONNECTED" not in obs.stdout
