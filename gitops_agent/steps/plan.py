"""The plan step: read the branch, let the planner model revise the plan (or finish), reserve
step numbers for the ready nodes, commit plan.json, and hand the ready nodes to executors."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from gitops_agent.core.errors import FormatError, PushConflict
from gitops_agent.core.messages import Message, ModelResponse, TextBlock
from gitops_agent.core.plan import Plan, PlanFinish
from gitops_agent.core.plan_edits import steer
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import Snapshot, load_snapshot
from gitops_agent.core.state import PLANNER_NODE, NodeStatus, StepRecord, Turn, Usage, dump_state, step_dirname, utcnow
from gitops_agent.core.tools import specs
from gitops_agent.git.messages import shorten
from gitops_agent.memory.experience import MEMORY_FILE
from gitops_agent.observe.render import checklist, fmt_tokens
from gitops_agent.runtime.context import Runtime
from gitops_agent.steps.commands import parse_command
from gitops_agent.steps.conversation import Conversation, Done, Exit, one_call
from gitops_agent.steps.memory_hooks import planner_memory
from gitops_agent.steps.plan_merge import merge_plan
from gitops_agent.templates.prompts import render

__all__ = ["merge_plan", "run_plan", "step_dir_for"]


def _state_results(snap: Snapshot, new_ids: list[str]) -> tuple[list[dict], list[dict]]:
    new_r, old_r = [], []
    assert snap.plan is not None
    for n in snap.plan.walk():
        if not n.is_leaf or n.step is None or n.status not in (NodeStatus.done, NodeStatus.failed):
            continue
        rec = snap.step_record(n.step, n.id)
        item = {
            "node": n.id,
            "title": n.title,
            "status": n.status.value,
            "error": rec.error if rec else None,
            "result": snap.result_of(n.step, n.id).strip() or "(empty result)",
        }
        (new_r if n.id in new_ids else old_r).append(item)
    return new_r, old_r


_FILE_LIST_LIMIT = 150


def _tree_files(rt: Runtime, snap: Snapshot) -> list[str]:
    # the tip, not the base: a shallow clone on a runner has only the tip (its tree is the base's
    # plus what the steps produced)
    return [f for f in rt.git.list_files(snap.tip) if not f.startswith(".agent/")]


@dataclass
class _Round:
    """What is new since the planner last looked: instructions, people's edits and commands, and
    a decision they already made (no model call then)."""

    new_instructions: list[str]
    steered: list[str]
    preset: Plan | PlanFinish | None

    @classmethod
    def read(cls, rt: Runtime, snap: Snapshot) -> "_Round":
        seen = snap.plan.instructions_seen if snap.plan is not None else 0
        new_instructions = snap.task.instructions[seen:] if snap.plan is not None else []
        # people steering: plan.json edited on the branch, `/agent retry|stop|continue` (core/plan_edits.py)
        steered = steer(rt.git, snap, seen)
        new_fus = snap.task.follow_ups[seen : len(snap.task.instructions)] if snap.plan is not None else []
        commands = [(fu, parse_command(fu.command) if fu.command else None) for fu in new_fus]
        for fu, cmd in commands:
            if cmd is not None and not cmd.problem and snap.plan is not None:
                steered += cmd.spec.steer(cmd, snap.plan, fu.by)
        preset: Plan | PlanFinish | None = None
        stop = next((fu for fu, cmd in commands if cmd is not None and cmd.spec.ends), None)
        if stop is not None:
            word = stop.command.split()[0]
            preset = PlanFinish(
                outcome="failed", reason=f"stopped by @{stop.by} (`/agent {word}`)" if stop.by else f"stopped (`/agent {word}`)"
            )
        elif (
            steered
            and snap.plan is not None
            and snap.plan.ready()
            and len(new_fus) == len(new_instructions)
            and all(cmd is not None and cmd.spec.no_planner for _fu, cmd in commands)
        ):
            preset = snap.plan.model_copy(deep=True)  # exactly what the person asked for: no planner call this round
            preset.version += 1
            preset.note = "; ".join(steered)[:1000]
        return cls(new_instructions, steered, preset)


def run_plan(rt: Runtime, job: Job, carried: tuple[Usage, float] | None = None) -> list[Job]:
    """``carried``: what earlier attempts of this step spent before their commit lost a race
    (gitops_agent/steps/engine.py); it is billed to this step's record."""
    snap = load_snapshot(rt.git, job.task)
    rnd = _Round.read(rt, snap)
    if snap.plan is not None and snap.plan.finish is not None and rnd.preset is None:
        if not rnd.new_instructions and not rnd.steered:
            # whoever committed the finish decision sent the finish step; a duplicate plan dispatch
            # sends nothing (a lost finish is re-sent by reconcile / --resume: Engine.resume_jobs)
            rt.reporter.event("skip", step="plan", why="the plan is finished already")
            return []
        snap.plan.finish = None  # a follow-up instruction reopens a finished task
    problem = snap.budget_problem(hop=job.hop)
    if problem:
        rt.reporter.event("budget", why=str(problem))
        return [Job(step="finish", task=job.task, branch=snap.branch, hop=job.hop + 1, reason=str(problem), stop="budget")]
    new_ids = snap.sync_plan()
    if snap.plan is not None and not new_ids and not rnd.new_instructions and not rnd.steered and snap.plan.running():
        # A duplicate or early dispatch: the running executors will call the planner again.
        rt.reporter.event("skip", step="plan", why="no new results; executors still running")
        return []

    agent = rt.brain.planner
    model = rt.agent_model(agent.model, snap.task.models.planner, [snap.task.models.planner, snap.task.models.executor])
    seq, started, t0 = snap.next_seq(), utcnow(), time.monotonic()
    memory_rec, memory_new = planner_memory(rt, snap)
    talk = Conversation(
        model=model,
        system="",
        tools=specs(agent.tools),
        price=rt.cost,
        max_tokens=agent.max_tokens,
        carried=carried or (Usage(), 0.0),
        timeout=snap.wall_left,
        budget=lambda usd, tokens: snap.budget_problem(hop=job.hop, extra_usd=usd, extra_tokens=tokens),
    )
    outcome, error = (rnd.preset, None) if rnd.preset is not None else _ask(rt, job, snap, agent, talk, new_ids, rnd, memory_rec)
    plan, next_jobs, action, dispatched = _decide(rt, job, snap, seq, outcome, error)
    if isinstance(outcome, PlanFinish) and outcome.outcome == "budget":
        error = outcome.reason
    record = StepRecord(
        task_id=job.task,
        seq=seq,
        role="planner",
        node=PLANNER_NODE,
        agent=agent.name,
        model=model.name,
        status="failed" if error else "done",
        turns=len(talk.turns),
        usage=talk.usage,
        cost_usd=round(talk.cost, 6),
        duration_ms=int((time.monotonic() - t0) * 1000),
        started_at=started,
        finished_at=utcnow(),
        error=error,
        steered=rnd.steered[:50],
    )
    _commit(rt, job, snap, plan, record, talk, memory_rec if memory_new else None, action)
    rt.reporter.event(
        "plan",
        task=job.task,
        version=plan.version,
        counts=_counts(plan),
        dispatch=dispatched,
        action=action,
        tokens=fmt_tokens(talk.usage.total),
        cost=record.cost_usd,
    )
    return next_jobs


