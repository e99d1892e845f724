"""Self-evolution: propose changes to the brain from what the memory shows.

    gitops-agent evolve [--repo PATH] [--model SPEC] [--last N]

reads the N most recent experiences (failures and tasks with lessons first), shows them and the
current brain (``agent/brain``, or the packaged defaults) to a model with one tool,
``propose_brain_change`` {changes: [{path, content}], title, rationale, experiences}, checks
the proposal (allowed paths only; the resulting brain must load and its templates render; a
problem goes back to the model, a few times), and commits it on a new branch
``agent/brain-proposal/<date>`` based on ``agent/brain``. It never merges: on GitHub the
proposal becomes a pull request against ``agent/brain`` (``pull_request_for`` gives branch,
title and body); locally you review it with ``git diff agent/brain agent/brain-proposal/<date>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from gitops_agent.brain.agents import default_prompts_dir
from gitops_agent.brain.branch import (
    BRAIN_BRANCH,
    brain_tip,
    classify,
    default_files,
    diff_files,
    init_brain,
    read_branch_files,
    validate_files,
)
from gitops_agent.core.errors import AgentError, ConfigError, FormatError
from gitops_agent.core.messages import Message, ModelResponse, TextBlock
from gitops_agent.core.state import Turn, Usage
from gitops_agent.core.tools import specs
from gitops_agent.core.trailers import agent_trailers
from gitops_agent.git.repo import GitRepo
from gitops_agent.memory.experience import Experience
from gitops_agent.memory.store import MemoryStore
from gitops_agent.models import model_id
from gitops_agent.models.pricing import price_of
from gitops_agent.observe.progress import Reporter
from gitops_agent.steps.conversation import Conversation, Done, Exit, one_call
from gitops_agent.templates.prompts import render

PROPOSAL_PREFIX = "agent/brain-proposal/"
MAX_CORRECTIONS = 3
MAX_FILE_BYTES = 200_000
# Fields of an agent that decide which model is called (and so where a key is sent) and how many
# paid calls it makes: the repository's trusted settings and its people set them, never a proposal.
CAPABILITY_FIELDS = ("model", "cascade", "max_turns", "max_tokens", "max_corrections")


@dataclass
class Proposal:
    branch: str
    base: str
    commit: str
    title: str
    rationale: str
    experiences: list[str]
    changes: dict[str, bytes | None]
    diff: str
    model: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    gate: Any = None  # gitops_agent/evolve/gate.py's Gate: the suite on the current and the proposed brain
    refused: list[str] = field(default_factory=list)  # capability changes the model asked for, refused


def gather(store: MemoryStore, last: int = 20) -> list[Experience]:
    """The ``last`` most recent experiences, failures first, then those with lessons."""
    if last < 1:
        raise ConfigError("--last must be at least 1")
    exps = sorted(store.experiences(), key=lambda e: (e.date, e.task_id), reverse=True)[:last]
    return sorted(exps, key=lambda e: (e.outcome == "done", not (e.lessons or e.failures), -e.date.timestamp()))


def _capabilities(data: bytes | None) -> dict[str, Any]:
    """The capability fields of an agent file as they take effect (defaults filled in)."""
    from gitops_agent.brain.agents import AgentDef

    try:
        raw = yaml.safe_load(data) if data is not None else None
    except yaml.YAMLError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    defaults = {
        name: f.get_default(call_default_factory=True) for name, f in AgentDef.model_fields.items() if name in CAPABILITY_FIELDS
    }
    return {k: raw.get(k, defaults[k]) for k in CAPABILITY_FIELDS}


def capability_changes(path: str, old: bytes | None, new: bytes | None) -> list[str]:
    """The capability fields that ``new`` (None: deleted, the packaged default applies) sets
    otherwise than ``old`` (None: the packaged default) for the agent file ``path``."""
    if classify(path) != "agents":
        return []
    packaged = default_files().get(path)
    before = _capabilities(old if old is not None else packaged)
    after = _capabilities(new if new is not None else packaged)
    return [k for k in CAPABILITY_FIELDS if before[k] != after[k]]


def check_changes(raw: Any, current: dict[str, bytes]) -> dict[str, bytes | None]:
    """The proposal's changes as {path: bytes or None}; a FormatError-like AgentError for the model.
    A change to an agent's model, cascade or limits is refused (CapabilityChange)."""
    if not isinstance(raw, list) or not raw:
        raise AgentError("`changes` must be a non-empty array of {path, content}")
    out: dict[str, bytes | None] = {}
    for i, c in enumerate(raw):
        if not isinstance(c, dict):
            raise AgentError(f"changes[{i}] must be an object with path and content")
        path, content = c.get("path"), c.get("content")
        if not isinstance(path, str) or classify(path) not in ("agents", "prompts", "tools", "readme"):
            raise AgentError(
                f"changes[{i}].path {path!r} is not a brain file; use agents/<name>.yaml, "
                f"prompts/<name>.j2, tools/<module>.py or README.md"
            )
        if path in out:
            raise AgentError(f"changes[{i}].path {path!r} is changed twice")
        if content is None:
            if path not in current:
                raise AgentError(f"changes[{i}] deletes {path!r}, which is not on {BRAIN_BRANCH}")
            _refuse_capabilities(i, path, current.get(path), None)
            out[path] = None
            continue
        if not isinstance(content, str) or not content.strip():
            raise AgentError(f"changes[{i}].content must be the whole new file (a non-empty string), or null to delete it")
        data = content.encode()
        if len(data) > MAX_FILE_BYTES:
            raise AgentError(f"changes[{i}].content is {len(data)} bytes; the limit is {MAX_FILE_BYTES}")
        if not data.endswith(b"\n"):
            data += b"\n"
        _refuse_capabilities(i, path, current.get(path), data)
        if current.get(path) != data:
            out[path] = data
    if not out:
        raise AgentError("the proposal changes nothing: every file already has that content")
    return out


