"""The execute step (CodeAct): one plan node, carried out by a model that writes code and runs
it in the sandbox, in a throwaway working tree of the task branch. Everything it produced, its
turns and its result are one commit in `steps/<seq>-<node>/`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gitops_agent.brain.branch import list_tools
from gitops_agent.core.errors import FatalModelError, ModelError
from gitops_agent.core.messages import Message, ModelRequest, ModelResponse, TextBlock, ToolResultBlock
from gitops_agent.core.cancel import CANCEL
from gitops_agent.git.checkout import Caps
from gitops_agent.steps.memory_hooks import attach_data
from gitops_agent.safety.policy import decide
from gitops_agent.safety.text import outbound
from gitops_agent.templates.prompts import render
from gitops_agent.observe.render import checklist, fmt_tokens
from gitops_agent.runtime.context import Runtime
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import Snapshot, load_snapshot
from gitops_agent.core.state import CascadeAttempt, NodeStatus, Observation, StepRecord, Turn, Usage, dump_state, utcnow
from gitops_agent.core.plan import PlanNode
from gitops_agent.core.tools import specs

_FILE_LIST_LIMIT = 200
MAX_RESULT_CHARS = 100_000  # a node's result.md (the model's finish_step text)


def _dep_nodes(snap: Snapshot, node: PlanNode) -> list[PlanNode]:
    """The done leaves this node depends on (directly, through a parent, or an ancestor)."""
    assert snap.plan is not None
    ids = list(snap.plan._all_deps(node))
    out, seen = [], set()
    while ids:
        dep = snap.plan.get(ids.pop(0))
        if dep is None or dep.id in seen:
            continue
        seen.add(dep.id)
        if dep.children:  # depending on a parent means on all of its leaves
            ids.extend(c.id for c in dep.children)
            continue
        if dep.step is not None and dep.status == NodeStatus.done:
            out.append(dep)
    return out


def _dep_results(snap: Snapshot, node: PlanNode) -> list[dict[str, str]]:
    return [{"node": d.id, "title": d.title, "result": snap.result_of(d.step, d.id).strip()} for d in _dep_nodes(snap, node) if d.step is not None]


def _sharing(snap: Snapshot) -> int:
    """How many nodes run at once in this snapshot (this one included): each spends from the same
    remaining budget, which none of them sees the others spend until they commit."""
    return max(1, len(snap.plan.running())) if snap.plan is not None else 1


def _observation_text(rt: Runtime, obs: Observation) -> str:
    return render(rt.brain.prompt_dirs, "observation.j2", obs=obs)


def run_execute(rt: Runtime, job: Job) -> list[Job]:
    snap = load_snapshot(rt.git, job.task)
    plan_job = Job(step="plan", task=job.task, branch=snap.branch, hop=job.hop + 1)
    node = snap.plan.get(job.node or "") if snap.plan else None
    if node is None or not node.is_leaf:
        rt.reporter.event("skip", step="execute", node=job.node, why="no such leaf in the plan")
        return []
    seq = job.seq or node.step
    if seq is None:
        rt.reporter.event("skip", step="execute", node=node.id, why="node was never dispatched")
        return []
    if snap.step_record(seq, node.id) is not None:
        rt.reporter.event("skip", step="execute", node=node.id, why=f"step {seq} is already committed")
        return []
    if node.status != NodeStatus.running or node.step != seq:
        rt.reporter.event("skip", step="execute", node=node.id, why=f"stale dispatch (node is {node.status.value}, step {node.step})")
        return []
    problem = snap.budget_problem(hop=job.hop)
    if problem:
        rt.reporter.event("budget", why=str(problem))
        return [Job(step="finish", task=job.task, branch=snap.branch, hop=job.hop + 1, reason=str(problem))]

    agent = rt.brain.executor(node.agent)
    # a cascade (brain): the first model, then the next ones while the node fails or runs out of turns
    trusted = [snap.task.models.planner, snap.task.models.executor]
    chain = [agent.model, *agent.cascade]
    # every model built now: a bad spec fails before any turn is paid for
    models = [rt.agent_model(spec, snap.task.models.executor, trusted) for spec in chain]
    model = models[0]
    # a brain's turn limit is data: it can lower the trusted budget's, never raise it
    max_turns = min(agent.max_turns or snap.task.budget.max_turns, snap.task.budget.max_turns)
    sdir = snap.step_dir(seq, node.id)
    started, t0 = utcnow(), time.monotonic()
    usage, cost = Usage(), 0.0
    turns: list[Turn] = []
    status, result, error = "failed", "", None
    if rt.sandbox is None and rt.data_dir is None:
        attach_data(rt)  # memory: shared data sets, fetched once, mounted read-only (never fails the step)
    rt.get_sandbox()  # fail here, before any checkout, when no allowed sandbox backend works

    # The checkout holds the repository and the step folders of the nodes this one depends on
    # (their produced files), not the whole task history: it stays the same size at step 200.
    # It is a plain directory (no .git): nothing the code leaves there is ever run by the host.
    keep = [f"{snap.step_dir(d.step, d.id)}/" for d in _dep_nodes(snap, node) if d.step is not None]
    policy = rt.config.policy
    caps = Caps(max_file_bytes=int(policy.max_file_mb * 2**20), max_total_bytes=int(policy.max_step_mb * 2**20),
                max_entries=policy.max_files)
    with rt.git.checkout(snap.tip, name=f"{job.task}-{seq}", skip=[".agent/"], keep=keep) as co:
        wt = co.path
        files = [f for f in rt.git.list_files(snap.tip) if not f.startswith(".agent/")]
        (wt / sdir).mkdir(parents=True, exist_ok=True)
        node_text = render(
            rt.brain.prompt_dirs, agent.prompts.task, task=snap.task, node=node, checklist=checklist(snap.plan, here=node.id),
            dep_results=_dep_results(snap, node), files=files[:_FILE_LIST_LIMIT], files_more=max(0, len(files) - _FILE_LIST_LIMIT),
            step_dir=sdir, max_turns=max_turns, data_dir=rt.data_dir,
        )
        # brain tools (agent/brainbranch.py): helper modules the code can import, listed by docstring
        system = render(rt.brain.prompt_dirs, agent.prompts.system, agent=agent, py_tools=list_tools(rt.brain))
        attempts: list[CascadeAttempt] = []
        finished = False
        for k, spec in enumerate(chain):
            if k:
                if finished and status == "done" or (error or "").startswith("stopped:"):
                    break  # done, or out of budget: no further model
                over = snap.budget_problem(hop=job.hop, extra_usd=cost * _sharing(snap), extra_tokens=usage.total * _sharing(snap))
                if over:  # the first model spent the budget: the next one does not start
                    error = f"stopped: {over}"
                    attempts[-1].error = attempts[-1].error or error
                    break
                model = models[k]
                why = " ".join((error or result or "it reported failure").split())[:300]
                node_note = f"\n\n(An earlier attempt with {attempts[-1].model} did not succeed: {why}. The files it left are in the working tree.)"
                rt.reporter.event("note", text=f"{node.id}: {attempts[-1].model} did not succeed; trying {model.name} (cascade)")
                status, result, error, finished = "failed", "", None, False
            else:
                node_note = ""
            first_turn, cost_before = len(turns), cost
            finished, status, result, error = _attempt(
                rt, job, snap, node, agent, model, system, node_text + node_note, wt, sdir, max_turns, turns, len(turns))
            cost = sum(t.cost_usd for t in turns)
            usage = sum((t.usage for t in turns), Usage())
            if not finished and error is None:
                error = f"turn limit reached ({max_turns} turns) before finish_step"
            failed_why = error if not finished else (" ".join(result.split())[:300] or "finish_step failed") if status == "failed" else None
            attempts.append(CascadeAttempt(model=model.name, status=status if finished else "failed", turns=len(turns) - first_turn,
                                           cost_usd=round(cost - cost_before, 6), error=failed_why))
        if not finished:
            if error is None:
                error = f"turn limit reached ({max_turns} turns) before finish_step"
            last = next((t.observation for t in reversed(turns) if t.observation), None)
            result = f"**Not finished:** {error}.\n"
            if last is not None:
                result += f"\nLast observation (exit code {last.exit_code}):\n\n```\n{(last.stdout or last.stderr)[-1500:]}\n```\n"
        collected = co.collect(caps)
        existing = {p for p in co.manifest if not p.startswith(".agent/")}

    decision = decide(collected.changes, policy, own_dir=sdir, existing=existing)
    refused = collected.refused + decision.refused
    duration_ms = int((time.monotonic() - t0) * 1000)
    record = StepRecord(
        task_id=job.task, seq=seq, role="executor", node=node.id, agent=agent.name, model=model.name,
        status=status if finished else "failed", turns=len(turns), usage=usage, cost_usd=round(cost, 6),
        duration_ms=duration_ms, started_at=started, finished_at=utcnow(),
        artifacts=sorted(p for p, d in decision.kept.items() if d is not None), refused=refused, flagged=decision.flagged, error=error if not finished or status == "failed" else None,
        cascade=attempts if len(chain) > 1 else [],
    )
    changes: dict[str, bytes | None] = dict(decision.kept)
    changes[f"{sdir}/turns.jsonl"] = "".join(t.model_dump_json() + "\n" for t in turns).encode()
    # GitHub renders result.md when it is opened: sanitised like a comment (no remote image, no hidden text)
    changes[f"{sdir}/result.md"] = (outbound(result.strip()[:MAX_RESULT_CHARS], tuple(rt.config.github.image_hosts)) + "\n").encode()
    changes[f"{sdir}/step.json"] = dump_state(record)
    subject = f"agent(execute): {node.id} {node.title}"[:200]
    trailers = rt.trailers(job.task, seq, "executor", node=node.id, model=model.name, usage=usage, cost=record.cost_usd, duration_ms=duration_ms)
    sha = rt.git.commit_files(snap.branch, changes, subject, trailers, base=snap.tip, modes=decision.modes)
    if rt.on_commit:
        rt.on_commit(sha)
    rt.reporter.event("step", node=node.id, status=record.status, turns=record.turns, seconds=duration_ms / 1000, cost=record.cost_usd)
    if error and error.startswith("model error (not retryable)"):
        return [Job(step="finish", task=job.task, branch=snap.branch, hop=job.hop + 1, reason=f"{node.id}: {error}")]
    return [plan_job]



def _attempt(rt: Runtime, job: Job, snap: Snapshot, node: Any, agent: Any, model: Any, system: str, node_text: str, wt: Path,
             sdir: str, max_turns: int, turns: list[Turn], offset: int) -> tuple[bool, str, str, str | None]:
    """One model's CodeAct loop on the node (appending to ``turns``, numbered after ``offset``):
    (finished, status, result, error)."""
    messages: list[Message] = [Message(role="user", content=[TextBlock(text=node_text)], cache=True)]
    usage, cost = Usage(), sum(t.cost_usd for t in turns)
    all_tokens = sum(t.usage.total for t in turns)
    status, result, error = "failed", "", None
    for n in range(1, max_turns + 1):
        turn_no = offset + n
        CANCEL.check()
        # Roll the cache breakpoints forward: the node's prompt, the previous turn's end (a
        # read of what the last call wrote, whatever the API's look-back) and this turn's end.
        last = len(messages) - 1
        msgs = [m.model_copy(update={"cache": i in (0, last, last - 2)}) for i, m in enumerate(messages)]
        request = ModelRequest(
            system=system, messages=msgs, tools=specs(agent.tools), tool_choice="required", max_tokens=agent.max_tokens, timeout_s=max(1.0, snap.wall_left()),
            meta={"role": "executor", "script_key": f"executor:{node.id}", "task": job.task, "node": node.id, "turn": n,
                  "data_dir": rt.data_dir},  # memory: shared data sets (for scripted models)
        )
        try:
            resp = model.query(request)
        except FatalModelError as e:
            error = f"model error (not retryable): {e}"
            turns.append(Turn(turn=turn_no, model=model.name, error=error))
            return False, status, result, error
        except ModelError as e:
            error = f"model error: {e}"
            turns.append(Turn(turn=turn_no, model=model.name, error=error))
            return False, status, result, error
        call_cost = rt.cost(model.name, resp.usage)
        usage, cost = usage + resp.usage, cost + call_cost
        turn = Turn(turn=turn_no, model=resp.model or model.name, text=resp.text, usage=resp.usage, cost_usd=call_cost, latency_ms=resp.latency_ms)
        turns.append(turn)
        messages.append(Message(role="assistant", content=resp.content))
        replies, done = _act(rt, resp, turn, wt, sdir, snap, agent.tools)
        CANCEL.check()  # a sandbox run stopped by Ctrl-C: the step is not committed, --resume redoes it
        rt.reporter.event(
            "turn", node=node.id, turn=n, max_turns=max_turns, tool=turn.tool,
            exit_code=turn.observation.exit_code if turn.observation else None,
            timed_out=bool(turn.observation and turn.observation.timed_out),
            tokens=fmt_tokens(all_tokens + usage.total), cost=cost,
        )
        if done is not None:
            status, result = done
            return True, status, result, None
        messages.append(Message(role="user", content=replies))
        # nodes running side by side each see the same ledger: each may spend its share of what is left
        n = _sharing(snap)
        over = snap.budget_problem(hop=job.hop, extra_usd=cost * n, extra_tokens=(all_tokens + usage.total) * n)
        if over:
            return False, status, result, f"stopped: {over}"
    return False, status, result, None

def _act(rt: Runtime, resp: ModelResponse, turn: Turn, wt: Path, sdir: str, snap: Snapshot,
         tools: list[str]) -> tuple[list[Any], tuple[str, str] | None]:
    """Run the tool calls of one reply (of ``tools``, the agent's). Returns the tool_result
    blocks, and (status, result) when the node is finished."""
    uses = resp.tool_uses
    if not uses:
        turn.error = "no tool call"
        return [TextBlock(text="Use a tool: `run_python` or `run_shell` to act, `finish_step` when the goal is reached.")], None
    replies: list[Any] = []
    sandbox = rt.get_sandbox()
    for use in uses:
        turn.tool, turn.input = use.name, use.input
        args = use.input
        if "_raw" in args:
            replies.append(ToolResultBlock(tool_use_id=use.id, content=f"Error: the arguments are not valid JSON: {str(args['_raw'])[:300]}", is_error=True))
            continue
        if use.name not in tools:  # only the tools this agent was given (its brain file says which)
            replies.append(ToolResultBlock(tool_use_id=use.id, content=f"Error: unknown tool `{use.name}`; use {', '.join(sorted(tools))}",
                                           is_error=True))
            turn.error = f"unknown tool {use.name}"
            continue
        if use.name == "finish_step":
            status = args.get("status", "done")
            result = args.get("result")
            if status not in ("done", "failed") or not isinstance(result, str) or not result.strip():
                replies.append(ToolResultBlock(tool_use_id=use.id, content='Error: finish_step needs {"result": non-empty markdown, "status": "done" | "failed"}', is_error=True))
                continue
            return replies, (status, result)
        if use.name in ("run_python", "run_shell"):
            key = "code" if use.name == "run_python" else "command"
            src = args.get(key)
            if not isinstance(src, str) or not src.strip():
                replies.append(ToolResultBlock(tool_use_id=use.id, content=f"Error: `{use.name}` needs a non-empty `{key}` string", is_error=True))
                continue
            # never past the task's wall budget
            limit = max(1.0, min(float(rt.config.sandbox.timeout_s), snap.wall_left()))
            obs = sandbox.run_python(src, wt, timeout=limit) if use.name == "run_python" else sandbox.run_shell(src, wt, timeout=limit)
            turn.observation = obs
            replies.append(ToolResultBlock(tool_use_id=use.id, content=_observation_text(rt, obs), is_error=obs.exit_code != 0))
            continue
    return replies, None