def _ask(
    rt: Runtime,
    job: Job,
    snap: Snapshot,
    agent: Any,
    talk: Conversation,
    new_ids: list[str],
    rnd: _Round,
    memory_rec: dict | None,
) -> tuple[Plan | PlanFinish | None, str | None]:
    """The planner's answer (a plan or a finish), or why there is none."""
    dirs = rt.brain.prompt_dirs
    tree = _tree_files(rt, snap)
    files, files_more = tree[:_FILE_LIST_LIMIT], max(0, len(tree) - _FILE_LIST_LIMIT)
    talk.system = render(dirs, agent.prompts.system, agents=list(rt.brain.executors().values()))
    # memory: the top-k similar past experiences, retrieved for the first plan and recorded in
    # memory.json of that step; later plan steps show the same ones
    experiences = memory_rec["shown"] if memory_rec else []
    task_text = render(
        dirs,
        agent.prompts.task,
        task=snap.task,
        files=files,
        files_more=files_more,
        experiences=experiences,
        # the declared databases' tables and columns, read on the host; and the tree's data files (`files`)
        data_sources=rt.data_schema(tree),
    )
    new_r, old_r = _state_results(snap, new_ids) if snap.plan else ([], [])
    running = [n.id for n in snap.plan.running()] if snap.plan else []
    spent = f"${snap.cost_usd:.4f} of ${snap.task.budget.max_usd:g}, {snap.model_steps} of {snap.task.budget.max_steps} steps"
    state_text = render(
        dirs,
        agent.prompts.state or "planner_state.j2",
        plan=snap.plan,
        checklist=checklist(snap.plan),
        new_results=new_r,
        old_results=old_r,
        running=running,
        spent=spent,
        new_instructions=rnd.new_instructions + [f"(a person changed the plan) {n}" for n in rnd.steered],
    )
    results = {
        n.id: snap.result_of(n.step, n.id)
        for n in (snap.plan.walk() if snap.plan else [])
        if n.step and n.status == NodeStatus.done
    }
    talk.meta = lambda n: {
        "role": "planner",
        "script_key": "planner",
        "task": job.task,
        "results": results,
        "attempt": n - 1,
        "running": running,
        "experiences": [e["task_id"] for e in experiences],
    }

    def handle(resp: ModelResponse, turn: Turn) -> Done:
        try:
            return Done(_interpret(resp, snap, rt, turn))
        except FormatError as e:
            rt.reporter.event("plan_error", error=str(e))
            raise

    first = Message(role="user", content=[TextBlock(text=task_text, cache=True), TextBlock(text=state_text)])
    out = talk.run([first], handle, max_calls=agent.max_corrections + 1)
    if out.exit == Exit.done:
        return out.value, None
    if out.exit == Exit.budget:  # every correction is another paid call: none once the task's budget is spent
        rt.reporter.event("budget", why=str(out.why))
        why = f"{out.why} (the planner's answers were rejected)" if out.calls > 1 else str(out.why)
        return PlanFinish(outcome="budget", reason=why[:1000]), None
    if out.exit in (Exit.model_error, Exit.fatal):
        return None, f"planner model error: {out.why}"
    return None, f"planner output rejected {out.calls} times; last error: {out.why}"