class CapabilityChange(AgentError):
    """A proposal that changes what only the trusted settings may decide."""


def _refuse_capabilities(i: int, path: str, old: bytes | None, new: bytes | None) -> None:
    changed = capability_changes(path, old, new)
    if changed:
        raise CapabilityChange(
            f"changes[{i}] ({path}) changes {', '.join(changed)}: models and limits are set by the repository's "
            "trusted settings and its people, not by a proposal; keep those fields exactly as they are"
        )


def _proposal_branch(git: GitRepo, now: datetime) -> str:
    stamp = now.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 50):
        name = f"{PROPOSAL_PREFIX}{stamp}" + (f"-{n}" if n > 1 else "")
        if git.tip(name) is None:
            return name
    raise AgentError(f"no free branch name near {PROPOSAL_PREFIX}{stamp}")


def run_evolve(
    git: GitRepo,
    model: Any,
    *,
    last: int = 20,
    reporter: Reporter | None = None,
    now: datetime | None = None,
    max_tokens: int = 8192,
    max_usd: float = 1.0,
    price: Any = None,
) -> Proposal:
    """Ask ``model`` for brain changes from the memory and commit them on a proposal branch.
    ``max_usd`` (evolve.max_usd) bounds what the conversation spends: no call after it is spent.
    ``price(model_name, usage) -> dollars`` (the runtime's, with the config's prices)."""
    reporter = reporter or Reporter()
    now = now or datetime.now(timezone.utc)
    exps, base = _inputs(git, last, reporter)
    current = read_branch_files(git, base)
    dirs = [default_prompts_dir()]
    ctx = dict(
        experiences=[e.model_dump(mode="json", by_alias=True) for e in exps],
        brain_files={p: b.decode("utf-8", "replace") for p, b in sorted(current.items())},
        last=last,
        now=now.date().isoformat(),
    )
    ids = [e.task_id for e in exps]
    name = getattr(model, "name", "model")
    refused: list[str] = []
    use_input, changes, usage, cost = _converse(
        model, dirs, ctx, current, ids, refused, reporter, max_tokens=max_tokens, max_usd=max_usd, price=price
    )

    rationale = str(use_input.get("rationale") or "").strip() or "(no rationale given)"
    cited = [x for x in (use_input.get("experiences") or []) if isinstance(x, str)]
    title = " ".join(str(use_input.get("title") or "").split())[:100] or f"Brain changes from {len(exps)} experiences"
    branch = _proposal_branch(git, now)
    git.create_branch(branch, base)
    trailers = agent_trailers(
        "evolve", model=name, usage=usage, cost=cost, extra={"Agent-Experiences": " ".join(cited or ids)[:900]}
    )
    sha = git.commit_files(branch, changes, f"evolve: {title}\n\n{rationale}", trailers)
    diff = diff_files(current, {p: b for p, b in changes.items() if b is not None}, BRAIN_BRANCH, branch)
    for p, b in changes.items():
        if b is None:
            diff += f"deleted: {p} (the packaged default applies again)\n"
    return Proposal(
        branch=branch,
        base=base,
        commit=sha,
        title=title,
        rationale=rationale,
        experiences=cited or ids,
        changes=changes,
        diff=diff,
        model=name,
        usage=usage,
        cost_usd=round(cost, 6),
        refused=refused,
    )


