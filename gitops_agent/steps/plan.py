"""The plan step: read the branch, let the planner model revise the plan (or finish), reserve
step numbers for the ready nodes, commit plan.json, and hand the ready nodes to executors."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pydantic import ValidationError

from gitops_agent.core.errors import FatalModelError, FormatError, ModelError, PushConflict
from gitops_agent.memory.experience import MEMORY_FILE
from gitops_agent.steps.memory_hooks import planner_memory
from gitops_agent.core.messages import Message, ModelRequest, ModelResponse, TextBlock, ToolResultBlock, ToolUseBlock
from gitops_agent.templates.prompts import render
from gitops_agent.observe.render import checklist, fmt_tokens
from gitops_agent.runtime.context import Runtime
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import Snapshot, load_snapshot
from gitops_agent.core.state import PLANNER_NODE, NodeStatus, StepRecord, Turn, Usage, dump_state, format_validation_error, step_dirname, utcnow
from gitops_agent.core.plan import Plan, PlanFinish, PlanNode, plan_problems
from gitops_agent.core.plan_edits import steer
from gitops_agent.core.tools import specs

_NODE_KEYS = {"id", "title", "goal", "agent", "depends_on", "children"}


def _clean_node(raw: Any, path: str) -> dict[str, Any]:
    """Keep the fields a model may set; statuses and results are the engine's."""
    if not isinstance(raw, dict):
        raise FormatError(f"{path} must be an object with id, title, goal, got {type(raw).__name__}")
    out = {k: v for k, v in raw.items() if k in _NODE_KEYS}
    if "children" in out:
        if not isinstance(out["children"], list):
            raise FormatError(f"{path}.children must be a list")
        out["children"] = [_clean_node(c, f"{path}.children[{i}]") for i, c in enumerate(out["children"])]
    if isinstance(out.get("depends_on"), str):
        out["depends_on"] = [out["depends_on"]]
    return out


def merge_plan(old: Plan | None, raw_nodes: Any, agents: set[str], goal: str, note: str = "", max_attempts: int | None = None) -> Plan:
    """The proposed tree merged with what is known: done, running and failed nodes keep their
    status and results; a failed node runs again (a new goal) only while it has had fewer than
    ``max_attempts`` runs (budget.max_node_attempts). Any problem is a FormatError worded for the
    model to fix."""
    if isinstance(raw_nodes, str):
        try:
            raw_nodes = json.loads(raw_nodes)
        except json.JSONDecodeError as e:
            raise FormatError(f"`nodes` is a string that is not valid JSON ({e.msg}); pass a JSON array of node objects") from None
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise FormatError("`nodes` must be a non-empty array of node objects")
    cleaned = [_clean_node(n, f"nodes[{i}]") for i, n in enumerate(raw_nodes)]
    try:
        nodes = [PlanNode.model_validate(n) for n in cleaned]
    except ValidationError as e:
        raise FormatError(f"a node is malformed: {format_validation_error(e)}") from None
    problems = plan_problems(nodes)
    if problems:
        raise FormatError("; ".join(problems))
    new = Plan(version=(old.version + 1) if old else 1, goal=goal, note=note, nodes=nodes)
    unknown = sorted({n.agent for n in new.walk() if n.agent not in agents})
    if unknown:
        raise FormatError(f"unknown agent(s) {unknown}; use one of {sorted(agents)}")

    if old is not None:
        errors: list[str] = []
        for o in old.walk():
            if not o.is_leaf or o.status == NodeStatus.pending or o.status == NodeStatus.skipped:
                continue
            n = new.get(o.id)
            if o.status in (NodeStatus.done, NodeStatus.running):
                if n is None:
                    errors.append(f"{o.status.value} node {o.id!r} is missing; keep it unchanged")
                    continue
                if not n.is_leaf or n.goal != o.goal or n.agent != o.agent or sorted(n.depends_on) != sorted(o.depends_on):
                    errors.append(
                        f"{o.status.value} node {o.id!r} was rewritten; keep its goal, agent, depends_on and "
                        f"no children exactly as they were"
                    )
                    continue
                n.status, n.result, n.step, n.attempts = o.status, o.result, o.step, o.attempts
            elif o.status == NodeStatus.failed and n is not None:
                n.attempts = o.attempts
                if n.goal == o.goal and n.is_leaf:
                    # kept unchanged: stays failed (and blocks its dependents)
                    n.status, n.result, n.step = o.status, o.result, o.step
                elif max_attempts is not None and o.attempts >= max_attempts:
                    errors.append(f"failed node {o.id!r} has run {o.attempts} times, the most a node may "
                                  f"(budget.max_node_attempts = {max_attempts}); keep it as it was, or finish")
                # a changed goal means: try again (status pending)
        errors += _spent_goals(old, new, max_attempts)
        if errors:
            raise FormatError("; ".join(errors))
    new.refresh_parents()
    if not new.ready() and not new.running():
        blocked = [n.id for n in new.blocked()]
        why = f"nodes {blocked} wait on failed nodes" if blocked else "every leaf is already done or failed"
        raise FormatError(f"no node can run: {why}. Call `finish` with the answer, or add or change nodes.")
    return new


