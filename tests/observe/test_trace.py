"""The trace of a real finished task (the demo, with a priced scripted model): totals against the
step files and the commit trailers, the timeline, the CLI (terminal, --json, --html), the HTML
page's self-containment and escaping, headless Chromium, and the OpenTelemetry spans."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from gitops_agent.app.local import DEMO_QUESTION, make_demo_repo, make_runtime, run_question
from gitops_agent.core.state import NodeStatus, StepRecord, Usage
from gitops_agent.git.repo import GitRepo
from gitops_agent.models.scripted import ScriptedModel
from gitops_agent.observe.html import render_html
from gitops_agent.observe.terminal import render_terminal
from gitops_agent.observe.trace_build import build_trace
from gitops_agent.settings.config import AgentConfig
from tests.helpers import ROOT, git
from tests.helpers import agent_command as cli

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

EVIL = "<script>alert(1)</script>"
EVIL_TEXT = '<img src=x onerror="alert(2)"> & friends'
MODEL_NAME = "claude-haiku-4-5"  # priced, so the ledger has real dollars in it


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The demo question run end to end, its model output laced with HTML."""
    repo = make_demo_repo(tmp_path_factory.mktemp("trace") / "demo")
    script = yaml.safe_load((ROOT / "gitops_agent" / "demo" / "script.yaml").read_text())
    finish_n3 = next(e for e in script["executor:n3"] if e.get("tool") == "finish_step")
    finish_n3["input"]["result"] = "{{ last_output }}\n\nNote: " + EVIL
    script["planner"][0]["text"] = script["planner"][0].get("text", "") + " " + EVIL_TEXT
    model = ScriptedModel(script, name=MODEL_NAME)
    rt = make_runtime(repo, config=AgentConfig(), models={"scripted:trace": model})
    res = run_question(rt, DEMO_QUESTION, planner_model="scripted:trace", executor_model="scripted:trace")
    assert res.outcome == "done", res.reason
    return repo, res.task_id


@pytest.fixture(scope="module")
def trace(task):
    repo, task_id = task
    return build_trace(GitRepo(repo), task_id)


def branch_commits(repo: Path, task_id: str) -> list[dict[str, str]]:
    """Every commit of the task branch with its Agent-* trailers, read with plain git."""
    out = git(repo, "log", "--format=%H%x1f%(trailers:only,unfold)%x1e", f"agent/task/{task_id}")
    commits = []
    for rec in out.split("\x1e"):
        if not rec.strip():
            continue
        sha, _, block = rec.strip().partition("\x1f")
        trailers = dict(line.split(": ", 1) for line in block.strip().splitlines() if ": " in line)
        if trailers.get("Agent-Task") == task_id:
            commits.append({"sha": sha, **trailers})
    return commits


def step_records(repo: Path, task_id: str) -> list[StepRecord]:
    ref = f"agent/task/{task_id}"
    paths = [p for p in git(repo, "ls-tree", "-r", "--name-only", ref).split() if p.endswith("/step.json")]
    return [StepRecord.model_validate_json(git(repo, "show", f"{ref}:{p}")) for p in paths]


# ----------------------------------------------------------------------------- the model


def test_totals_equal_the_step_files_and_the_commit_trailers(task, trace):
    repo, task_id = task
    records = step_records(repo, task_id)
    assert len(records) >= 7
    usage = sum((r.usage for r in records), Usage())
    cost = sum(r.cost_usd for r in records)
    assert cost > 0, "the priced model should have cost something"
    assert trace.totals.usage == usage
    assert trace.totals.tokens == usage.total
    assert trace.totals.cost_usd == pytest.approx(cost, abs=1e-9)
    assert trace.totals.turns == sum(r.turns for r in records)
    assert trace.totals.step_duration_ms == sum(r.duration_ms for r in records)

    commits = branch_commits(repo, task_id)
    trailer_cost = sum(float(c["Agent-Cost-USD"]) for c in commits if "Agent-Cost-USD" in c)
    trailer_usage = sum((Usage.from_trailer(c["Agent-Usage"]) for c in commits if "Agent-Usage" in c), Usage())
    assert trace.totals.cost_usd == pytest.approx(trailer_cost, abs=1e-6 * len(commits))
    assert trailer_usage == usage
    assert trace.ledger_consistent and trace.ledger.consistent and not trace.ledger.problems
    assert trace.ledger.commits_cost_usd == pytest.approx(trailer_cost, abs=1e-9)

    # the breakdowns add up to the totals too
    assert sum(r.cost_usd for r in trace.by_model) == pytest.approx(cost, abs=1e-9)
    assert sum(r.cost_usd for r in trace.by_role) == pytest.approx(cost, abs=1e-9)
    assert [r.key for r in trace.by_model] == [MODEL_NAME]
    assert {r.key for r in trace.by_role} == {"planner", "executor", "finish"}
    assert trace.outcome == "done" and trace.answer and trace.summary