def _decide(
    rt: Runtime, job: Job, snap: Snapshot, seq: int, outcome: Plan | PlanFinish | None, error: str | None
) -> tuple[Plan, list[Job], str, list[str]]:
    """(the plan to commit, the jobs that follow, what this step did, the nodes it dispatched)."""
    if isinstance(outcome, Plan):
        plan = outcome
        running_now = len(plan.running())
        slots = max(0, rt.config.workers - running_now) if running_now else rt.config.workers
        jobs, dispatched, next_seq = [], [], seq + 1
        for n in plan.ready()[: max(slots, 0)]:
            n.status, n.step, n.attempts, n.dispatched_at = NodeStatus.running, next_seq, n.attempts + 1, utcnow()
            jobs.append(Job(step="execute", task=job.task, branch=snap.branch, node=n.id, seq=next_seq, hop=job.hop + 1))
            dispatched.append(n.id)
            next_seq += 1
        plan.refresh_parents()
        action = "dispatch " + ", ".join(dispatched) if dispatched else "wait for " + ", ".join(n.id for n in plan.running())
        return plan, jobs, action, dispatched
    plan = snap.plan if snap.plan is not None else Plan(version=0, goal=snap.task.question)
    if isinstance(outcome, PlanFinish):
        plan.finish = outcome
        action = "stop: budget" if outcome.outcome == "budget" else "finish"
    else:
        plan.finish = PlanFinish(outcome="error", reason=error or "the planner gave no usable answer")
        action = "give up: " + (error or "")
    for n in plan.walk():
        if n.is_leaf and n.status == NodeStatus.pending:
            n.status = NodeStatus.skipped
    plan.refresh_parents()
    return plan, [Job(step="finish", task=job.task, branch=snap.branch, hop=job.hop + 1)], action, []