def _spent_goals(old: Plan, new: Plan, max_attempts: int | None) -> list[str]:
    """A new node may not take up the goal of a failed node that ran as often as a node may (a
    new id would otherwise start its count again)."""
    if max_attempts is None:
        return []
    norm = lambda g: " ".join(g.lower().split())  # noqa: E731
    spent = {norm(o.goal): o for o in old.walk() if o.is_leaf and o.status == NodeStatus.failed and o.attempts >= max_attempts}
    return [f"node {n.id!r} takes up the goal of failed node {spent[norm(n.goal)].id!r}, which ran {spent[norm(n.goal)].attempts} "
            f"times, the most a node may (budget.max_node_attempts); finish, or give it another goal"
            for n in new.walk() if n.is_leaf and old.get(n.id) is None and norm(n.goal) in spent]


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


def _repo_files(rt: Runtime, snap: Snapshot, limit: int = 150) -> tuple[list[str], int]:
    # the tip, not the base: a shallow clone on a runner has only the tip (its tree is the base's
    # plus what the steps produced)
    files = [f for f in rt.git.list_files(snap.tip) if not f.startswith(".agent/")]
    return files[:limit], max(0, len(files) - limit)


def run_plan(rt: Runtime, job: Job, carried: tuple[Usage, float] | None = None) -> list[Job]:
    """``carried``: what earlier attempts of this step spent before their commit lost a race
    (gitops_agent/steps/engine.py); it is billed to this step's record."""
    snap = load_snapshot(rt.git, job.task)
    finish_job = lambda reason=None: Job(step="finish", task=job.task, branch=snap.branch, hop=job.hop + 1, reason=reason)  # noqa: E731

    seen = snap.plan.instructions_seen if snap.plan is not None else 0
    new_instructions = snap.task.instructions[seen:] if snap.plan is not None else []
    # people steering: plan.json edited on the branch, `/agent retry|stop|continue` (core/plan_edits.py)
    steered = steer(rt.git, snap, seen)
    new_fus = snap.task.follow_ups[seen:len(snap.task.instructions)] if snap.plan is not None else []
    preset: Plan | PlanFinish | None = None  # decided without a model call
    stop = next((fu for fu in new_fus if fu.command == "stop"), None)
    if stop is not None:
        preset = PlanFinish(outcome="failed", reason=f"stopped by @{stop.by} (`/agent stop`)" if stop.by else "stopped (`/agent stop`)")
    elif steered and snap.plan is not None and snap.plan.ready() and len(new_fus) == len(new_instructions) \
            and all(fu.command and fu.command.split()[0] in ("retry", "continue") for fu in new_fus):
        preset = snap.plan.model_copy(deep=True)  # exactly what the person asked for: no planner call this round
        preset.version += 1
        preset.note = "; ".join(steered)[:1000]
    if snap.plan is not None and snap.plan.finish is not None and preset is None:
        if not new_instructions and not steered:
            # whoever committed the finish decision sent the finish step; a duplicate plan dispatch
            # sends nothing (a lost finish is re-sent by reconcile / --resume: Engine.resume_jobs)
            rt.reporter.event("skip", step="plan", why="the plan is finished already")
            return []
        snap.plan.finish = None  # a follow-up instruction reopens a finished task
    problem = snap.budget_problem(hop=job.hop)
    if problem:
        rt.reporter.event("budget", why=str(problem))
        return [finish_job(str(problem))]
    new_ids = snap.sync_plan()
    if snap.plan is not None and not new_ids and not new_instructions and not steered and snap.plan.running():
        # A duplicate or early dispatch: the running executors will call the planner again.
        rt.reporter.event("skip", step="plan", why="no new results; executors still running")
        return []

    agent = rt.brain.planner
    trusted = [snap.task.models.planner, snap.task.models.executor]
    model = rt.agent_model(agent.model, snap.task.models.planner, trusted)
    executors = list(rt.brain.executors().values())
    dirs = rt.brain.prompt_dirs
    files, files_more = _repo_files(rt, snap)
    system = render(dirs, agent.prompts.system, agents=executors)
    # memory (agent/memory.py): the top-k similar past experiences, retrieved for the first plan
    # and recorded in memory.json of that step; later plan steps show the same ones.
    memory_rec, memory_new = planner_memory(rt, snap)
    experiences = memory_rec["shown"] if memory_rec else []
    task_text = render(dirs, agent.prompts.task, task=snap.task, files=files, files_more=files_more, experiences=experiences)
    new_r, old_r = _state_results(snap, new_ids) if snap.plan else ([], [])
    running = [n.id for n in snap.plan.running()] if snap.plan else []
    spent = f"${snap.cost_usd:.4f} of ${snap.task.budget.max_usd:g}, {snap.model_steps} of {snap.task.budget.max_steps} steps"
    state_text = render(
        dirs, agent.prompts.state or "planner_state.j2", plan=snap.plan, checklist=checklist(snap.plan),
        new_results=new_r, old_results=old_r, running=running, spent=spent,
        new_instructions=new_instructions + [f"(a person changed the plan) {n}" for n in steered],
    )
    results_meta = {n.id: snap.result_of(n.step, n.id) for n in (snap.plan.walk() if snap.plan else []) if n.step and n.status == NodeStatus.done}
    messages = [Message(role="user", content=[TextBlock(text=task_text, cache=True), TextBlock(text=state_text)])]

    seq = snap.next_seq()
    started, t0 = utcnow(), time.monotonic()
    usage, cost, turns = (carried[0], carried[1], []) if carried else (Usage(), 0.0, [])
    outcome: Plan | PlanFinish | None = None
    error: str | None = None
    for attempt in range(0 if preset is not None else agent.max_corrections + 1):
        request = ModelRequest(
            system=system, messages=messages, tools=specs(agent.tools), tool_choice="required", max_tokens=agent.max_tokens, timeout_s=max(1.0, snap.wall_left()),
            meta={"role": "planner", "script_key": "planner", "task": job.task, "results": results_meta, "attempt": attempt, "running": running,
                  "experiences": [e["task_id"] for e in experiences]},
        )
        try:
            resp = model.query(request)
        except (ModelError, FatalModelError) as e:
            error = f"planner model error: {e}"
            turns.append(Turn(turn=attempt + 1, model=model.name, error=error))
            break
        call_cost = rt.cost(model.name, resp.usage)
        usage, cost = usage + resp.usage, cost + call_cost
        turn = Turn(turn=attempt + 1, model=resp.model or model.name, text=resp.text, usage=resp.usage, cost_usd=call_cost, latency_ms=resp.latency_ms)
        turns.append(turn)
        try:
            outcome = _interpret(resp, snap, rt, turn)
            break
        except FormatError as e:
            turn.error = str(e)
            rt.reporter.event("plan_error", error=str(e))
            messages = messages + [Message(role="assistant", content=_trimmed(resp.content))] + [_error_reply(resp, str(e))]
            error = f"planner output rejected {attempt + 1} times; last error: {e}"
        # every correction is another paid call: none once the task's budget is spent
        over = snap.budget_problem(hop=job.hop, extra_usd=cost, extra_tokens=usage.total)
        if over:
            rt.reporter.event("budget", why=str(over))
            outcome = PlanFinish(outcome="budget", reason=f"{over} (the planner's answers were rejected: {error})"[:1000])
            break

    if preset is not None:
        outcome = preset
    duration_ms = int((time.monotonic() - t0) * 1000)
    plan = snap.plan
    next_jobs: list[Job] = []
    dispatched: list[str] = []
    if isinstance(outcome, Plan):
        plan = outcome
        running_now = len(plan.running())
        slots = max(0, rt.config.workers - running_now) if running_now else rt.config.workers
        next_seq = seq + 1
        for n in plan.ready()[: max(slots, 0)]:
            n.status, n.step, n.attempts, n.dispatched_at = NodeStatus.running, next_seq, n.attempts + 1, utcnow()
            next_jobs.append(Job(step="execute", task=job.task, branch=snap.branch, node=n.id, seq=next_seq, hop=job.hop + 1))
            dispatched.append(n.id)
            next_seq += 1
        plan.refresh_parents()
        action = "dispatch " + ", ".join(dispatched) if dispatched else "wait for " + ", ".join(n.id for n in plan.running())
        error = None
    else:
        if plan is None:
            plan = Plan(version=0, goal=snap.task.question)
        if isinstance(outcome, PlanFinish):
            plan.finish = outcome
            error = outcome.reason if outcome.outcome == "budget" else None
            action = "finish" if error is None else "stop: budget"
        else:
            plan.finish = PlanFinish(outcome="error", reason=error or "the planner gave no usable answer")
            action = "give up: " + (error or "")
        for n in plan.walk():
            if n.is_leaf and n.status == NodeStatus.pending:
                n.status = NodeStatus.skipped
        plan.refresh_parents()
        next_jobs.append(Job(step="finish", task=job.task, branch=snap.branch, hop=job.hop + 1))

    plan.instructions_seen = len(snap.task.instructions)
    record = StepRecord(
        task_id=job.task, seq=seq, role="planner", node=PLANNER_NODE, agent=agent.name, model=model.name,
        status="failed" if error else "done", turns=len(turns), usage=usage, cost_usd=round(cost, 6),
        duration_ms=duration_ms, started_at=started, finished_at=utcnow(), error=error, steered=steered[:50],
    )
    plan_bytes = dump_state(plan)
    record.plan_sha256 = hashlib.sha256(plan_bytes).hexdigest()
    sdir = snap.step_dir(seq, PLANNER_NODE)
    changes = {
        f"{snap.root}/plan.json": plan_bytes,
        f"{sdir}/step.json": dump_state(record),
        f"{sdir}/turns.jsonl": "".join(t.model_dump_json() + "\n" for t in turns).encode(),
    }
    if memory_rec is not None and memory_new:  # memory: which experiences this planner was shown
        changes[f"{sdir}/{MEMORY_FILE}"] = (json.dumps(memory_rec, indent=2, ensure_ascii=False) + "\n").encode()
    subject = f"agent(plan): v{plan.version} {action}"[:200]
    trailers = rt.trailers(job.task, seq, "planner", model=model.name, usage=usage, cost=record.cost_usd, duration_ms=duration_ms)
    try:
        sha = rt.git.commit_files(snap.branch, changes, subject, trailers, base=snap.tip)
    except PushConflict as e:
        e.spent = (usage, cost)  # type: ignore[attr-defined]  # paid for, even though its plan is stale
        raise
    if rt.on_commit:
        rt.on_commit(sha)
    rt.reporter.event(
        "plan", task=job.task, version=plan.version, counts=_counts(plan), dispatch=dispatched, action=action,
        tokens=fmt_tokens(usage.total), cost=record.cost_usd,
    )
    return next_jobs


