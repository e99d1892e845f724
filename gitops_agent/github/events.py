"""GitHub events in, dispatch payloads out: everything untrusted that reaches a step on
GitHub is parsed and validated here before any of it is used.

Event types of the hand-over (docs/design.md): `agent-plan`, `agent-execute`, `agent-finish`,
each with a `client_payload` of at most 10 keys.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gitops_agent.core.errors import BadName, ConfigError
from gitops_agent.core.seams import Job
from gitops_agent.core.state import BRANCH_PREFIX, NODE_ID_RE, TASK_ID_RE, format_validation_error
from gitops_agent.safety.text import inbound, strip_invisible
from gitops_agent.steps.intake import MAX_QUESTION_CHARS

EVENT_TYPES = {"plan": "agent-plan", "execute": "agent-execute", "finish": "agent-finish"}
STEP_OF_EVENT = {v: k for k, v in EVENT_TYPES.items()}
MAX_PAYLOAD_KEYS = 10


class DispatchPayload(BaseModel):
    """`client_payload` of an agent-* repository_dispatch. Strict: unknown keys, a branch that is
    not this task's branch, or an id outside its pattern are refused."""

    model_config = ConfigDict(extra="forbid")
    task: str
    branch: str
    node: str | None = None
    step: int | None = Field(None, ge=1, le=100_000, description="The step number reserved for an execute job.")
    hop: int = Field(0, ge=0, le=10_000)
    reason: str | None = Field(None, max_length=500)
    stop: Literal["budget", "error"] | None = None

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if not TASK_ID_RE.fullmatch(v):
            raise ValueError(f"bad task id {v[:100]!r}")
        return v

    @field_validator("node")
    @classmethod
    def _node(cls, v: str | None) -> str | None:
        if v is not None and not NODE_ID_RE.fullmatch(v):
            raise ValueError(f"bad node id {v[:100]!r}")
        return v

    @model_validator(mode="after")
    def _branch(self) -> "DispatchPayload":
        if self.branch != BRANCH_PREFIX + self.task:
            raise ValueError(f"branch {self.branch[:200]!r} is not the task's branch {BRANCH_PREFIX + self.task!r}")
        return self

    @classmethod
    def parse(cls, raw: Any) -> "DispatchPayload":
        if not isinstance(raw, dict):
            raise ConfigError("client_payload must be a JSON object")
        if len(raw) > MAX_PAYLOAD_KEYS:
            raise ConfigError(f"client_payload has {len(raw)} keys; at most {MAX_PAYLOAD_KEYS} are allowed")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(f"bad client_payload: {format_validation_error(e)}") from None

    @classmethod
    def of(cls, job: Job) -> "DispatchPayload":
        return cls(
            task=job.task,
            branch=job.branch,
            node=job.node,
            step=job.seq,
            hop=job.hop,
            reason=(job.reason or None) and job.reason[:500],
            stop=job.stop,
        )

    def job(self, step: str) -> Job:
        return Job(
            step=step,
            task=self.task,
            branch=self.branch,
            node=self.node,
            seq=self.step,
            hop=self.hop,
            reason=self.reason,
            stop=self.stop,
        )

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Actor(BaseModel):
    login: str
    type: str = "User"

    @property
    def is_bot(self) -> bool:
        return self.type == "Bot" or self.login.endswith("[bot]")


class Trigger(BaseModel):
    """What an incoming event asks for, once read."""

    kind: Literal["new", "follow-up", "step", "reconcile", "ignore"]
    step: str | None = None
    question: str = ""
    issue: int | None = None
    author: Actor | None = None
    # who wrote the text (an issue's author, when a writer labelled someone else's issue)
    text_author: str | None = None
    payload: DispatchPayload | None = None
    why: str = ""
    url: str | None = None
    source: Literal["issue", "comment", "workflow_dispatch", "workflow_call", "repository_dispatch", "schedule", "other"] = (
        "other"
    )
    # a follow-up on a pull request: its number, the head branch when the event names it (and
    # whether it lives in this repository), and the review comment to reply to
    pull: int | None = None
    branch: str | None = None
    head_here: bool = True
    comment_id: int | None = None
    review_id: int | None = None  # a review: its line comments are read and given with it
    instruction: str | None = None  # what follows the phrase, without any review context (commands are read from it)