def _converse(
    model: Any,
    dirs: list[Path],
    ctx: dict[str, Any],
    current: dict[str, bytes],
    ids: list[str],
    refused: list[str],
    reporter: Reporter,
    *,
    max_tokens: int,
    max_usd: float,
    price: Any,
) -> tuple[dict[str, Any], dict[str, bytes | None], Usage, float]:
    """Ask ``model`` for changes until they pass the checks (at most MAX_CORRECTIONS + 1 calls; what
    it proposed wrongly goes to ``refused``): the proposal's input, its changes, and what the
    conversation used and cost. An AgentError when no proposal passes."""
    talk = Conversation(
        model=model,
        system=render(dirs, "evolve_system.j2", **ctx),
        tools=specs(["propose_brain_change"]),
        price=price or _list_price,
        max_tokens=max_tokens,
        tool_choice="auto",
        trim_refused=False,
        meta=lambda n: {"role": "evolve", "script_key": "evolve", "experiences": ids, "attempt": n - 1},
        # every correction is another paid call: none past the budget
        budget=lambda usd, tokens: f"spent ${usd:.4f} of its ${max_usd:g} budget (evolve.max_usd)" if usd > max_usd else None,
    )
    out = talk.run(
        [Message(role="user", content=[TextBlock(text=render(dirs, "evolve.j2", **ctx))])],
        _checker(current, refused, reporter),
        max_calls=MAX_CORRECTIONS + 1,
    )
    if out.exit in (Exit.model_error, Exit.fatal):
        raise AgentError(f"evolve: model error: {out.why}")
    if out.exit == Exit.budget:
        raise AgentError(f"evolve: {out.why} before a proposal was accepted; last problem: {talk.turns[-1].error}")
    if out.exit != Exit.done:
        raise AgentError(f"evolve: the model's proposal was rejected {out.calls} times; last problem: {out.why}")
    use_input, changes = out.value
    return use_input, changes, talk.usage, talk.cost


def _inputs(git: GitRepo, last: int, reporter: Reporter) -> tuple[list[Experience], str]:
    """The experiences to show, and agent/brain's tip (made from the packaged defaults if missing)."""
    store = MemoryStore.open(git)
    if store.tip() is None:
        raise AgentError("this repository has no memory yet (agent/memory): run some tasks first")
    exps = gather(store, last)
    if not exps:
        raise AgentError("the memory holds no experiences yet: run some tasks first")
    base = brain_tip(git)
    if base is None:
        init_brain(git)
        reporter.event("brain", action=f"created {BRAIN_BRANCH} from the packaged defaults")
        base = brain_tip(git)
        assert base is not None
    return exps, base


def _checker(current: dict[str, bytes], refused: list[str], reporter: Reporter) -> Any:
    """The evolve conversation's handler: a proposal that passes every check, or a correction."""

    def handle(resp: ModelResponse, turn: Turn) -> Done:
        use = one_call(resp, ["propose_brain_change"])
        try:
            changes = check_changes(use.input.get("changes"), current)
            merged = {p: b for p, b in current.items()}
            for p, b in changes.items():
                if b is None:
                    merged.pop(p, None)
                else:
                    merged[p] = b
            validate_files(merged, where=BRAIN_BRANCH)
        except (AgentError, ConfigError) as e:
            if isinstance(e, CapabilityChange):
                refused.append(str(e))
            reporter.event("evolve_error", error=str(e))
            raise FormatError(str(e)) from None
        return Done((use.input, changes))

    return handle


def pull_request_for(p: Proposal) -> tuple[str, str, str]:
    """(head branch, title, body) of the pull request against agent/brain (GitHub mode)."""
    files = "\n".join(f"- `{path}`" + (" (deleted)" if b is None else "") for path, b in sorted(p.changes.items()))
    cites = ", ".join(f"`{t}`" for t in p.experiences) or "none"
    measured = ""
    if p.gate is not None:
        mark = {
            "better": "**better**",
            "same": "no change",
            "worse": "**WORSE**",
            "costlier": "**COSTLIER**",
            "unmeasured": "**NOT MEASURED**",
        }[p.gate.verdict]
        measured = f"### Measured: {mark}\n{p.gate.why}.\n\n{p.gate.table}\n"
    refused = ""
    if p.refused:
        items = "\n".join(f"- {' '.join(r.split())[:300]}" for r in p.refused)
        refused = (
            f"### Refused: capability changes\nThe model also asked to change what only the trusted settings decide; "
            f"those changes are not in this proposal:\n{items}\n\n"
        )
    body = (
        f"{p.rationale}\n\n{measured}{refused}### Files\n{files}\n\n### Experiences behind this proposal\n{cites}\n\n"
        f"Proposed by `gitops-agent evolve` ({p.model}, ${p.cost_usd:.4f}) from the memory branch. "
        f"Merge into `{BRAIN_BRANCH}` to adopt it; the brain is validated on every run.\n"
    )
    prefix = f"[{p.gate.verdict}] " if p.gate is not None and p.gate.blocks else ""
    return p.branch, f"{prefix}brain: {p.title}", body


def _list_price(name: str, usage: Usage) -> float:
    return price_of(model_id(name) if ":" in name else name, usage)


__all__ = ["PROPOSAL_PREFIX", "Proposal", "check_changes", "gather", "pull_request_for", "run_evolve"]