def _counts(plan: Plan) -> str:
    c = plan.counts()
    return " ".join(f"{NodeStatus(k).mark}{v}" for k, v in c.items() if v)


TRIM_TEXT = 2000  # characters of a rejected reply's text sent back with the correction
TRIM_INPUT = 4000  # characters of a rejected tool call's arguments


def _trimmed(content: list[Any]) -> list[Any]:
    """A rejected reply as it goes back to the model with the error: long text and arguments cut
    (a small model's 7,000 tokens of junk, resent whole, overflowed its context)."""
    out: list[Any] = []
    for b in content:
        if isinstance(b, TextBlock) and len(b.text) > TRIM_TEXT:
            cut = len(b.text) - TRIM_TEXT
            out.append(b.model_copy(update={"text": f"{b.text[:TRIM_TEXT - 500]}\n[… {cut:,} characters cut …]\n{b.text[-500:]}"}))
        elif isinstance(b, ToolUseBlock) and len(json.dumps(b.input)) > TRIM_INPUT:
            out.append(b.model_copy(update={"input": {"_cut": f"{len(json.dumps(b.input)):,} characters of arguments cut"}}))
        else:
            out.append(b)
    return out


def _error_reply(resp: ModelResponse, error: str) -> Message:
    uses = resp.tool_uses
    if uses:
        blocks: list[Any] = [ToolResultBlock(tool_use_id=u.id, content=f"Error: {error}", is_error=True) for u in uses]
        return Message(role="user", content=blocks)
    return Message.user(f"Error: {error}")