def test_every_step_of_the_branch_is_in_the_timeline_in_seq_order(task, trace):
    repo, task_id = task
    commits = branch_commits(repo, task_id)
    by_step = {int(c["Agent-Step"]): c for c in commits}
    seqs = [s.seq for s in trace.steps]
    assert seqs == sorted(seqs) == sorted(by_step)
    # commit order is not seq order (n2 and n3 ran side by side), the timeline is
    for s in trace.steps:
        c = by_step[s.seq]
        assert s.commit is not None and s.commit.sha == c["sha"]
        assert s.role == c["Agent-Role"]
        assert s.commit.subject
        if s.role == "executor":
            assert s.node == c["Agent-Node"] and s.node_title
            assert s.transcript and s.result is not None
        if s.has_record:
            assert s.started_at is not None and s.finished_at is not None
    roles = [s.role for s in trace.steps]
    assert roles[0] == "intake" and roles[-1] == "finish"
    # every step folder is one step of the timeline
    folders = {
        int(p.split("/")[-2].split("-")[0])
        for p in git(repo, "ls-tree", "-r", "--name-only", f"agent/task/{task_id}").split()
        if p.endswith("/step.json")
    }
    assert folders <= set(seqs)
    # the plan: statuses, marks, and the steps that ran each node
    nodes = {n.id: n for n in trace.plan.walk()}
    assert set(nodes) == {"n1", "n2", "n3"}
    for n in nodes.values():
        assert n.status == NodeStatus.done and n.mark == "[✓]"
        assert n.steps and all(trace.step(q).node == n.id for q in n.steps)
    assert trace.plan_model().get("n2").depends_on == ["n1"]


def test_a_tampered_ledger_is_flagged(task, tmp_path):
    repo, task_id = task
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    g = GitRepo(copy)
    t = build_trace(g, task_id)
    step = next(s for s in t.steps if s.role == "executor")
    path = f".agent/tasks/{task_id}/steps/{step.seq:04d}-{step.node}/step.json"
    rec = StepRecord.model_validate_json(g.read_file(t.tip, path))
    rec.cost_usd = round(rec.cost_usd + 0.5, 6)
    g.commit_files(t.branch, {path: rec.model_dump_json(by_alias=True).encode()}, "someone edits a step record", {})
    bad = build_trace(g, task_id)
    assert not bad.ledger_consistent
    assert any(f"step {step.seq}" in p for p in bad.ledger.problems)
    assert bad.totals.cost_usd == pytest.approx(t.totals.cost_usd + 0.5, abs=1e-6)


def test_a_task_in_flight(task, trace):
    """At the commit that dispatched n2 and n3: they are running, their steps not reported."""
    from gitops_agent.core.snapshot import load_snapshot
    from gitops_agent.observe.surfaces import progress_comment
    from gitops_agent.observe.trace_build import trace_from_snapshot

    repo, task_id = task
    g = GitRepo(repo)
    dispatch = next(s for s in trace.steps if s.role == "planner" and s.commit.subject.endswith("dispatch n2, n3"))
    mid = trace_from_snapshot(load_snapshot(g, task_id, tip=dispatch.commit.sha))
    assert mid.outcome == "unfinished" and mid.ledger_consistent
    assert [s.seq for s in mid.steps] == [s.seq for s in trace.steps if s.seq <= dispatch.seq + 2]
    running = [s for s in mid.steps if s.status == "running"]
    assert {s.node for s in running} == {"n2", "n3"} and all(s.commit is None and not s.has_record for s in running)
    assert {n.id: n.mark for n in mid.plan.walk()} == {"n1": "[✓]", "n2": "[→]", "n3": "[→]"}
    assert mid.totals.steps == dispatch.seq
    body = progress_comment(mid, "executing n2, n3")
    assert "is working on this" in body and "[→] `n2`" in body and "(running)" in body
    assert "3 model steps" in body
    assert "running" in render_html(mid)

    first = trace_from_snapshot(load_snapshot(g, task_id, tip=trace.steps[0].commit.sha))
    assert first.plan is None and [s.role for s in first.steps] == ["intake"] and first.outcome == "unfinished"
    assert "No plan yet" in render_html(first)


