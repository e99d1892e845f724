"""The low-cost route: the whole engine against an OpenAI-compatible endpoint (a local server
speaking chat.completions), including a tool call whose arguments are not valid JSON."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gitops_agent.app.local import make_runtime, run_question
from gitops_agent.settings.config import AgentConfig
from tests.fakes.openai_server import FakeOpenAI


def _text(msg: dict) -> str:
    c = msg.get("content")
    return c if isinstance(c, str) else "".join(p.get("text", "") for p in (c or []))


def responder(body: dict) -> dict:
    msgs = body["messages"]
    system, first = _text(msgs[0]), _text(msgs[1])
    tool_msgs = [m for m in msgs if m["role"] == "tool"]
    if "You are the planner" in system:
        if "There is no plan yet" in first:
            return {
                "tool_calls": [
                    {
                        "name": "update_plan",
                        "arguments": {"nodes": [{"id": "n1", "title": "Count", "goal": "count lines of numbers.txt"}]},
                    }
                ]
            }
        m = re.search(r"LINES=(\d+)", first)
        return {
            "tool_calls": [
                {"name": "finish", "arguments": {"answer": f"numbers.txt has {m.group(1)} lines", "summary": "counted"}}
            ]
        }
    if first.startswith("# Node n1:"):
        if not tool_msgs:
            return {"tool_calls": [{"name": "run_shell", "arguments": '{"command": "wc -l < numbers.txt'}]}  # truncated JSON
        if "not valid JSON" in _text(tool_msgs[-1]):
            return {"tool_calls": [{"name": "run_shell", "arguments": {"command": "echo LINES=$(wc -l < numbers.txt)"}}]}
        out = re.search(r"LINES=\d+", _text(tool_msgs[-1])).group(0)
        return {"tool_calls": [{"name": "finish_step", "arguments": {"status": "done", "result": out}}]}
    return {"content": "?"}


def test_openai_compatible_endpoint_runs_a_task(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
    repo = tmp_path / "r"
    repo.mkdir()
    (repo / "numbers.txt").write_text("".join(f"{i}\n" for i in range(37)))
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=u", "-c", "user.email=u@x", "commit", "-q", "-m", "i"],
    ):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    with FakeOpenAI(api_key="sk-local", responder=responder) as srv:
        cfg = AgentConfig()
        cfg.sandbox.backend = "subprocess"
        rt = make_runtime(repo, config=cfg)
        spec = f"openai:qwen2.5-coder@{srv.url}/v1"  # the model spec a user writes
        res = run_question(rt, "How many lines does numbers.txt have?", planner_model=spec, executor_model=spec)
        assert res.outcome == "done", res.reason
        assert res.answer == "numbers.txt has 37 lines"
        assert len(srv.requests) >= 5
        # every planner and executor call must call a tool: the server is told so (llama.cpp then holds a
        # small model to a grammar), one call per reply
        assert all(r.body.get("tool_choice") == "required" and r.body.get("parallel_tool_calls") is False for r in srv.requests)