def _interpret(resp: ModelResponse, snap: Snapshot, rt: Runtime, turn: Turn) -> Plan | PlanFinish:
    uses = resp.tool_uses
    if not uses:
        raise FormatError("reply with exactly one tool call: `update_plan` or `finish`")
    if len(uses) > 1:
        raise FormatError(f"reply with exactly one tool call, not {len(uses)}")
    use = uses[0]
    turn.tool, turn.input = use.name, use.input
    if "_raw" in use.input:
        raise FormatError(f"the arguments of `{use.name}` are not valid JSON: {str(use.input['_raw'])[:200]}")
    if use.name == "finish":
        answer, summary = use.input.get("answer"), use.input.get("summary", "")
        if not isinstance(answer, str) or not answer.strip():
            raise FormatError("`finish` needs a non-empty `answer` (Markdown)")
        if snap.plan is not None and snap.plan.running():
            raise FormatError(
                f"nodes {[n.id for n in snap.plan.running()]} are still running; wait for them "
                "(`update_plan` with the same nodes) before you finish"
            )
        return PlanFinish(answer=answer, summary=str(summary or "")[:300], outcome="done", lessons=_lessons(use.input.get("lessons")))
    if use.name == "update_plan":
        agents = set(rt.brain.executors())
        return merge_plan(snap.plan, use.input.get("nodes"), agents, goal=snap.task.question, note=str(use.input.get("note", ""))[:1000],
                          max_attempts=snap.task.budget.max_node_attempts)
    raise FormatError(f"unknown tool `{use.name}`; the planner's tools are `update_plan` and `finish`")


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