def test_task_can_be_named_by_branch_or_prefix(task, trace):
    repo, task_id = task
    g = GitRepo(repo)
    assert build_trace(g, f"agent/task/{task_id}", transcripts=False).tip == trace.tip
    assert build_trace(g, task_id[:10], transcripts=False).task_id == task_id
    r = cli("trace", "no-such-task", "--repo", str(repo))
    assert r.returncode == 1 and "no task 'no-such-task'" in r.stderr and "gitops-agent tasks" in r.stderr


# ----------------------------------------------------------------------------- the CLI


def test_cli_json_has_the_plan_and_the_steps(task, trace):
    repo, task_id = task
    r = cli("trace", task_id, "--repo", str(repo), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["task_id"] == task_id and data["outcome"] == "done"
    assert [n["id"] for n in data["plan"]["nodes"]] == ["n1", "n2", "n3"]
    assert [s["seq"] for s in data["steps"]] == [s.seq for s in trace.steps]
    assert data["ledger_consistent"] is True
    assert data["totals"]["cost_usd"] == pytest.approx(trace.totals.cost_usd)
    step = next(s for s in data["steps"] if s["node"] == "n1")
    assert step["commit"]["sha"] and step["usage"]["input_tokens"] > 0
    assert any(t["input"] and "code" in t["input"] for t in step["transcript"])


def test_cli_terminal_view(task, trace):
    repo, task_id = task
    r = cli("trace", task_id, "--repo", str(repo))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for node in ("n1", "n2", "n3"):
        assert node in out
    assert out.count("[✓]") >= 3
    for header in ("Step", "Role", "Model", "Turns", "Duration", "Input", "Output", "Cache read", "Cost", "Status", "Commit"):
        assert header in out
    assert re.search(r"^\s*Total\b", out, re.M)
    assert "Totals:" in out and f"${trace.totals.cost_usd:.4f}" in out
    assert "Ledger: consistent" in out
    for s in trace.steps:
        assert s.commit.short in out
    # model text is printed as text, not as rich markup
    assert "onerror" not in out  # (the planner's text is not part of the terminal view)


def test_terminal_shows_every_status_mark(trace):
    from rich.console import Console

    t = trace.model_copy(deep=True)
    leaves = list(t.plan.walk())
    for n, status in zip(leaves, (NodeStatus.failed, NodeStatus.running, NodeStatus.skipped)):
        n.status, n.mark = status, status.mark
    t.plan.nodes[1].title = "[bold]not markup[/bold]"
    con = Console(record=True, width=200, highlight=False)
    render_terminal(t, con)
    text = con.export_text()
    for mark in ("[!]", "[→]", "[-]"):
        assert mark in text
    assert "[bold]not markup[/bold]" in text


# ----------------------------------------------------------------------------- the HTML page


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in.append(tag)

    def handle_endtag(self, tag):
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data):
        if self._in and self._in[-1] == "style":
            self.styles.append(data)
        else:
            self.text.append(data)


def _external(url: str | None) -> bool:
    return bool(url) and re.match(r"\s*(https?:)?//", url, re.I) is not None


@pytest.fixture(scope="module")
def html_file(task, tmp_path_factory):
    repo, task_id = task
    out = tmp_path_factory.mktemp("html") / "trace.html"
    r = cli("trace", task_id, "--repo", str(repo), "--html", str(out))
    assert r.returncode == 0, r.stderr
    assert "trace page:" in r.stderr and not r.stdout
    return out


