"""Renderings for GitHub: the progress comment, the PR body, the step summary, and workflow
commands (groups, error annotations) with GitHub's escaping."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from gitops_agent.core.plan import Plan, PlanFinish, PlanNode
from gitops_agent.core.snapshot import Snapshot
from gitops_agent.core.state import NodeStatus, StepRecord, TaskFile, TaskModels, Usage
from gitops_agent.observe.gha import gha_error, gha_escape_data, gha_escape_property, gha_group
from gitops_agent.observe.render import checklist, cost_table, md_text, mermaid
from gitops_agent.observe.surfaces import append_step_summary, pr_body, progress_comment, step_summary, task_marker

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)
TASK = "42-avg-order-value"
SHAS = {2: "a" * 40, 3: "b" * 40, 4: "c" * 40, 5: "d" * 40}


def rec(seq, role, node, cost, usage, status="done", turns=1, model="claude-haiku-4-5"):
    return StepRecord(
        task_id=TASK,
        seq=seq,
        role=role,
        node=node,
        model=model,
        status=status,
        turns=turns,
        usage=usage,
        cost_usd=cost,
        duration_ms=1500,
        started_at=T0,
        finished_at=T0,
    )


def snapshot(finish: PlanFinish | None = None) -> Snapshot:
    plan = Plan(
        version=3,
        goal="q",
        nodes=[
            PlanNode(id="n1", title="Load the data", status=NodeStatus.done, step=3),
            PlanNode(
                id="n2",
                title="Average per region @alice <b>bold</b> | pipe `tick`",
                depends_on=["n1"],
                status=NodeStatus.failed,
                step=4,
            ),
            PlanNode(id="n3", title="Monthly trend", depends_on=["n1"], status=NodeStatus.running, step=5),
            PlanNode(
                id="g1",
                title="Write-up",
                children=[
                    PlanNode(id="n4", title="Draft ``` fence", status=NodeStatus.pending),
                    PlanNode(id="n5", title="Charts", status=NodeStatus.skipped),
                ],
            ),
        ],
        finish=finish,
    )
    steps = [
        rec(2, "planner", "_plan", 0.0050, Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=3000)),
        rec(3, "executor", "n1", 0.0031, Usage(input_tokens=1834, output_tokens=412, cache_read_tokens=12000), turns=3),
        rec(4, "executor", "n2", 0.0042, Usage(input_tokens=900, output_tokens=100), status="failed", turns=2),
    ]
    if finish:
        steps.append(rec(6, "finish", "_finish", 0.0, Usage(), model=""))
    task = TaskFile(
        task_id=TASK,
        question="What is the average order value per region?\nAnd which is highest?",
        base_ref="main",
        base_sha="f" * 40,
        models=TaskModels(planner="anthropic:claude-sonnet-4-5", executor="anthropic:claude-haiku-4-5"),
        created_at=T0,
    )
    return Snapshot(git=None, branch=f"agent/task/{TASK}", tip="e" * 40, task=task, plan=plan, steps=steps, files=[])


def commit_url(sha: str) -> str:
    return f"https://github.com/o/r/commit/{sha}"


def test_progress_comment():
    snap = snapshot()
    body = progress_comment(snap, "executing n3 (step 5)", "https://github.com/o/r/actions/runs/7", commit_url, commits=SHAS)
    lines = body.splitlines()
    assert lines[0] == f"<!-- gitops-agent:task={TASK} -->" == task_marker(TASK)
    assert "working on this" in body
    assert "executing n3 (step 5)" in body and "(https://github.com/o/r/actions/runs/7)" in body
    # the checklist: every node, its mark, links to its step commits
    assert f"- [✓] `n1` Load the data · [step 3]({commit_url(SHAS[3])})" in body
    assert f"[step 4]({commit_url(SHAS[4])})" in body
    for mark, node in (("[!]", "n2"), ("[→]", "n3"), ("[ ]", "n4"), ("[-]", "n5"), ("[ ]", "g1")):
        assert f"{mark} `{node}`" in body
    assert "  - [ ] `n4`" in body  # nested under g1
    # tokens and cost so far
    assert f"${snap.cost_usd:.4f}" == "$0.0123" and "$0.0123" in body
    assert "19.4k tokens" in body
    # the planner's commit is linked too
    assert f"[2 planner]({commit_url(SHAS[2])})" in body
    # model text cannot mention, inject HTML or break the list
    assert "`@alice`" in body and not re.search(r"(?<!`)@alice", body)  # shown as code: nobody is notified
    assert "<b>" not in body and "&lt;b&gt;bold&lt;/b&gt;" in body
    assert "\\| pipe \\`tick\\`" in body


def test_progress_comment_minimal_and_finished():
    body = progress_comment(snapshot(), "planning")
    assert body.startswith(task_marker(TASK)) and "[step 3]" not in body and "step 3" in body
    done = progress_comment(snapshot(PlanFinish(answer="East.", summary="East leads", outcome="done")), "finished")
    assert "has an answer" in done
    stopped = progress_comment(snapshot(PlanFinish(outcome="budget", reason="budget: dollars 2.1 > 2.0")), "stopped")
    assert "stopped (budget)" in stopped and "Why it stopped" in stopped


def test_pr_body():
    answer = (
        "## Answer\n\n| region | avg |\n|---|---:|\n| East | 71.40 |\n\ncc @bob <!-- gitops-agent:task=other -->\n"
        "```\n<!-- gitops-agent:task=other2 -->\nif a < b: pass\n```"
    )
    snap = snapshot(PlanFinish(answer=answer, summary="East has the highest average", outcome="done"))
    body = pr_body(snap, "https://github.com/o/r/actions/runs/9", commit_url, commits=SHAS, issue=42)
    assert body.startswith(task_marker(TASK) + "\n## East has the highest average")
    assert "Answers #42." in body
    assert "| East | 71.40 |" in body  # the answer keeps its Markdown
    assert "`@bob`" in body and not re.search(r"(?<!`)@bob", body)  # nobody is notified
    assert body.count("gitops-agent:task=") == 1  # no forged marker, even in code
    assert "if a < b: pass" in body  # code is left alone
    # the plan as a mermaid block, closed, and not broken by a title with a fence in it
    assert "```mermaid\nflowchart TD\n" in body
    fences = [ln for ln in body.splitlines() if ln.startswith("```")]
    assert fences == ["```", "```", "```mermaid", "```"]
    block = body.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    assert block == mermaid(snap.plan)
    assert 'n1["✓ n1: Load the data"]:::done' in block and "n1 --> n2" in block and "g1 --- n4" in block
    # the cost table with its total, and links
    assert "| **total** |" in body and "**$0.0123**" in body
    assert f"[3]({commit_url(SHAS[3])})" in body
    assert "https://github.com/o/r/actions/runs/9" in body
    assert f"gitops-agent trace {TASK} --html" in body


def test_pr_body_for_a_stopped_task():
    snap = snapshot(PlanFinish(outcome="error", reason="planner model error: 529 overloaded"))
    body = pr_body(snap)
    assert "**Outcome: error** — planner model error: 529 overloaded" in body
    assert "_(no answer)_" in body


def test_step_summary():
    snap = snapshot()
    md = step_summary(snap, "execute n2 (step 4)")
    assert md.startswith("### gitops-agent · execute n2 (step 4)")
    assert f"Task `{TASK}` (unfinished)" in md
    assert "[!] `n2`" in md and "| **total** |" in md and "$0.0123" in md
    assert "| 4 ✗ | executor | n2 |" in md


def test_existing_renderings_still_hold():
    snap = snapshot()
    cl = checklist(snap.plan, here="n3")
    assert "- [✓] n1 Load the data" in cl and "← you" in cl
    table = cost_table(snap.steps)
    assert table.splitlines()[-1].endswith("**$0.0123** |")
    m = mermaid(snap.plan)
    assert m.startswith("flowchart TD") and "`" not in m and "classDef done" in m


def test_md_text():
    assert md_text("a\nb   c") == "a b c"
    assert md_text("x" * 50, 10) == "x" * 9 + "…"
    assert md_text("<script>") == "&lt;script&gt;"
    assert md_text("[link](javascript:x)") == "\\[link\\](javascript:x)"
    assert md_text("mail me@host.org or @carol") == "mail me@host.org or `@carol`"


# ----------------------------------------------------------------------------- workflow commands


def test_gha_escaping():
    assert gha_escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert gha_escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_gha_error_under_actions(monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    gha_error("step 5 failed: 50% of\nrows bad", file="src/a,b.py", line=3)
    out = capsys.readouterr().out
    assert out == "::error file=src/a%2Cb.py,line=3::step 5 failed: 50%25 of%0Arows bad\n"
    gha_error("plain")
    assert capsys.readouterr().out == "::error::plain\n"


def test_gha_error_elsewhere(monkeypatch, capsys):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    gha_error("it broke\nbadly", file="x.py")
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == "error: x.py: it broke\nbadly\n"


def test_gha_group(monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with pytest.raises(RuntimeError):
        with gha_group("execute n2\nstep 5"):
            print("inside")
            raise RuntimeError("boom")
    assert capsys.readouterr().out == "::group::execute n2%0Astep 5\ninside\n::endgroup::\n"
    monkeypatch.setenv("GITHUB_ACTIONS", "false")
    with gha_group("plan"):
        print("inside")
    assert capsys.readouterr().out == "== plan\ninside\n"


def test_append_step_summary(monkeypatch, tmp_path):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert append_step_summary("x") is False
    f = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(f))
    assert append_step_summary("### one") and append_step_summary("two\n")
    assert f.read_text() == "### one\ntwo\n"
