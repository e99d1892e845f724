"""The execute step (CodeAct): one plan node, carried out by a model that writes code and runs
it in the sandbox, in a throwaway working tree of the task branch. Everything it produced, its
turns and its result are one commit in `steps/<seq>-<node>/`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitops_agent.brain.branch import list_tools
from gitops_agent.core.executor_tools import EXECUTOR_TOOLS, Finished, ToolInputError
from gitops_agent.core.messages import Message, ModelResponse, TextBlock, ToolResultBlock
from gitops_agent.core.plan import PlanNode
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import Snapshot, load_snapshot
from gitops_agent.core.state import CascadeAttempt, NodeStatus, Observation, StepRecord, Turn, Usage, dump_state, utcnow
from gitops_agent.core.tools import specs
from gitops_agent.git.checkout import Caps
from gitops_agent.git.messages import shorten
from gitops_agent.observe.render import checklist, fmt_tokens
from gitops_agent.runtime.context import Runtime
from gitops_agent.safety.fences import fenced
from gitops_agent.safety.policy import decide
from gitops_agent.safety.text import outbound
from gitops_agent.settings.config import CONFIG_PATH
from gitops_agent.steps.conversation import Conversation, Done, Exit
from gitops_agent.steps.memory_hooks import attach_data
from gitops_agent.templates.prompts import render

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
    return [
        {"node": d.id, "title": d.title, "result": snap.result_of(d.step, d.id).strip()}
        for d in _dep_nodes(snap, node)
        if d.step is not None
    ]


def _sharing(snap: Snapshot) -> int:
    """How many nodes run at once in this snapshot (this one included): each spends from the same
    remaining budget, which none of them sees the others spend until they commit."""
    return max(1, len(snap.plan.running())) if snap.plan is not None else 1


def _observation_text(rt: Runtime, obs: Observation) -> str:
    return render(rt.brain.prompt_dirs, "observation.j2", obs=obs)


def run_execute(rt: Runtime, job: Job) -> list[Job]:
    snap = load_snapshot(rt.git, job.task)
    node, seq = _dispatched(rt, job, snap)
    if node is None or seq is None:
        return []
    problem = snap.budget_problem(hop=job.hop)
    if problem:
        rt.reporter.event("budget", why=str(problem))
        return [Job(step="finish", task=job.task, branch=snap.branch, hop=job.hop + 1, reason=str(problem), stop="budget")]
    agent = rt.brain.executor(node.agent)
    trusted = [snap.task.models.planner, snap.task.models.executor]
    # a cascade (brain): the first model, then the next ones while the node fails or runs out of
    # turns; every model built now, so a bad spec fails before any turn is paid for
    models = [rt.agent_model(spec, snap.task.models.executor, trusted) for spec in [agent.model, *agent.cascade]]
    # a brain's turn limit is data: it can lower the trusted budget's, never raise it
    max_turns = min(agent.max_turns or snap.task.budget.max_turns, snap.task.budget.max_turns)
    sdir = snap.step_dir(seq, node.id)
    started, t0 = utcnow(), time.monotonic()
    if rt.sandbox is None and rt.data_dir is None:
        attach_data(rt)  # memory: shared data sets, fetched once, mounted read-only (never fails the step)
    rt.get_sandbox()  # fail here, before any checkout, when no allowed sandbox backend works
    rt.take_queries()  # the queries of this thread's earlier steps are theirs, not this one's
    # The checkout holds the repository and the step folders of the nodes this one depends on
    # (their produced files), not the whole task history: it stays the same size at step 200.
    # It is a plain directory (no .git): nothing the code leaves there is ever run by the host.
    keep = [f"{snap.step_dir(d.step, d.id)}/" for d in _dep_nodes(snap, node) if d.step is not None]
    policy = rt.config.policy
    caps = Caps(
        max_file_bytes=int(policy.max_file_mb * 2**20),
        max_total_bytes=int(policy.max_step_mb * 2**20),
        max_entries=policy.max_files,
    )
    with rt.git.checkout(snap.tip, name=f"{job.task}-{seq}", skip=[".agent/"], keep=keep) as co:
        (co.path / sdir).mkdir(parents=True, exist_ok=True)
        node_run = _NodeRun(rt, job, snap, node, agent, co.path, sdir, max_turns)
        work = node_run.cascade(models)
        collected = co.collect(caps)
        existing = {p for p in co.manifest if not p.startswith(".agent/")}
    steering = (CONFIG_PATH, rt.config.sandbox.requirements or "")
    decision = decide(collected.changes, policy, own_dir=sdir, existing=existing, settings_files=steering)
    record = StepRecord(
        task_id=job.task,
        seq=seq,
        role="executor",
        node=node.id,
        agent=agent.name,
        model=work.model,
        status=work.status,
        turns=len(work.turns),
        usage=sum((t.usage for t in work.turns), Usage()),
        cost_usd=round(sum(t.cost_usd for t in work.turns), 6),
        duration_ms=int((time.monotonic() - t0) * 1000),
        started_at=started,
        finished_at=utcnow(),
        artifacts=sorted(p for p, d in decision.kept.items() if d is not None),
        refused=collected.refused + decision.refused,
        flagged=decision.flagged,
        error=work.error,
        cascade=work.attempts if len(models) > 1 else [],
        sandbox=rt.sandbox.name if rt.sandbox is not None else "",
        queries=rt.take_queries(),
    )
    _commit(rt, job, snap, node, record, work, decision)
    if work.exit == Exit.fatal:  # this provider will never answer: the planner would only ask it again
        return [
            Job(
                step="finish", task=job.task, branch=snap.branch, hop=job.hop + 1, reason=f"{node.id}: {work.error}", stop="error"
            )
        ]
    return [Job(step="plan", task=job.task, branch=snap.branch, hop=job.hop + 1)]


def _dispatched(rt: Runtime, job: Job, snap: Snapshot) -> tuple[PlanNode | None, int | None]:
    """The node and step number this job may run, or (None, None) when it may not (said why)."""
    node = snap.plan.get(job.node or "") if snap.plan else None
    if node is None or not node.is_leaf:
        rt.reporter.event("skip", step="execute", node=job.node, why="no such leaf in the plan")
        return None, None
    seq = job.seq or node.step
    why = None
    if seq is None:
        why = "node was never dispatched"
    elif snap.step_record(seq, node.id) is not None:
        why = f"step {seq} is already committed"
    elif node.status != NodeStatus.running or node.step != seq:
        why = f"stale dispatch (node is {node.status.value}, step {node.step})"
    if why:
        rt.reporter.event("skip", step="execute", node=node.id, why=why)
        return None, None
    return node, seq


@dataclass
class _Work:
    """What a node's run came to: its status, result and error, how the last exchange ended,
    the turns of every model, and one attempt a model of the cascade."""

    status: str = "failed"
    result: str = ""
    error: str | None = None
    exit: Exit = Exit.turns
    model: str = ""
    turns: list[Turn] = field(default_factory=list)
    attempts: list[CascadeAttempt] = field(default_factory=list)


@dataclass
class _NodeRun:
    rt: Runtime
    job: Job
    snap: Snapshot
    node: PlanNode
    agent: Any
    tree: Path
    sdir: str
    max_turns: int

    def timeout(self) -> float:
        """A sandbox run's limit, never past the task's wall budget."""
        return max(1.0, min(float(self.rt.config.sandbox.timeout_s), self.snap.wall_left()))

    @property
    def sandbox(self) -> Any:
        return self.rt.get_sandbox()

    def cascade(self, models: list[Any]) -> _Work:
        rt, snap, node = self.rt, self.snap, self.node
        files = [f for f in rt.git.list_files(snap.tip) if not f.startswith(".agent/")]
        node_text = render(
            rt.brain.prompt_dirs,
            self.agent.prompts.task,
            task=snap.task,
            node=node,
            checklist=checklist(snap.plan, here=node.id),
            dep_results=_dep_results(snap, node),
            files=files[:_FILE_LIST_LIMIT],
            files_more=max(0, len(files) - _FILE_LIST_LIMIT),
            step_dir=self.sdir,
            max_turns=self.max_turns,
            data_dir=rt.data_dir,
        )
        sources = rt.data_schema(files)
        # brain tools: helper modules the code can import, listed by docstring
        # and the workbench's packages with their versions, so the code does not guess what is installed
        wb = rt.workbench()
        system = render(
            rt.brain.prompt_dirs,
            self.agent.prompts.system,
            agent=self.agent,
            # `warehouse` only where it has something to answer: declared sources, or data files (`files`)
            py_tools=[t for t in list_tools(rt.brain) if t["name"] != "warehouse" or sources],
            workbench=wb.listing() if wb is not None else [],
            data_sources=sources,
        )
        work, note = _Work(), ""
        for model in models:
            if work.attempts:
                if work.status == "done" or work.exit == Exit.budget:
                    break  # done, or out of budget: no further model
                over = snap.budget_problem(
                    hop=self.job.hop,
                    extra_usd=_spent(work) * _sharing(snap),
                    extra_tokens=sum(t.usage.total for t in work.turns) * _sharing(snap),
                )
                if over:  # the first model spent the budget: the next one does not start
                    work.error, work.exit = f"stopped: {over}", Exit.budget
                    work.attempts[-1].error = work.attempts[-1].error or work.error
                    break
                why = " ".join((work.error or work.result or "it reported failure").split())[:300]
                note = (
                    f"\n\n(An earlier attempt with {work.attempts[-1].model} did not succeed: {why}. "
                    "The files it left are in the working tree.)"
                )
                rt.reporter.event(
                    "note", text=f"{node.id}: {work.attempts[-1].model} did not succeed; trying {model.name} (cascade)"
                )
            self._attempt(model, system, node_text + note, work)
        if work.status != "done" and work.exit != Exit.done:
            last = next((t.observation for t in reversed(work.turns) if t.observation), None)
            work.result = f"**Not finished:** {work.error}.\n"
            if last is not None:
                work.result += (
                    f"\nLast observation (exit code {last.exit_code}):\n\n{fenced((last.stdout or last.stderr)[-1500:])}\n"
                )
        return work

    def _attempt(self, model: Any, system: str, node_text: str, work: _Work) -> None:
        """One model's CodeAct exchange on the node, its turns added to ``work``."""
        rt, snap, node, job = self.rt, self.snap, self.node, self.job
        first_turn, spent_before = len(work.turns), _spent(work)
        share = _sharing(snap)
        talk = Conversation(
            model=model,
            system=system,
            tools=specs(self.agent.tools),
            price=rt.cost,
            max_tokens=self.agent.max_tokens,
            turns=work.turns,
            timeout=snap.wall_left,
            rolling_cache=True,
            # nodes running side by side each see the same ledger: each may spend its share of what is left
            budget=lambda usd, tokens: snap.budget_problem(hop=job.hop, extra_usd=usd * share, extra_tokens=tokens * share),
            meta=lambda n: {
                "role": "executor",
                "script_key": f"executor:{node.id}",
                "task": job.task,
                "node": node.id,
                "turn": n,
                "data_dir": rt.data_dir,
            },  # memory: shared data sets (for scripted models)
        )

        def handle(resp: ModelResponse, turn: Turn) -> Any:
            replies, done = _act(self, resp, turn, self.agent.tools)
            rt.reporter.event(
                "turn",
                node=node.id,
                turn=len(work.turns) - first_turn,
                max_turns=self.max_turns,
                tool=turn.tool,
                exit_code=turn.observation.exit_code if turn.observation else None,
                timed_out=bool(turn.observation and turn.observation.timed_out),
                tokens=fmt_tokens(talk.usage.total),
                cost=talk.cost,
            )
            return Done(done) if done is not None else replies

        out = talk.run([Message(role="user", content=[TextBlock(text=node_text)], cache=True)], handle, max_calls=self.max_turns)
        work.model, work.exit = model.name, out.exit
        if out.exit == Exit.done:
            work.status, work.result, work.error = out.value.status, out.value.result, None
        else:
            work.status, work.result = "failed", ""
            work.error = {
                Exit.budget: f"stopped: {out.why}",
                Exit.fatal: f"model error (not retryable): {out.why}",
                Exit.model_error: f"model error: {out.why}",
            }.get(out.exit, f"turn limit reached ({self.max_turns} turns) before finish_step")
        failed_why = (
            work.error
            if out.exit != Exit.done
            else (" ".join(work.result.split())[:300] or "finish_step failed")
            if work.status == "failed"
            else None
        )
        work.attempts.append(
            CascadeAttempt(
                model=model.name,
                status=work.status,
                turns=len(work.turns) - first_turn,
                cost_usd=round(_spent(work) - spent_before, 6),
                error=failed_why,
            )
        )


