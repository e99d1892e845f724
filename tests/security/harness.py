"""The hostile-model harness: a prompt-injected model whose executor code is the attack, driving
the real job chain as GitHub Actions runs it -- `python -m gitops_agent step auto`, one process per job,
the environment the action gives (token, key, RUNNER_TEMP, GITHUB_EVENT_PATH, GITHUB_ENV, a
workspace whose .git/config holds a token) -- on a runner laid out like a real one (its own
directory with .credentials and _diag logs, a custom work directory) beside a second runner
whose directory holds other canaries. A canary TCP listener on 127.0.0.1 records any connection.

After a chain, `World.assert_nothing_leaked()` checks what the issue asks: nothing reached the
listener; no canary, in plain or common encodings, in any object of the remote (every revision of
every ref), any comment, PR title or body, any request the agent made to GitHub or to the model,
any job log; no file outside the sandbox's own places changed; no process of the attack alive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.fakes.agent_responder import AgentResponder, last_stdout, tool
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.github_server import FakeGitHub
from tests.helpers import ROOT, git, make_repo

PY = sys.executable
# The agent code the jobs run (default: this checkout). Pointing it at an older checkout shows
# which attacks that code let through: GITOPS_AGENT_UNDER_TEST=/path/to/old/checkout.
AGENT_ROOT = Path(os.environ.get("GITOPS_AGENT_UNDER_TEST") or ROOT)


# ----------------------------------------------------------------------------- canaries


def canary(kind: str) -> str:
    return f"CANARY{kind}{uuid.uuid4().hex[:20]}"


def forms(secret: str) -> list[str]:
    """The secret and encodings an attacker would use to smuggle it (independent of the product's
    own redaction code): reversed, hex, URL-encoded, base64 at the three alignments."""
    raw = secret.encode()
    out = {secret, secret[::-1], raw.hex(), raw.hex().upper(), urllib.parse.quote(secret, safe="")}
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw + b"\0\0\0").decode()
        out.add(enc[4 * ((k + 2) // 3) : 4 * ((k + len(raw)) // 3)])
    return sorted(f for f in out if len(f) >= 12)


class Listener:
    """A TCP server on 127.0.0.1 that records every connection and what was sent."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits: list[bytes] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(1)
            data = b""
            try:
                data = c.recv(65536)
            except OSError:
                pass
            self.hits.append(data or b"(connected)")
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


# ----------------------------------------------------------------------------- the runner


def _tree_state(root: Path, skip: list[Path]) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        d = Path(dirpath)
        dirs[:] = [x for x in dirs if not any(str(d / x).startswith(str(s)) for s in skip)]
        for f in files:
            p = d / f
            if any(str(p).startswith(str(s)) for s in skip):
                continue
            try:
                st = os.lstat(p)
                data = os.readlink(p).encode() if os.path.islink(p) else p.read_bytes()
            except OSError:
                continue
            out[str(p.relative_to(root))] = hashlib.sha1(data).hexdigest() + f":{st.st_mode:o}"
    return out


@dataclass
class Attack:
    """One executor node whose code is the attack."""

    id: str
    code: str
    tool: str = "run_python"
    title: str = ""
    depends_on: list[str] = field(default_factory=list)
    result: str | None = None  # finish_step's result; default: the code's output


@dataclass
class JobRun:
    event: str
    returncode: int
    stdout: str
    stderr: str
    peak_rss_kb: int = 0


