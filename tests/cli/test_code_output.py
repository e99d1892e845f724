"""What the model's code printed, quoted in the Markdown we write (result.md, report.md, the
answer, `show`), reads as it was printed: a fenced code block, indentation kept, nothing escaped
(issue 23: a traceback became `\\<module>`, `\\*\\*`, flat lines and a stray ```html block)."""

from __future__ import annotations

import yaml

from tests.helpers import agent_command, git, make_repo, task_branch

CODE = 'def deep():\n    raise ValueError("x " + "*" * 2 + " <b> ```")\ndeep()\n'
TRACE = [
    "Traceback (most recent call last):",
    ', line 3, in <module>\n    deep()\n  File "',
    '    raise ValueError("x " + "*" * 2 + " <b> ```")',
    "ValueError: x ** <b> ```",
]


def _script(tmp_path):
    script = {
        "planner": [
            {"tool": "update_plan", "input": {"nodes": [{"id": "n1", "title": "Fail", "goal": "run failing code"}]}},
            {"when": "'n1' in results", "tool": "finish", "input": {"answer": "It said:\n\n{{ results.n1 }}", "summary": "s"}},
        ],
        "executor:n1": [
            {"tool": "run_python", "input": {"code": CODE}},
            {"tool": "finish_step", "input": {"status": "done", "result": "{{ last_output }}"}},
        ],
    }
    path = tmp_path / "script.yaml"
    path.write_text(yaml.safe_dump(script))
    return f"scripted:{path}"


def _quoted_as_printed(md: str, where: str) -> None:
    for piece in TRACE:
        assert piece in md, f"{where}: {piece!r} not as printed:\n{md}"
    assert "\\<" not in md and "\\*" not in md and "```html" not in md, f"{where}:\n{md}"
    fence = "````stderr\nTraceback"  # longer than the ``` the output holds, so it cannot close it
    assert fence in md and md.split(fence, 1)[1].split("\n````", 1)[0].count("\n") == 5, f"{where}:\n{md}"


def test_a_traceback_is_quoted_as_printed_in_every_markdown_we_write(tmp_path):
    repo = make_repo(tmp_path)
    r = agent_command("run", "--repo", str(repo), "-q", "--model", _script(tmp_path), "What does the code say?")
    assert r.returncode == 0, r.stderr
    branch = task_branch(repo)
    tid = branch.removeprefix("agent/task/")
    steps = git(repo, "ls-tree", "-d", "--name-only", f"{branch}:.agent/tasks/{tid}/steps/").split()
    result = git(repo, "show", f"{branch}:.agent/tasks/{tid}/steps/{next(s for s in steps if s.endswith('-n1'))}/result.md")
    _quoted_as_printed(result, "result.md")
    report = git(repo, "show", f"{branch}:.agent/tasks/{tid}/report.md")
    _quoted_as_printed(report.split("## Answer", 1)[1].split("## Plan", 1)[0], "report.md, the answer")
    _quoted_as_printed(report.split("## Results by node", 1)[1], "report.md, the results")
    _quoted_as_printed(r.stdout, "the printed answer")
    shown = agent_command("show", tid, "--repo", str(repo))
    assert shown.returncode == 0, shown.stderr
    _quoted_as_printed(shown.stdout.split("## Plan", 1)[0], "show")