def test_html_is_self_contained(html_file):
    src = html_file.read_text()
    page = _Page()
    page.feed(src)
    for tag, attrs in page.tags:
        for attr in ("src", "srcset", "data", "poster", "background", "xlink:href"):
            assert not _external(attrs.get(attr)), (tag, attrs)
        if tag == "link":
            raise AssertionError(f"no <link> at all: {attrs}")
        if tag == "script":
            assert "src" not in attrs
        if tag in ("use", "image", "iframe", "object", "embed", "img", "video", "audio", "source"):
            assert not _external(attrs.get("href")), (tag, attrs)
    css = "\n".join(page.styles)
    assert "@import" not in css and "@font-face" not in css
    styled = [css] + [v for _, attrs in page.tags for v in attrs.values() if v and "url(" in v]
    for url in re.findall(r"url\(([^)]*)\)", "\n".join(styled)):  # only local references (#arrow)
        assert url.strip("'\" ").startswith("#"), url
    csp = next(a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]


def test_html_has_the_graph_timeline_code_and_costs(html_file, trace):
    src = html_file.read_text()
    page = _Page()
    page.feed(src)
    text = "".join(page.text)
    svgs = [a for t, a in page.tags if t == "svg"]
    assert any(a.get("id") == "plan-graph" for a in svgs)
    graph_nodes = [a["data-node"] for t, a in page.tags if "data-node" in a]
    assert sorted(graph_nodes) == sorted(n.id for n in trace.plan.walk())
    assert sum(1 for t, a in page.tags if t == "path" and "dep" in a.get("class", "")) == 2  # n1 -> n2, n1 -> n3
    for s in trace.steps:
        assert any(t == "details" and a.get("id") == f"step-{s.seq}" for t, a in page.tags)
        assert any(t == "tr" and a.get("id") == f"row-{s.seq}" for t, a in page.tags)
    # a step's code, its observation and its result
    assert 'rows = list(csv.DictReader(open("data/orders.csv")))' in text
    assert "ValueError: could not convert string to float" in text
    assert "exit code" in text
    assert f"${trace.totals.cost_usd:.4f}" in text
    assert "Per model" in text and "Per role" in text and MODEL_NAME in text


def test_html_escapes_model_output(html_file):
    src = html_file.read_text()
    assert EVIL not in src and 'onerror="alert(2)"' not in src
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in src
    assert "&lt;img src=x onerror=" in src
    page = _Page()
    page.feed(src)
    text = "".join(page.text)
    assert EVIL in text and EVIL_TEXT in text  # shown as text
    assert [t for t, _ in page.tags].count("script") == 1  # ours only
    # the only images are the task's own charts, embedded (the demo's n2 draws one)
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"].startswith("data:image/png;base64,"), imgs


def test_render_html_without_a_plan_or_steps(trace):
    t = trace.model_copy(update={"plan": None, "steps": [], "answer": "", "outcome": "unfinished"})
    src = render_html(t)
    assert "No plan yet" in src and "No answer yet" in src


# ----------------------------------------------------------------------------- headless Chromium

_BROWSER_OWN = re.compile(r"(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com|googleusercontent\.com)$")