def load_event(path: str | Path | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"event file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"event file {path} is not JSON: {e.msg}") from None


def _phrase_rest(body: str, phrase: str) -> str | None:
    """The text after the trigger phrase when the comment starts with it (`/agent …`)."""
    text = (body or "").lstrip()
    if not phrase or not text.lower().startswith(phrase.lower()):
        return None
    rest = text[len(phrase) :]
    if rest and not rest[0].isspace():
        return None  # "/agents" is not "/agent"
    return rest.strip()


def cap_question(text: str, limit: int = MAX_QUESTION_CHARS) -> str:
    """Text from GitHub (issue title and body, a comment, a dispatch input) made a question of at
    most ``limit`` characters: a longer one is cut, with a note saying so, rather than refused --
    the person who asked gets an answer about the first part instead of a failed job, and the
    model never sees more than the limit."""
    if len(text) <= limit:
        return text
    note = f"\n\n[gitops-agent: the text was cut here; it had {len(text):,} characters, the limit is {limit:,}]"
    return text[: max(0, limit - len(note))].rstrip() + note


def read_trigger(
    event_name: str, event: dict[str, Any], *, label: str, phrase: str, question_input: str | None = None
) -> Trigger:
    """Decide what an event asks for. Untrusted text (titles, bodies) is only ever data here."""
    sender = event.get("sender") or {}
    actor = Actor(login=str(sender.get("login", "")), type=str(sender.get("type", "User"))) if sender else None
    if event_name == "repository_dispatch":
        action = str(event.get("action", ""))
        step = STEP_OF_EVENT.get(action)
        if step is None:
            return Trigger(
                kind="ignore", why=f"repository_dispatch {action[:80]!r} is not an agent event", source="repository_dispatch"
            )
        payload = DispatchPayload.parse(event.get("client_payload"))
        return Trigger(kind="step", step=step, payload=payload, author=actor, source="repository_dispatch")
    if event_name == "schedule":
        return Trigger(kind="reconcile", source="schedule")
    if event_name in ("workflow_dispatch", "workflow_call") or question_input:
        inputs = event.get("inputs") or {}
        q = inbound(question_input or inputs.get("question") or "").strip()
        if inputs.get("reconcile") in (True, "true"):
            return Trigger(kind="reconcile", source="workflow_dispatch")
        if not q:
            return Trigger(kind="ignore", why="no question given (input `question`)", source="workflow_dispatch")
        return Trigger(
            kind="new",
            question=cap_question(q),
            author=actor,
            source="workflow_call" if event_name == "workflow_call" else "workflow_dispatch",
        )
    if event_name == "issues":
        return _issue_trigger(event, actor, label, phrase)
    if event_name == "issue_comment":
        return _comment_trigger(event, sender, phrase)
    if event_name in ("pull_request_review_comment", "pull_request_review"):
        return _review_trigger(event_name, event, phrase)
    return Trigger(kind="ignore", why=f"event {event_name!r} is not handled")


def _issue_trigger(event: dict[str, Any], actor: Actor | None, label: str, phrase: str) -> Trigger:
    """An `issues` event: a new task when the issue is opened (or reopened) with the label or the phrase,
    or gets the label."""
    issue = event.get("issue") or {}
    action = event.get("action")
    labels = [str(x.get("name", "")) for x in issue.get("labels") or []]
    if issue.get("pull_request") is not None:
        return Trigger(kind="ignore", why="pull requests are not questions", source="issue")
    if action == "labeled" and (event.get("label") or {}).get("name") != label:
        return Trigger(kind="ignore", why=f"label is not {label!r}", source="issue")
    if action in ("opened", "reopened") and label not in labels and _phrase_rest(issue.get("body") or "", phrase) is None:
        return Trigger(kind="ignore", why=f"issue has no {label!r} label and does not start with {phrase!r}", source="issue")
    if action not in ("opened", "labeled", "reopened"):
        return Trigger(kind="ignore", why=f"issues.{action} does not start a task", source="issue")
    title, body = str(issue.get("title") or ""), str(issue.get("body") or "")
    rest = _phrase_rest(body, phrase)
    # what the labeller saw on GitHub, not what the markup hides (gitops_agent/safety/text.py)
    q = f"{' '.join(strip_invisible(title).split())}\n\n{inbound(rest if rest is not None else body)}".strip()
    writer = str((issue.get("user") or {}).get("login") or "") or None
    return Trigger(
        kind="new",
        question=cap_question(q),
        issue=int(issue["number"]),
        author=actor,
        url=issue.get("html_url"),
        source="issue",
        text_author=writer,
    )


def _comment_trigger(event: dict[str, Any], sender: dict[str, Any], phrase: str) -> Trigger:
    """A new comment that starts with the phrase: a follow-up of the issue's task, or of the task whose
    branch is the head of the pull request it is on."""
    if event.get("action") != "created":
        return Trigger(kind="ignore", why="only new comments count", source="comment")
    comment = event.get("comment") or {}
    rest = _phrase_rest(str(comment.get("body") or ""), phrase)
    if rest is None:
        return Trigger(kind="ignore", why=f"comment does not start with {phrase!r}", source="comment")
    issue = event.get("issue") or {}
    author = comment.get("user") or sender
    actor = Actor(login=str(author.get("login", "")), type=str(author.get("type", "User")))
    title = " ".join(strip_invisible(str(issue.get("title") or "")).split())
    if issue.get("pull_request") is not None:  # a comment on a pull request: its head says which task
        return Trigger(
            kind="follow-up",
            question=cap_question(inbound(rest) or "continue"),
            pull=int(issue["number"]),
            author=actor,
            url=comment.get("html_url"),
            source="comment",
            text_author=actor.login,
            instruction=inbound(rest),
        )
    return Trigger(
        kind="follow-up",
        question=cap_question(inbound(rest) or title),
        issue=int(issue["number"]),
        author=actor,
        url=comment.get("html_url"),
        source="comment",
        text_author=actor.login,
        instruction=inbound(rest),
    )


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text`` (so the text cannot close it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def line_context(c: dict[str, Any], with_body: bool = False) -> str:
    """What a review comment on a line is about, for the planner: the file, the lines and the
    diff hunk (in a fence the hunk cannot close); with ``with_body``, the comment itself too."""
    path = " ".join(strip_invisible(str(c.get("path") or "")).split())[:300].replace("`", "'")
    if not path:
        return ""
    line, start = c.get("line") or c.get("original_line"), c.get("start_line") or c.get("original_start_line")
    lines = f"lines {start}-{line}" if isinstance(start, int) and isinstance(line, int) and start != line else f"line {line}"
    hunk = strip_invisible(str(c.get("diff_hunk") or ""))[-3000:]
    fence = _fence(hunk)
    said = f' "{" ".join(inbound(str(c.get("body") or "")).split())[:500]}"' if with_body else ""
    return f"\n\n(a review comment on `{path}`, {lines}{said}; the diff there:)\n{fence}diff\n{hunk}\n{fence}"


def _review_trigger(event_name: str, event: dict[str, Any], phrase: str) -> Trigger:
    """A line comment (`pull_request_review_comment`) or a review (`pull_request_review`) on a
    pull request: a follow-up when it starts with the phrase (a review also when it requests
    changes), with the file, lines and diff hunk it is about. Who may steer is checked later."""
    pr = event.get("pull_request") or {}
    head = pr.get("head") or {}
    base_repo = str(((pr.get("base") or {}).get("repo") or {}).get("full_name") or "")
    head_repo = str((head.get("repo") or {}).get("full_name") or "")
    common = dict(
        pull=int(pr.get("number") or 0) or None,
        branch=str(head.get("ref") or "") or None,
        head_here=bool(head_repo) and head_repo.lower() == base_repo.lower(),
        source="comment",
    )
    if event_name == "pull_request_review_comment":
        if event.get("action") != "created":
            return Trigger(kind="ignore", why="only new review comments count", **common)
        c = event.get("comment") or {}
        rest = _phrase_rest(str(c.get("body") or ""), phrase)
        if rest is None:
            return Trigger(kind="ignore", why=f"review comment does not start with {phrase!r}", **common)
        who = c.get("user") or event.get("sender") or {}
        actor = Actor(login=str(who.get("login", "")), type=str(who.get("type", "User")))
        context = line_context(c)
        cid = c.get("id") if isinstance(c.get("id"), int) else None
        return Trigger(
            kind="follow-up",
            question=cap_question((inbound(rest) or "Address this review comment.") + context),
            author=actor,
            url=c.get("html_url"),
            text_author=actor.login,
            comment_id=cid,
            instruction=inbound(rest),
            **common,
        )
    if event.get("action") != "submitted":
        return Trigger(kind="ignore", why="only submitted reviews count", **common)
    review = event.get("review") or {}
    body = str(review.get("body") or "")
    rest = _phrase_rest(body, phrase)
    if rest is None and str(review.get("state") or "").lower() != "changes_requested":
        return Trigger(kind="ignore", why=f"the review neither starts with {phrase!r} nor requests changes", **common)
    who = review.get("user") or event.get("sender") or {}
    actor = Actor(login=str(who.get("login", "")), type=str(who.get("type", "User")))
    text = inbound(rest if rest is not None else body).strip() or "The reviewer requested changes; address the review comments."
    return Trigger(
        kind="follow-up",
        question=cap_question(f"{text}\n\n(from a review of the pull request)"),
        author=actor,
        url=review.get("html_url"),
        text_author=actor.login,
        instruction=inbound(rest) if rest is not None else None,
        review_id=review.get("id") if isinstance(review.get("id"), int) else None,
        **common,
    )


def check_branch_name(name: str) -> str:
    if not name.startswith(BRANCH_PREFIX) or not TASK_ID_RE.fullmatch(name[len(BRANCH_PREFIX) :]):
        raise BadName(f"bad task branch name {name[:200]!r}")
    return name
