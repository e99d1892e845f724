"""The intake job: an issue, a comment, a review or a dispatch that asks a question or follows one up.

Who may trigger is decided before anything is cloned (gitops_agent/github/access.py); then the job
finds the task the issue or pull request has already, and either adds the follow-up to it (an
instruction or a command, gitops_agent/steps/commands.py) or creates a new task, and dispatches its
first step.

Separate from gitops_agent/github/steps.py (the StepRunner: the workspace, the routing of an event,
the plan/execute/finish steps, evolve and reconcile): intake is the one job that reads people's text
and checks their permission before there is a task. Its functions take the job's StepRunner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gitops_agent.brain.branch import brain_tip
from gitops_agent.core.errors import TaskExists
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.core.state import BRANCH_PREFIX, TASK_ID_RE, FollowUp, TaskModels, TaskSource
from gitops_agent.git.repo import GitRepo
from gitops_agent.github.events import Trigger, read_trigger
from gitops_agent.observe.render import md_text
from gitops_agent.runtime.context import Runtime
from gitops_agent.safety.chars import log_line
from gitops_agent.sandbox.requirements import RequirementsError
from gitops_agent.sandbox.workbench import WorkbenchError
from gitops_agent.settings.config import AgentConfig
from gitops_agent.steps.engine import Engine
from gitops_agent.steps.intake import add_instruction, create_task, new_task_id

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.github.steps import StepRunner

REVIEW_EVENTS = ("pull_request_review_comment", "pull_request_review")
# the events whose text (an issue, a comment, a review) may start or follow up a task
TEXT_EVENTS = ("issues", "issue_comment", *REVIEW_EVENTS)


def run_intake(runner: StepRunner, trigger: Trigger | None, event: dict[str, Any]) -> int:
    """Start a task or follow one up, as ``trigger`` asks (None: read from ``event`` with the
    repository's trigger words); dispatch its next step."""
    # Who may trigger is decided before anything is cloned: the settings of the default
    # branch are read through the API (one request), then the author's permission.
    early = runner.access.default_branch_config()
    cfg0 = early or runner.access.config_defaults()
    trigger = _admit(runner, trigger if trigger is not None else _read(runner, event, cfg0), cfg0)
    if trigger is None:
        return 0
    git = runner.clone(None)
    head = git.git("rev-parse", "HEAD").strip()
    cfg = runner.config(git, head)
    if early is None:  # the API could not give the settings: decide again with the clone's
        trigger = _admit(runner, _read(runner, event, cfg) if runner.s.event_name in TEXT_EVENTS else trigger, cfg)
        if trigger is None:
            return 0
    rt = runner.runtime(git, head, brain=brain_tip(git), cfg=cfg)
    job = _job_for(runner, rt, cfg, trigger, head)
    if job is None:
        return 0
    runner.outputs.update(task=job.task, branch=job.branch)
    runner.dispatcher.dispatch(job)
    snap = load_snapshot(rt.git, job.task)
    runner.publisher.progress(snap, "planning")
    runner.publisher.summary(snap, "intake")
    return 0


def _read(runner: StepRunner, event: dict[str, Any], cfg: AgentConfig) -> Trigger:
    s = runner.s
    return read_trigger(s.event_name, event, label=cfg.trigger.label, phrase=cfg.trigger.phrase, question_input=s.question)


def _admit(runner: StepRunner, trigger: Trigger, cfg: AgentConfig) -> Trigger | None:
    """``trigger`` if it asks for a task and its author may ask; None otherwise (said why, or
    refused where it was asked)."""
    if trigger.kind not in ("new", "follow-up"):
        print(f"gitops-agent: nothing to do: {log_line(trigger.why)}")
        return None
    ok, why = runner.access.allowed(trigger, cfg)
    if not ok:
        runner.access.refuse(trigger, why, cfg)
        return None
    return trigger


def _job_for(runner: StepRunner, rt: Runtime, cfg: AgentConfig, trigger: Trigger, head: str) -> Job | None:
    """The job intake dispatches: the next one of the task the issue or pull request has (a
    follow-up), or the first of a new task; None when nothing is to run (said why)."""
    over = rt.spend.problem() if rt.spend is not None else None
    if over is not None:  # the repository's spending cap: nothing starts until it resets
        print(f"gitops-agent: not started: {over}")
        runner.publisher.reply(trigger, f"Not started: {over}. Nothing ran and nothing was spent.")
        runner.outputs["refused"] = "spending-cap"
        return None
    problem = _workbench_problem(rt)
    if problem is not None:  # sandbox.requirements: refused before any branch or model call
        print(f"gitops-agent: not started: {log_line(problem)}")
        runner.publisher.reply(trigger, f"Not started: {problem}. Nothing ran and nothing was spent.")
        runner.outputs["refused"] = "workbench"
        return None
    if trigger.pull is not None:  # on a pull request: only the agent's own, and only its task
        existing = task_for_pull(runner.client, rt.git, trigger)
        if existing is None:
            return None
    else:
        existing = task_for_issue(rt.git, trigger.issue) if trigger.issue is not None else None
    if trigger.kind == "new" and existing:
        # one task per issue: GitHub sends issues.opened and issues.labeled for an issue
        # created with the label; a reopened or relabelled issue keeps its task
        print(f"gitops-agent: issue #{trigger.issue} has its task already ({existing}): nothing to do")
        return None
    if trigger.kind == "follow-up" and existing:
        return follow_up(runner, rt, cfg, trigger, existing)
    return _new_task(runner, rt, cfg, trigger, head)


def _workbench_problem(rt: Runtime) -> str | None:
    """Why the model's code could not run with the workbench these settings ask for, or None."""
    try:
        rt.workbench()
    except (RequirementsError, WorkbenchError) as e:
        return str(e)
    return None


def _new_task(runner: StepRunner, rt: Runtime, cfg: AgentConfig, trigger: Trigger, head: str) -> Job | None:
    """A new task on ``head`` of the default branch; None when another job made the issue's task
    meanwhile."""
    s = runner.s
    base_ref = rt.git.git("rev-parse", "--abbrev-ref", "HEAD").strip()
    models = TaskModels(planner=s.planner_model or cfg.models.planner, executor=s.executor_model or cfg.models.executor)
    starter = trigger.author.login if trigger.author else None
    writer = trigger.text_author or starter
    source = TaskSource(
        kind={"issue": "issue", "comment": "comment", "workflow_call": "workflow_call"}.get(trigger.source, "workflow_dispatch"),
        repo=s.repo,
        issue=trigger.issue,
        author=writer,
        url=trigger.url,
        started_by=starter if starter != writer else None,
        trusted=runner.access.trusted_author(writer, starter, cfg),
    )
    question = trigger.question
    # an issue's task id is fixed by the issue: two intake jobs racing for it make one task
    tid = new_task_id(question, issue=trigger.issue) if trigger.issue is not None else None
    try:
        _task, job = create_task(
            rt, question, base_ref=base_ref, base_sha=head, models=models, budget=cfg.budget, source=source, task_id=tid
        )
    except TaskExists:
        if tid is None:
            raise
        print(f"gitops-agent: issue #{trigger.issue} got its task from another job meanwhile ({tid}): nothing to do")
        return None
    return job


def follow_up(runner: StepRunner, rt: Runtime, cfg: AgentConfig, trigger: Trigger, task_id: str) -> Job | None:
    """An instruction or a command (gitops_agent/steps/commands.py) for an existing task. None when
    nothing is to run: the reply (help, a command given wrongly, a plan edit that cannot
    stand) has been posted where it was asked."""
    from gitops_agent.core.errors import StateFileError
    from gitops_agent.steps.commands import help_text, parse_command

    by = trigger.author.login if trigger.author else None
    cmd = parse_command(trigger.instruction) if trigger.instruction is not None else None
    helptext = help_text(cfg.trigger.phrase)
    if cmd is not None and (cmd.problem or not cmd.spec.recorded):
        runner.publisher.reply(trigger, f"{cmd.problem}\n\n{helptext}" if cmd.problem else helptext)
        return None
    try:
        Engine(rt).check_edits(task_id)  # a plan.json a person edited: refused before anything runs
        snap = load_snapshot(rt.git, task_id)
    except StateFileError as e:
        runner.publisher.reply(
            trigger,
            f"`{e.path}` cannot be used: {md_text(e.detail, 1000)}\n\nNothing ran. Fix it on the "
            f"branch, then comment `{cfg.trigger.phrase} continue`.",
        )
        return None
    check = cmd.spec.check(cmd, snap, cfg) if cmd is not None else None
    if check is not None and check.reply:
        runner.publisher.reply(trigger, f"{check.reply}\n\n{helptext}" if cmd.kind == "retry" else check.reply)
        return None
    max_usd = check.max_usd if check is not None else None
    where = (
        FollowUp(where="review" if trigger.comment_id else "pull", number=trigger.pull, comment_id=trigger.comment_id, by=by)
        if trigger.pull is not None
        else FollowUp(where="issue", number=trigger.issue, by=by)
    )
    where.command = cmd.text if cmd is not None else None
    text = f"{cmd.text} (budget now ${max_usd:g})" if cmd is not None and max_usd is not None else trigger.question
    if trigger.review_id is not None and trigger.pull is not None and cmd is None:  # a review: its line comments too
        from gitops_agent.github.events import cap_question, line_context

        text = cap_question(
            text
            + "".join(
                line_context(c, with_body=True) for c in runner.client.review_comments(trigger.pull, trigger.review_id, limit=5)
            )
        )
    # the settings of this round: the default branch's head, read through trusted.py like intake's
    head = rt.git.git("rev-parse", "HEAD").strip()
    return add_instruction(rt, task_id, text, by, where=where, max_usd=max_usd, settings_at=head)


def task_for_pull(client: Any, git: GitRepo, trigger: Trigger) -> str | None:
    """The task whose branch is the head of ``trigger.pull``; None (said why) when the pull
    request is not the agent's: a fork's, another branch, or a task branch that is gone."""
    branch, here = (trigger.branch, trigger.head_here) if trigger.branch else client.pull_head(trigger.pull)
    n = trigger.pull
    if not here:
        print(f"gitops-agent: pull request #{n} comes from a fork: it is not the agent's; nothing to do")
        return None
    tid = branch[len(BRANCH_PREFIX) :] if branch.startswith(BRANCH_PREFIX) else ""
    if not TASK_ID_RE.fullmatch(tid):
        print(f"gitops-agent: pull request #{n} (head {log_line(branch, 200)!r}) is not the agent's: nothing to do")
        return None
    if git.tip(branch) is None:
        print(f"gitops-agent: pull request #{n}: its task branch {branch} is gone: nothing to do")
        return None
    return tid


def task_for_issue(git: GitRepo, issue: int) -> str | None:
    """The task of ``issue`` among the remote's task branches (``agent/task/<issue>-…``, the last by
    name if several); None if it has none."""
    out = git.git("ls-remote", "--heads", "origin", f"refs/heads/{BRANCH_PREFIX}{issue}-*", network=True)
    ids = sorted(line.split("refs/heads/" + BRANCH_PREFIX, 1)[1] for line in out.splitlines() if "refs/heads/" in line)
    return ids[-1] if ids else None


__all__ = ["REVIEW_EVENTS", "TEXT_EVENTS", "follow_up", "run_intake", "task_for_issue", "task_for_pull"]