class _RecordingProxy:
    """A proxy that only records what it is asked for (and answers nothing)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                line = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                if line:
                    self.requests.append(line)
            except OSError:
                pass
            finally:
                conn.close()

    def hosts(self) -> set[str]:
        out = set()
        for line in self.requests:
            parts = line.split()
            if len(parts) >= 2:
                target = parts[1]
                host = re.sub(r"^[a-z]+://", "", target).split("/", 1)[0].rsplit(":", 1)[0]
                out.add(host.lower())
        return out

    def close(self):
        self._stop = True
        self.sock.close()


def _chromium(*args: str, profile: Path, proxy: int | None = None) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-default-apps",
        "--no-pings",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    if proxy:
        cmd += [f"--proxy-server=http://127.0.0.1:{proxy}", "--proxy-bypass-list=<-loopback>"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium); CI installs it")
def test_html_in_headless_chromium(html_file, trace, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shot = tmp_path / "trace.png"
    r = _chromium(f"--screenshot={shot}", "--window-size=1280,2000", html_file.as_uri(), profile=tmp_path / "p1")
    assert shot.exists(), r.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    shutil.copy(shot, ARTIFACTS / "trace.png")

    # The rendered DOM, with a recording proxy in front of every request: the page asks for
    # nothing (Chromium's own update/time checks to Google hosts are not the page's).
    proxy = _RecordingProxy()
    try:
        # once as shipped (a CSP violation would show in the console log) ...
        r = _chromium("--dump-dom", html_file.as_uri(), profile=tmp_path / "p2", proxy=proxy.port)
        dom = r.stdout
        assert "Content Security Policy" not in r.stderr, r.stderr[-2000:]
        # ... and once without the CSP, so nothing is merely blocked
        bare = tmp_path / "bare.html"
        bare.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html_file.read_text()))
        r2 = _chromium("--dump-dom", bare.as_uri(), profile=tmp_path / "p3", proxy=proxy.port)
    finally:
        proxy.close()
    page_requests = {h for h in proxy.hosts() if not _BROWSER_OWN.search(h)}
    assert not page_requests, proxy.requests
    for d in (dom, r2.stdout):
        assert '<svg id="plan-graph"' in d
        assert 'id="timeline"' in d and all(f'id="row-{s.seq}"' in d for s in trace.steps)
        assert d.count('data-node="') == len(list(trace.plan.walk()))
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in d


# ----------------------------------------------------------------------------- OpenTelemetry


def test_telemetry_is_a_noop_without_setup(trace, monkeypatch):
    from gitops_agent.observe import telemetry

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    telemetry.reset()
    assert telemetry.setup() is False
    with telemetry.step_span("t", 3, "executor", node="n1") as step:
        with telemetry.model_call_span("claude-haiku-4-5", spec="anthropic:claude-haiku-4-5") as call:
            call.record(Usage(input_tokens=1, output_tokens=2), cost_usd=0.1)
    assert telemetry.export_trace(trace) == 0
    # no SDK: setup says so, even with an endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(telemetry, "sdk_available", lambda: False)
    assert telemetry.setup() is False
    # not even the API: stand-in spans
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    tracer = telemetry.get_tracer()
    assert isinstance(tracer, telemetry._NoopTracer)
    with telemetry.step_span("t", 3, "planner") as step:
        step.record(
            StepRecord(
                task_id="t",
                seq=3,
                role="planner",
                node="_plan",
                started_at="2026-01-01T00:00:00Z",
                finished_at="2026-01-01T00:00:00Z",
                status="failed",
                error="x",
            )
        )
    assert telemetry.export_trace(trace) == 0


def _sdk():
    sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed (extra: otel)")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    return sdk, InMemorySpanExporter


def test_telemetry_spans_with_genai_attributes(trace):
    from gitops_agent.observe import telemetry

    _, InMemorySpanExporter = _sdk()
    exporter = InMemorySpanExporter()
    assert telemetry.setup(exporter=exporter)
    try:
        with telemetry.step_span("task-1", 5, "executor", node="n2", agent="analyst", model="anthropic:claude-haiku-4-5") as step:
            with telemetry.model_call_span("claude-haiku-4-5", spec="anthropic:claude-haiku-4-5", max_tokens=4096) as call:
                call.record(
                    Usage(input_tokens=100, output_tokens=20, cache_read_tokens=900, cache_write_tokens=5),
                    cost_usd=0.0012,
                    response_model="claude-haiku-4-5-20251001",
                    finish_reason="tool_use",
                )
            step.record(
                StepRecord(
                    task_id="task-1",
                    seq=5,
                    role="executor",
                    node="n2",
                    model="claude-haiku-4-5",
                    status="failed",
                    turns=1,
                    usage=Usage(input_tokens=100),
                    cost_usd=0.0012,
                    started_at="2026-01-01T00:00:00Z",
                    finished_at="2026-01-01T00:00:01Z",
                    error="turn limit",
                )
            )
        spans = {s.name: s for s in exporter.get_finished_spans()}
        call_span = spans["chat claude-haiku-4-5"]
        a = call_span.attributes
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.system"] == "anthropic" and a["gen_ai.provider.name"] == "anthropic"
        assert a["gen_ai.request.model"] == "claude-haiku-4-5" and a["gen_ai.request.max_tokens"] == 4096
        assert a["gen_ai.usage.input_tokens"] == 1005 and a["gen_ai.usage.output_tokens"] == 20
        assert a["gen_ai.usage.cache_read.input_tokens"] == 900
        assert a["gen_ai.usage.cache_creation.input_tokens"] == 5
        assert a["gen_ai.response.model"] == "claude-haiku-4-5-20251001"
        assert tuple(a["gen_ai.response.finish_reasons"]) == ("tool_use",)
        step_span = spans["invoke_agent analyst n2"]
        assert call_span.parent.span_id == step_span.context.span_id
        assert step_span.attributes["gitops_agent.step.seq"] == 5
        assert step_span.status.status_code.name == "ERROR"

        # a finished task replayed from git: one span for the task, one per step, one per turn
        exporter.clear()
        n = telemetry.export_trace(trace)
        spans = exporter.get_finished_spans()
        assert n == len(spans) == 1 + sum(1 for s in trace.steps if s.started_at) + sum(len(s.transcript) for s in trace.steps)
        calls = [s for s in spans if s.name.startswith("chat ")]
        assert sum(s.attributes["gen_ai.usage.output_tokens"] for s in calls) == trace.totals.usage.output_tokens
        assert all(s.attributes["gen_ai.provider.name"] == "scripted" for s in calls)
        root = next(s for s in spans if s.parent is None)
        assert root.attributes["gitops_agent.cost_usd"] == pytest.approx(trace.totals.cost_usd)
    finally:
        telemetry.reset()


def test_trace_otlp_export_over_http(task, trace):
    """`gitops-agent trace --otlp` posts the spans to an OTLP/HTTP collector."""
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed (extra: otel)")
    pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        reason="opentelemetry-exporter-otlp-proto-http is not installed (extra: otel)",
    )
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[tuple[str, int]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.append((self.path, len(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        repo, task_id = task
        r = cli(
            "trace",
            task_id,
            "--repo",
            str(repo),
            "--otlp",
            "--json",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"},
        )
    finally:
        server.shutdown()
    assert r.returncode == 0, r.stderr
    assert "sent" in r.stderr and json.loads(r.stdout)["task_id"] == task_id
    assert got and got[0][0] == "/v1/traces" and got[0][1] > 100


def test_github_renderings_from_a_trace(task, trace):
    """The shared renderings take a Trace too: the commit links come from its history."""
    from gitops_agent.core.snapshot import load_snapshot
    from gitops_agent.observe.surfaces import pr_body, progress_comment, step_summary, task_marker

    repo, task_id = task
    url = lambda sha: f"https://example.test/commit/{sha}"  # noqa: E731
    body = progress_comment(trace, "finished", None, url)
    assert body.startswith(task_marker(task_id))
    for s in trace.steps:
        if s.role in ("planner", "executor", "finish"):
            assert url(s.commit.sha) in body
    assert f"${trace.totals.cost_usd:.4f}" in body
    pr = pr_body(trace, None, url)
    assert "```mermaid" in pr and EVIL not in pr
    # a Snapshot of the same tip renders the same text, less the links
    snap = load_snapshot(GitRepo(repo), task_id)
    assert step_summary(snap, "x") == step_summary(trace, "x")


def test_plan_layout_is_layered_and_does_not_overlap(trace):
    from gitops_agent.observe.html import NODE_H, NODE_W, layout_plan
    from gitops_agent.observe.trace import TraceNode, TracePlan

    def node(i, deps=(), kids=(), status=NodeStatus.pending):
        return TraceNode(id=i, title=f"title of {i}", status=status, mark=status.mark, depends_on=list(deps), children=list(kids))

    plan = TracePlan(
        version=1,
        nodes=[
            node("a", status=NodeStatus.done),
            node("b", ["a"], status=NodeStatus.failed),
            node("g", ["b"], kids=[node("c"), node("d", status=NodeStatus.skipped)]),
            node("e", ["a"]),
            node("f", ["g", "e", "c"], status=NodeStatus.running),
        ],
    )
    g = layout_plan(trace.model_copy(update={"plan": plan}))
    pos = {n.id: n for n in g.nodes}
    assert set(pos) == {"a", "b", "g", "c", "d", "e", "f"}
    for n in plan.walk():
        for d in n.depends_on:
            assert pos[d].y + NODE_H <= pos[n.id].y
        for c in n.children:
            assert pos[n.id].y + NODE_H <= pos[c.id].y
    boxes = list(pos.values())
    for i, p in enumerate(boxes):
        assert 0 <= p.x and p.x + NODE_W <= g.width and p.y + NODE_H <= g.height
        for q in boxes[i + 1 :]:
            assert p.y != q.y or abs(p.x - q.x) >= NODE_W, (p.id, q.id)
    kinds = sorted((e.src, e.dst, e.kind) for e in g.edges)
    assert ("a", "b", "dep") in kinds and ("g", "c", "tree") in kinds and ("e", "f", "dep") in kinds
    # a -> e -> f spans layers: its path bends through virtual points (more than one segment)
    long_edge = next(e for e in g.edges if (e.src, e.dst) == ("e", "f"))
    assert long_edge.d.count("C") + long_edge.d.count("L") >= 2


def test_a_follow_up_reopens_the_task_and_reconcile_commits_are_not_steps(task, tmp_path):
    from gitops_agent.steps.engine import Engine
    from gitops_agent.steps.intake import add_instruction

    repo, task_id = task
    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    model = ScriptedModel(
        {"planner": [{"tool": "finish", "input": {"answer": "The median too.", "summary": "With the median"}}]}, name=MODEL_NAME
    )
    rt = make_runtime(copy, config=AgentConfig(), models={"scripted:trace": model})
    before = build_trace(rt.git, task_id)
    job = add_instruction(rt, task_id, "Also the median, please")
    reopened = build_trace(rt.git, task_id)
    assert reopened.outcome == "unfinished"
    assert reopened.steps[-1].role == "intake" and reopened.steps[-1].has_record
    rt.git.commit_files(
        reopened.branch,
        {f".agent/tasks/{task_id}/reconcile.json": b"{}\n"},
        "agent(reconcile): re-dispatch plan",
        {"Agent-Task": task_id, "Agent-Role": "reconcile"},
    )
    Engine(rt).run_local([job])
    after = build_trace(rt.git, task_id)
    assert after.outcome == "done" and after.answer == "The median too."
    assert [s.role for s in after.steps[len(before.steps) :]] == ["intake", "planner", "finish"]
    assert [c.subject for c in after.events] == ["agent(reconcile): re-dispatch plan"]
    assert after.ledger_consistent and not after.ledger.problems
    assert after.totals.cost_usd > before.totals.cost_usd
    assert len(after.instructions) == 1 and after.instructions[0].startswith("Also the median, please (")  # with when it came


def test_html_renders_the_answer_as_markdown_and_keeps_it_safe(trace):
    answer = (
        "## Average per region\n\n| region | average |\n| -- | -: |\n| East | 71.40 |\n\n**East** is highest. "
        '<script>alert(3)</script> <img src=x onerror="alert(4)"> ![pixel](https://evil.example/p.png) '
        "[click](javascript:alert(5)) [docs](https://example.com/a)"
    )
    src = render_html(trace.model_copy(update={"answer": answer}))
    page = _Page()
    page.feed(src.split('<section id="answer">', 1)[1].split("</section>", 1)[0])
    tags = [t for t, _ in page.tags]
    assert "table" in tags and "h2" in tags and "strong" in tags, "the answer is rendered, not shown as markdown source"
    assert "| East |" not in src.split('<section id="answer">', 1)[1].split("</section>", 1)[0]
    assert "script" not in tags and "img" not in tags
    links = [dict(a) for t, a in page.tags if t == "a"]
    assert all(not (a.get("href") or "").startswith("javascript") for a in links)
    assert {"href": "https://example.com/a"}.items() <= next(a for a in links if a.get("href")).items()
    assert "evil.example" not in src or "<img" not in src
