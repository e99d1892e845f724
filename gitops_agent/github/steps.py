"""`gitops-agent step …`: one short job on a GitHub Actions runner.

Each job reads its event, fetches only what it needs (a shallow, single-branch clone of the task
branch), runs one step with the engine's code, pushes its commit (fetch-rebase-retry), and
dispatches the next steps as `repository_dispatch` events. The token is given to git through
the environment for network commands only (never written to .git/config) and never reaches
the sandbox (which gets a scrubbed environment).

The intake job (who may ask; a new task or a follow-up) is gitops_agent/github/intake.py, the
eval job gitops_agent/github/eval_job.py; both take the job's StepRunner.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gitops_agent.brain.branch import load_repo_brain
from gitops_agent.core.errors import AgentError, ConfigError, TaskNotFound
from gitops_agent.core.seams import Job
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.git.repo import GitRepo
from gitops_agent.github.access import Access
from gitops_agent.github.chain import route
from gitops_agent.github.events import load_event, read_trigger
from gitops_agent.github.intake import TEXT_EVENTS, run_intake
from gitops_agent.github.publish import Publisher
from gitops_agent.github.settings import GitHubDispatcher, Settings  # noqa: F401 - Settings is part of this module's API
from gitops_agent.observe.progress import Reporter
from gitops_agent.observe.render import md_block
from gitops_agent.runtime.context import Runtime
from gitops_agent.runtime.spending import SpendGate
from gitops_agent.safety.chars import log_line
from gitops_agent.settings.config import AgentConfig
from gitops_agent.settings.trusted import config_at
from gitops_agent.steps.engine import Engine


class StepRunner:
    """One job on a runner."""

    def __init__(self, settings: Settings, client: Any, reporter: Reporter | None = None) -> None:
        self.s = settings
        self.client = client
        self.reporter = reporter or Reporter()
        self.dispatcher = GitHubDispatcher(client)
        self.outputs: dict[str, str] = {}
        self.access = Access(settings, client, self.outputs)
        self.publisher = Publisher(settings, client, self.outputs)
        self._t0 = time.monotonic()  # the job's clock for github.inline_minutes
        self._tmp = Path(tempfile.mkdtemp(prefix="gitops-agent-", dir=settings.workdir))

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    # ---- workspace -------------------------------------------------------------------------
    def clone(self, branch: str | None, dest: str = "repo") -> GitRepo:
        """A shallow clone of one branch (the default one for None), in remote mode: every
        commit is pushed to origin, credentials only in the environment of network commands."""
        path = self._tmp / dest
        if path.exists():
            shutil.rmtree(path)
        return GitRepo.clone(self.s.clone_url, path, branch, depth=1, auth_env=self.s.git_auth_env())

    def runtime(self, git: GitRepo, commit: str, brain: str | None = None, cfg: AgentConfig | None = None) -> Runtime:
        """The runtime of a step: settings read at ``commit`` (the task's base, or the default
        branch's head; gitops_agent/settings/trusted.py) and the brain at ``brain`` (pinned at intake)."""
        cfg = cfg or self.config(git, commit)
        # brain: the packaged brain with the repository's agent/brain branch on top (gitops_agent/brain/branch.py)
        return Runtime(
            git=git,
            config=cfg,
            brain=load_repo_brain(git, at=brain),
            reporter=self.reporter,
            run_url=self.s.run_url,
            spend=self.spend_gate(git, cfg),
            # `sandbox.requirements` is read at the commit the settings were read at
            read_setting_file=lambda path: git.read_file(commit, path),
        )

    def spend_gate(self, git: GitRepo, cfg: AgentConfig, task: str = "") -> SpendGate:
        """The repository's spending cap, kept on its agent/spend branch (gitops_agent/runtime/spending.py)."""
        c = cfg.spending
        return SpendGate(git, c.daily_usd, c.monthly_usd, wait_s=c.wait_minutes * 60, task=task)

    def config(self, git: GitRepo, commit: str) -> AgentConfig:
        cfg = config_at(git, commit)
        if self.s.max_usd is not None:
            cfg.budget.max_usd = self.s.max_usd
        if self.s.trigger_label:
            cfg.trigger.label = self.s.trigger_label
        if self.s.trigger_phrase:
            cfg.trigger.phrase = self.s.trigger_phrase
        cfg.workers = cfg.github.max_parallel
        if cfg.sandbox.require_isolation is None:
            # issue text is untrusted: no model-written code outside bubblewrap/docker unless the repo opts out
            cfg.sandbox.require_isolation = True
        return cfg

    # ---- entry -----------------------------------------------------------------------------
    def run(self, step: str) -> int:
        rc = self._run(step)
        if rc == 0 and self.s.event_name != "schedule" and step not in ("reconcile", "eval", "evolve"):
            self.sweep()
        return rc

    def _run(self, step: str) -> int:
        event = load_event(self.s.event_path)
        if step == "evolve" or (
            step == "auto" and self.s.event_name == "repository_dispatch" and event.get("action") == "agent-evolve"
        ):
            return self.evolve()
        if step == "eval" or (
            step == "auto" and self.s.event_name == "repository_dispatch" and event.get("action") == "agent-eval"
        ):
            from gitops_agent.github.eval_job import run_eval_job

            return run_eval_job(self, event)
        if self.s.event_name in TEXT_EVENTS and step in ("auto", "intake"):
            # the trigger words may come from the repository's config: intake reads it first
            return run_intake(self, None, event)
        probe = AgentConfig().trigger
        trigger = read_trigger(
            self.s.event_name,
            event,
            label=self.s.trigger_label or probe.label,
            phrase=self.s.trigger_phrase or probe.phrase,
            question_input=self.s.question,
        )
        want = {"new": "intake", "follow-up": "intake", "reconcile": "reconcile", "step": trigger.step, "ignore": None}[
            trigger.kind
        ]
        if step != "auto" and want is not None and step != want:
            raise ConfigError(f"this event asks for step {want!r}, not {step!r}")
        if want is None:
            self.reporter.event("skip", step="intake", why=trigger.why)
            print(f"gitops-agent: nothing to do: {log_line(trigger.why)}")
            return 0
        if want == "intake":  # gitops_agent/github/intake.py
            return run_intake(self, trigger, event)
        if want == "reconcile":
            return self.reconcile()
        assert trigger.payload is not None
        return self.step(trigger.payload.job(want))

    # ---- plan / execute / finish -----------------------------------------------------------
    def step(self, job: Job) -> int:
        git = self.clone(job.branch)
        try:
            tip = git.tip(job.branch)
        except AgentError:
            tip = None
        if tip is None:
            raise TaskNotFound(f"no task branch {job.branch!r} on the remote")
        runtimes: dict[tuple[str, str | None], Runtime] = {}
        while True:
            task = load_snapshot(git, job.task, tip).task
            key = (task.settings_at or task.base_sha, task.brain)  # a follow-up round may move the settings
            if key not in runtimes:
                runtimes[key] = self.runtime(git, key[0], brain=key[1])
            nxt = self.step_once(runtimes[key], job, tip)
            if nxt is None:
                return 0
            job, tip = nxt

    def step_once(self, rt: Runtime, job: Job, tip: str) -> tuple[Job, str] | None:
        """Run one step, dispatch what comes next; the step this job carries on with itself
        (gitops_agent/github/chain.py), if any, and the tip it starts from."""
        engine = Engine(rt)
        nxt = engine.handle(job)  # committed and pushed before anything runs next
        snap = load_snapshot(rt.git, job.task)
        inline, send = route(nxt, snap, rt.config.github, time.monotonic() - self._t0)
        for j in send:
            self.dispatcher.dispatch(j)
        self.outputs.update(task=job.task, branch=job.branch)
        finished = snap.ending()[0] != "unfinished"
        if snap.tip == tip and not nxt and not (job.step == "finish" and finished):
            # a duplicate or late dispatch: it committed nothing and sends nothing, so it shows nothing
            print(f"gitops-agent: {job.step} {job.node or ''}: nothing new (a duplicate dispatch)")
            return None
        if job.step == "finish" and snap.tip == tip and self.client.find_pull(snap.branch, snap.task.base_ref):
            # a redelivered finish: the task was finished and published by the first delivery
            print("gitops-agent: finish: already finished and published (a duplicate dispatch)")
            return None
        if job.step == "finish" and not engine.failures:
            self.publisher.publish_answer(rt, snap)  # a finish whose job died before publishing publishes now
            self.publisher.progress(snap, "finished")
        else:
            current = (
                ", ".join(f"{j.step} {j.node or ''}".strip() for j in ([inline] if inline else []) + send)
                or "waiting for running steps"
            )
            self.publisher.progress(snap, current)
        self.publisher.summary(snap, f"{job.step} {job.node or ''}".strip())
        if engine.failures:
            from gitops_agent.observe.gha import gha_error

            j, e = engine.failures[0]
            gha_error(
                f"gitops-agent {j.step} step failed: {str(e)[:500]} (the task was finished with what it has)",
                title="gitops-agent",
            )
        if inline is None:
            return None
        print(f"gitops-agent: {inline.step} {inline.node or ''}: carried on in this job (github.inline_steps)")
        return inline, snap.tip

    # ---- evolve ----------------------------------------------------------------------------
    def evolve(self) -> int:
        """Propose brain changes from the memory, as a pull request against agent/brain. Never
        merges."""
        from gitops_agent.evolve.propose import pull_request_for, run_evolve

        git = self.clone(None)
        head = git.git("rev-parse", "HEAD").strip()
        cfg = self.config(git, head)
        if self.s.executor_model:
            cfg.models.executor = self.s.executor_model  # the suite's default model (gitops_agent/evolve/gate.py)
        rt = self.runtime(git, head, cfg=cfg)
        spec = self.s.planner_model or cfg.models.planner
        proposal = run_evolve(git, rt.model(spec), reporter=self.reporter, max_usd=cfg.evolve.max_usd, price=rt.cost)
        from gitops_agent.evolve.gate import compare_brains

        proposal.gate = compare_brains(git, proposal.base, proposal.commit, cfg, repo=git.repo, workers=cfg.github.max_parallel)
        branch, title, body = pull_request_for(proposal)
        self.outputs["branch"] = branch
        if self.s.summary_path and proposal.gate is not None:
            with open(self.s.summary_path, "a") as f:
                f.write(
                    f"### gitops-agent evolve: {proposal.gate.verdict}\n\n{md_block(proposal.gate.why)}\n\n"
                    f"{md_block(proposal.gate.table)}\n"
                )
        if proposal.gate is not None and proposal.gate.blocks and not cfg.evolve.open_worse:
            # the branch stays for a person to look at; no pull request asks anyone to adopt it
            print(
                f"gitops-agent: brain proposal {branch} is {proposal.gate.verdict} ({log_line(proposal.gate.why)}): "
                "no pull request (evolve.open_worse: true opens one anyway)"
            )
            return 0
        number, url = self.client.open_pull(head=branch, base="agent/brain", title=title, body=md_block(body)[:60000], draft=True)
        self.outputs["pr-url"] = url
        print(f"gitops-agent: brain proposal {branch}: {url}")
        return 0

    # ---- reconcile (gitops_agent/github/reconcile.py) -----------------------------------------
    def reconcile(self) -> int:
        """The scheduled look for stalled tasks."""
        from gitops_agent.github.reconcile import reconcile

        git = self.clone(None)
        done = reconcile(self, git, self.config(git, git.git("rev-parse", "HEAD").strip()))
        print(f"gitops-agent: reconcile: {done.line()}")
        return 0

    def sweep(self) -> None:
        """The same look at the end of a job that ran for something else (``github.sweep``). Its
        own work is pushed by then, so nothing here may fail the job: a problem is one line."""
        from gitops_agent.github.reconcile import reconcile

        try:
            git = self.clone(None, dest="sweep")
            cfg = self.config(git, git.git("rev-parse", "HEAD").strip())
            if not cfg.github.sweep:
                return
            done = reconcile(self, git, cfg)
            if done.resent:
                print(f"gitops-agent: reconcile (end of job): {done.line()}")
        except Exception as e:  # noqa: BLE001 - see the docstring
            print(f"gitops-agent: warning: the look for stalled tasks failed: {log_line(str(e), 500)}")


def run_step_command(step: str, event_path: str | None = None, client: Any = None, env: dict[str, str] | None = None) -> int:
    settings = Settings.from_env(env)
    if event_path:
        settings.event_path = event_path
    if client is None:
        from gitops_agent.github.client import GitHubClient

        throttle = (env if env is not None else os.environ).get("GITOPS_AGENT_GITHUB_THROTTLE", "1") != "0"
        kw = {} if throttle else {"seconds_between_requests": None, "seconds_between_writes": None}
        client = GitHubClient(settings.repo, settings.token.get_secret_value(), api_url=settings.api_url, **kw)
    from gitops_agent.observe.gha import gha_error, gha_group
    from gitops_agent.observe.progress import ConsoleReporter

    runner = StepRunner(settings, client, reporter=ConsoleReporter())
    try:
        with gha_group(f"gitops-agent {step} ({settings.event_name or 'no event'})"):
            return runner.run(step)
    except AgentError as e:
        gha_error(str(e)[:2000], title=f"gitops-agent {step}")
        raise
    finally:
        runner.publisher.write_outputs()
        runner.close()