def _commit(
    rt: Runtime,
    job: Job,
    snap: Snapshot,
    plan: Plan,
    record: StepRecord,
    talk: Conversation,
    memory_rec: dict | None,
    action: str,
) -> None:
    plan.instructions_seen = len(snap.task.instructions)
    plan_bytes = dump_state(plan)
    record.plan_sha256 = hashlib.sha256(plan_bytes).hexdigest()
    sdir = snap.step_dir(record.seq, PLANNER_NODE)
    changes = {
        f"{snap.root}/plan.json": plan_bytes,
        f"{sdir}/step.json": dump_state(record),
        f"{sdir}/turns.jsonl": "".join(t.model_dump_json() + "\n" for t in talk.turns).encode(),
    }
    if memory_rec is not None:  # memory: which experiences this planner was shown
        changes[f"{sdir}/{MEMORY_FILE}"] = (json.dumps(memory_rec, indent=2, ensure_ascii=False) + "\n").encode()
    subject = shorten(f"agent(plan): v{plan.version} {action}", 200)
    trailers = rt.step_trailers(record)
    try:
        sha = rt.git.commit_files(snap.branch, changes, subject, trailers, base=snap.tip)
    except PushConflict as e:
        e.spent = (talk.usage, talk.cost)  # type: ignore[attr-defined]  # paid for, even though its plan is stale
        raise
    if rt.on_commit:
        rt.on_commit(sha)


def _counts(plan: Plan) -> str:
    c = plan.counts()
    return " ".join(f"{NodeStatus(k).mark}{v}" for k, v in c.items() if v)


def _interpret(resp: ModelResponse, snap: Snapshot, rt: Runtime, turn: Turn) -> Plan | PlanFinish:
    uses = resp.tool_uses
    if len(uses) == 1:
        turn.tool, turn.input = uses[0].name, uses[0].input
    use = one_call(resp, ("update_plan", "finish"))
    if use.name == "finish":
        answer, summary = use.input.get("answer"), use.input.get("summary", "")
        if not isinstance(answer, str) or not answer.strip():
            raise FormatError("`finish` needs a non-empty `answer` (Markdown)")
        if snap.plan is not None and snap.plan.running():
            raise FormatError(
                f"nodes {[n.id for n in snap.plan.running()]} are still running; wait for them "
                "(`update_plan` with the same nodes) before you finish"
            )
        return PlanFinish(
            answer=answer, summary=str(summary or "")[:300], outcome="done", lessons=_lessons(use.input.get("lessons"))
        )
    agents = set(rt.brain.executors())
    return merge_plan(
        snap.plan,
        use.input.get("nodes"),
        agents,
        goal=snap.task.question,
        note=str(use.input.get("note", ""))[:1000],
        max_attempts=snap.task.budget.max_node_attempts,
    )


def _lessons(raw: Any) -> list[str]:
    """finish's optional `lessons` (memory): short non-empty lines, at most 10 of 300 characters."""
    if isinstance(raw, str):
        raw = raw.splitlines()
    if not isinstance(raw, list):
        return []
    out = []
    for x in raw:
        line = " ".join(str(x).split()).lstrip("-* ").strip() if isinstance(x, (str, int, float)) else ""
        if line:
            out.append(line[:300])
    return out[:10]


def step_dir_for(task_root: str, seq: int, node: str) -> str:
    return f"{task_root}/steps/{step_dirname(seq, node)}"