def _spent(work: _Work) -> float:
    return sum(t.cost_usd for t in work.turns)


def _act(run: _NodeRun, resp: ModelResponse, turn: Turn, tools: list[str]) -> tuple[list[Any], Finished | None]:
    """Run the tool calls of one reply (only ``tools``, the agent's). Returns the tool_result
    blocks, and what finish_step said when the node is finished."""
    uses = resp.tool_uses
    if not uses:
        turn.error = "no tool call"
        return [TextBlock(text="Use a tool: `run_python` or `run_shell` to act, `finish_step` when the goal is reached.")], None
    replies: list[Any] = []
    for use in uses:
        turn.tool, turn.input = use.name, use.input
        tool = EXECUTOR_TOOLS.get(use.name) if use.name in tools else None
        try:
            if "_raw" in use.input:
                raise ToolInputError(f"the arguments are not valid JSON: {str(use.input['_raw'])[:300]}")
            if tool is None:  # only the tools this agent was given (its brain file says which)
                turn.error = f"unknown tool {use.name}"
                raise ToolInputError(f"unknown tool `{use.name}`; use {', '.join(sorted(tools))}")
            done = tool.run(run, use.input)
        except ToolInputError as e:
            replies.append(ToolResultBlock(tool_use_id=use.id, content=f"Error: {e}", is_error=True))
            continue
        if isinstance(done, Finished):
            return replies, done
        turn.observation = done
        replies.append(ToolResultBlock(tool_use_id=use.id, content=_observation_text(run.rt, done), is_error=done.exit_code != 0))
    return replies, None


def _commit(rt: Runtime, job: Job, snap: Snapshot, node: PlanNode, record: StepRecord, work: _Work, decision: Any) -> None:
    sdir = snap.step_dir(record.seq, node.id)
    changes: dict[str, bytes | None] = dict(decision.kept)
    changes[f"{sdir}/turns.jsonl"] = "".join(t.model_dump_json() + "\n" for t in work.turns).encode()
    # GitHub renders result.md when it is opened: sanitised like a comment (no remote image, no hidden text)
    changes[f"{sdir}/result.md"] = (
        outbound(work.result.strip()[:MAX_RESULT_CHARS], tuple(rt.config.github.image_hosts)) + "\n"
    ).encode()
    changes[f"{sdir}/step.json"] = dump_state(record)
    subject = shorten(f"agent(execute): {node.id} {node.title}", 200)
    trailers = rt.step_trailers(record)
    sha = rt.git.commit_files(snap.branch, changes, subject, trailers, base=snap.tip, modes=decision.modes)
    if rt.on_commit:
        rt.on_commit(sha)
    rt.reporter.event(
        "step", node=node.id, status=record.status, turns=record.turns, seconds=record.duration_ms / 1000, cost=record.cost_usd
    )