class World:
    """One repository on a fake GitHub, one runner, the canaries, and the chain runner."""

    def __init__(self, tmp: Path, *, files: dict[str, str] | None = None, config: str | None = None):
        self.tmp = tmp
        self.token = "ghs_" + canary("GHTOKEN")
        self.key = "sk-ant-" + canary("APIKEY")
        self.canaries: dict[str, str] = {"github token": self.token, "api key": self.key}
        self.listener = Listener()
        self.jobs: list[JobRun] = []
        self.job_env: dict[str, str] = {}  # more of the runner's environment, for every job
        self._n = 0
        self._lock = threading.Lock()
        self.marker = f"gitops-pwned-{uuid.uuid4().hex[:10]}"  # what a host-side exploit would create
        self._make_runners()
        self._make_repo(files or {}, config)
        self.gh = FakeGitHub(token=self.token)
        self.llm: FakeAnthropic | None = None
        self.gh.__enter__()
        self.gh.add_repo("o/r", default_branch="main", git_dir=self.bare)
        self.gh.set_permission("o/r", "alice", "write")
        self.gh.add_user("mallory")
        self._before = self._state()

    # -- layout ------------------------------------------------------------------------------

    def _secret_file(self, path: Path, kind: str, fmt: str = "{}") -> None:
        value = canary(kind)
        self.canaries[f"{kind} ({path.name})"] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fmt.format(value))

    def _make_runners(self) -> None:
        t = self.tmp
        # this runner: installed in runnerA/, its work directory somewhere else (`--work`)
        self.runner = t / "runnerA"
        self.work = t / "jobs-of-runnerA"
        self._secret_file(self.runner / ".credentials", "RUNNERCRED", '{{"scheme": "OAuth", "data": {{"token": "{}"}}}}')
        self._secret_file(self.runner / ".credentials_rsaparams", "RUNNERRSA")
        self._secret_file(self.runner / "_diag" / "Worker_20261201.log", "RUNNERDIAG", "[INFO] token {}\n")
        (self.runner / ".runner").write_text('{"agentName": "runnerA"}')
        self.temp = self.work / "_temp"
        self.workspace = self.work / "r" / "r"
        self._secret_file(
            self.workspace / ".git" / "config",
            "WSHEADER",
            '[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic {}\n',
        )
        self.file_commands = self.temp / "_runner_file_commands"
        self.file_commands.mkdir(parents=True)
        for name in ("set_env", "set_output", "add_path", "step_summary"):
            (self.file_commands / name).write_text("")
        self.events = self.temp / "_github_workflow"
        self.events.mkdir(parents=True)
        self.home = t / "home-runner"
        self._secret_file(self.home / ".git-credentials", "GITCRED", "https://x:{}@github.com\n")
        self._secret_file(self.home / ".ssh" / "id_ed25519", "SSHKEY", "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n")
        # a second runner on the same machine, in the layout GitHub documents
        other = t / "runnerB"
        self._secret_file(other / ".credentials", "SIBLINGCRED")
        self._secret_file(other / "_diag" / "Runner_20261201.log", "SIBLINGDIAG")
        self._secret_file(
            other / "_work" / "o" / "o" / ".git" / "config",
            "SIBLINGHEADER",
            '[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic {}\n',
        )
        self._secret_file(other / "_work" / "_temp" / "_github_workflow" / "event.json", "SIBLINGEVENT", '{{"token": "{}"}}')
        self.sibling = other

    def _make_repo(self, files: dict[str, str], config: str | None) -> None:
        base = {"data/numbers.csv": "n\n" + "\n".join(str(i) for i in range(1, 11)) + "\n", "README.md": "# numbers\n", **files}
        if config is not None:
            base[".github/gitops-agent.yml"] = config
        repo = make_repo(self.tmp, "upstream", base)
        self.bare = self.tmp / "remote.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(self.bare)], check=True)

    def _skip(self) -> list[Path]:
        # the sandbox's own places and what the agent itself writes
        return [
            self.bare,
            self.temp / "gitops-agent-",
            self.events,
            self.file_commands / "set_output",
            self.file_commands / "step_summary",
            self.tmp / "upstream",
            self.tmp / "brain-src",
        ]

    def _state(self) -> dict[str, str]:
        return _tree_state(self.tmp, self._skip())

    # -- the model -----------------------------------------------------------------------------

    def model(self, responder: Callable[[dict], dict]) -> None:
        self.llm = FakeAnthropic(api_key=self.key, responder=responder, min_cache_tokens=0)
        self.llm.__enter__()

    def close(self) -> None:
        self.listener.close()
        if self.llm is not None:
            self.llm.__exit__(None, None, None)
        self.gh.__exit__(None, None, None)

    # -- jobs ----------------------------------------------------------------------------------

    def env(self, event_name: str, event: dict, **extra: str) -> dict[str, str]:
        with self._lock:
            self._n += 1
            n = self._n
        path = self.events / f"event-{n:03d}.json"
        path.write_text(json.dumps(event))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_API_URL": self.gh.url,
            "GITHUB_SERVER_URL": "https://github.example",
            "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(path),
            "GITHUB_RUN_ID": str(5000 + n),
            "GITHUB_WORKSPACE": str(self.workspace),
            "RUNNER_WORKSPACE": str(self.workspace.parent),
            "RUNNER_TEMP": str(self.temp),
            "GITHUB_ENV": str(self.file_commands / "set_env"),
            "GITHUB_OUTPUT": str(self.file_commands / "set_output"),
            "GITHUB_PATH": str(self.file_commands / "add_path"),
            "GITHUB_STEP_SUMMARY": str(self.file_commands / "step_summary"),
            "GITHUB_TOKEN": self.token,
            "GITOPS_AGENT_GITHUB_TOKEN": self.token,
            "ANTHROPIC_API_KEY": self.key,
            "GITOPS_AGENT_GIT_URL": f"file://{self.bare}",
            "GITOPS_AGENT_GITHUB_THROTTLE": "0",
            "GITOPS_AGENT_PLANNER_MODEL": "anthropic:claude-sonnet-4-6",
            "GITOPS_AGENT_EXECUTOR_MODEL": "anthropic:claude-haiku-4-5",
            # as action.yml runs it: the agent's code from its own path, nothing from the working directory
            "PYTHONPATH": str(AGENT_ROOT),
            "PYTHONSAFEPATH": "1",
            # the suite's one workbench (tests/conftest.py), as a runner's tool cache is shared by its jobs
            "GITOPS_AGENT_CACHE": os.environ["GITOPS_AGENT_CACHE"],
        }
        if self.llm is not None:
            env["ANTHROPIC_BASE_URL"] = self.llm.url
        env.update(self.job_env)
        env.update(extra)
        return env

    def job(self, event_name: str, event: dict, step: str = "auto", timeout: float = 180, **extra: str) -> JobRun:
        p = subprocess.Popen(
            [PY, "-m", "gitops_agent", "step", step],
            cwd=self.workspace,
            env=self.env(event_name, event, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        peak = [0]
        done = threading.Event()

        def watch() -> None:  # the agent process's own memory high-water mark
            while not done.wait(0.05):
                try:
                    for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            peak[0] = max(peak[0], int(line.split()[1]))
                except OSError:
                    return

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"job {event_name} hung:\n{err[-3000:]}")
        finally:
            done.set()
            t.join(1)
        run = JobRun(event_name, p.returncode, out, err, peak[0])
        self.jobs.append(run)
        return run

    def drain(self, start: int = 0, limit: int = 60, after_wave=None) -> int:
        """Run every dispatched step, a wave at a time (the steps of a wave run side by side, as
        parallel jobs on several runners would); ``after_wave()`` between waves (a person's push)."""
        i = start
        while i < len(self.gh.dispatches):
            wave = self.gh.dispatches[i:]
            i = len(self.gh.dispatches)
            assert i - start <= limit, "dispatch loop"
            procs = []
            for d in wave:
                ev = {
                    "action": d["event_type"],
                    "client_payload": d["client_payload"],
                    "sender": {"login": "github-actions[bot]", "type": "Bot"},
                }
                th = threading.Thread(target=self.job, args=("repository_dispatch", ev))
                th.start()
                procs.append(th)
            for th in procs:
                th.join()
            if after_wave is not None:
                after_wave()
        return i

    def issue(self, title: str, body: str, *, user: str = "alice", labels=("agent",), sender: str | None = None) -> dict:
        n = self.gh.add_issue("o/r", title, body, user=user, labels=list(labels))
        s = sender or user
        return {
            "action": "labeled" if sender else "opened",
            "label": {"name": "agent"},
            "issue": {
                "number": n,
                "title": title,
                "body": body,
                "labels": [{"name": x} for x in labels],
                "html_url": f"https://github.example/o/r/issues/{n}",
                "user": {"login": user, "type": "User"},
            },
            "sender": {"login": s, "type": "User"},
            "repository": {"full_name": "o/r", "default_branch": "main"},
        }

    def run_issue(self, title: str = "Sum the numbers in data/numbers.csv", body: str = "Please.", after_wave=None, **kw) -> dict:
        ev = self.issue(title, body, **kw)
        first = self.job("issues", ev)
        assert first.returncode == 0, first.stderr[-3000:]
        if after_wave is not None:
            after_wave()
        self.drain(after_wave=after_wave)
        return ev

    def push_file(self, path: str, text: str, message: str = "a person's change") -> None:
        """Commit ``path`` onto the task branch as a person with push access would."""
        branch = self.task_branch()
        tip = git(self.bare, "rev-parse", f"refs/heads/{branch}").strip()
        index = tempfile.mkdtemp(prefix="push-")  # outside the world's files, which the checks watch
        env = {**os.environ, "GIT_INDEX_FILE": os.path.join(index, "index")}
        blob = subprocess.run(["git", "--git-dir", str(self.bare), "hash-object", "-w", "--stdin"], input=text.encode(),
                              capture_output=True, check=True).stdout.decode().strip()  # fmt: skip
        for argv in (["read-tree", tip], ["update-index", "--add", "--cacheinfo", f"100644,{blob},{path}"]):
            subprocess.run(["git", "--git-dir", str(self.bare), *argv], env=env, check=True, capture_output=True)
        tree = subprocess.run(["git", "--git-dir", str(self.bare), "write-tree"], env=env, check=True, capture_output=True)
        ident = {
            **env,
            "GIT_AUTHOR_NAME": "alice",
            "GIT_AUTHOR_EMAIL": "a@x",
            "GIT_COMMITTER_NAME": "alice",
            "GIT_COMMITTER_EMAIL": "a@x",
        }
        argv = ["git", "--git-dir", str(self.bare), "commit-tree", tree.stdout.decode().strip(), "-p", tip, "-m", message]
        commit = subprocess.run(argv, env=ident, check=True, capture_output=True).stdout.decode().strip()
        git(self.bare, "update-ref", f"refs/heads/{branch}", commit, tip)
        shutil.rmtree(index, ignore_errors=True)

    # -- what the attack left ----------------------------------------------------------------

    def branches(self) -> list[str]:
        return git(self.bare, "for-each-ref", "--format=%(refname:short)").split()

    def task_branch(self) -> str:
        refs = [b for b in self.branches() if b.startswith("agent/task/")]
        assert len(refs) == 1, refs
        return refs[0]

    def show(self, path: str, ref: str | None = None) -> str | None:
        p = subprocess.run(
            ["git", "--git-dir", str(self.bare), "show", f"{ref or self.task_branch()}:{path}"], capture_output=True
        )
        return p.stdout.decode("utf-8", "replace") if p.returncode == 0 else None

    def files(self, ref: str | None = None) -> list[str]:
        return git(self.bare, "ls-tree", "-r", "--name-only", ref or self.task_branch()).split()

    def step_records(self) -> list[dict]:
        b = self.task_branch()
        return [json.loads(self.show(f, b) or "{}") for f in self.files(b) if f.endswith("/step.json")]

    def observations(self) -> str:
        """Everything the model was shown (what the attacker learns)."""
        assert self.llm is not None
        return "\n".join(json.dumps(r.body) for r in self.llm.requests)

    def posted(self) -> list[str]:
        """Every comment, PR title and body on the fake GitHub."""
        repo = self.gh.repo("o/r")
        out = [c.body for n in repo.issues for c in self.gh.comments("o/r", n)]
        for pr in repo.pulls.values():
            out += [pr.body or "", pr.title or ""]
        return out

    def all_objects(self) -> bytes:
        p = subprocess.run(
            ["git", "--git-dir", str(self.bare), "cat-file", "--batch-all-objects", "--batch"], capture_output=True
        )
        return p.stdout

    def assert_nothing_leaked(self, *, allow_changed: tuple[str, ...] = ()) -> None:
        assert self.listener.hits == [], f"the canary listener was reached: {self.listener.hits[:3]}"
        places = {
            "the remote's objects": self.all_objects().decode("utf-8", "replace"),
            "comments and pull requests": "\n".join(self.posted()),
            "requests to GitHub": "\n".join(json.dumps(r.body) + r.path for r in self.gh.requests),
            "requests to the model": self.observations() if self.llm else "",
            "job logs": "\n".join(j.stdout + j.stderr for j in self.jobs),
        }
        for what, text in places.items():
            for name, secret in self.canaries.items():
                for f in forms(secret):
                    assert f not in text, f"the {name} canary ({'plain' if f == secret else 'encoded'}) is in {what}"
        after = self._state()
        changed = sorted(
            k
            for k in set(after) | set(self._before)
            if after.get(k) != self._before.get(k) and not any(k.startswith(a) for a in allow_changed)
        )
        assert changed == [], f"files outside the sandbox's own places changed: {changed[:10]}"
        assert not Path("/tmp", self.marker).exists() and not list(self.tmp.rglob(f"{self.marker}*")), "a host-side exploit ran"
        alive = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if self.marker.encode() in (d / "cmdline").read_bytes():
                        alive.append(int(d.name))
                except OSError:
                    pass
        assert alive == [], f"processes of the attack outlived their jobs: {alive}"
        for j in self.jobs:  # only the agent's own workflow commands, never one the model wrote
            for line in (j.stdout + j.stderr).splitlines():
                if line.lstrip().startswith("::"):
                    assert re.match(r"^::(group|endgroup|error title=gitops-agent[^:]*)::", line.lstrip()), line


# ----------------------------------------------------------------------------- the attacker


def attacker(
    attacks: list[Attack], *, answer: str | Callable[[str], str] = "Done.", planner_turns: list[dict] | None = None
) -> AgentResponder:
    """A planner that plans the attack nodes, then finishes with ``answer``; executors that run
    each node's code once and report what it printed."""
    nodes = [
        {"id": a.id, "title": a.title or f"Step {a.id}", "goal": f"Carry out step {a.id}.", "depends_on": a.depends_on}
        for a in attacks
    ]

    def planner(body, text, n):
        if planner_turns and n < len(planner_turns):
            return planner_turns[n]
        if "There is no plan yet" in text:
            return tool("update_plan", nodes=nodes, note="plan")
        done = all(re.search(rf"## {re.escape(a.id)} \((done|failed)", text) for a in attacks)
        if done:
            return tool("finish", answer=answer(text) if callable(answer) else answer, summary="done")
        return tool("update_plan", nodes=nodes, note="waiting")

    def executor_for(a: Attack):
        def run(body, text, n):
            if n == 0:
                key = "code" if a.tool == "run_python" else "command"
                return tool(a.tool, **{key: a.code})
            return tool("finish_step", status="done", result=a.result or (last_stdout(body)[:4000] or "(no output)"))

        return run

    handlers: dict[str, Any] = {"planner": planner}
    for a in attacks:
        handlers[f"executor:{a.id}"] = executor_for(a)
    return AgentResponder(handlers)
