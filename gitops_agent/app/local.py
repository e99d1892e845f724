"""Local mode (the embedded default): the same steps, an in-process dispatcher, a local sandbox,
and the repository itself as the store (or its remote, with --push)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path

from gitops_agent.brain.branch import BRAIN_BRANCH, load_repo_brain
from gitops_agent.core.cancel import CANCEL, Cancelled
from gitops_agent.core.errors import AgentError, ConfigError
from gitops_agent.core.seams import Model
from gitops_agent.core.snapshot import load_snapshot
from gitops_agent.core.state import Budget, TaskModels, branch_for, task_dir
from gitops_agent.git.repo import GitRepo
from gitops_agent.git.scratch import in_repo
from gitops_agent.memory.experience import MEMORY_BRANCH
from gitops_agent.models.registry import check_credentials
from gitops_agent.observe.charts import find_charts
from gitops_agent.observe.progress import Reporter
from gitops_agent.runtime.context import Runtime
from gitops_agent.settings.config import CONFIG_PATH, AgentConfig, load_config
from gitops_agent.steps.engine import Engine


@dataclass
class RunResult:
    task_id: str
    branch: str
    outcome: str
    answer: str
    reason: str | None
    report: str
    cost_usd: float
    failures: list
    charts: list = dataclass_field(default_factory=list)  # paths of the charts shown with the answer


def find_repo(path: Path) -> Path:
    if not Path(path).exists():
        raise ConfigError(f"{path} does not exist")
    if not Path(path).is_dir():
        raise ConfigError(f"{path} is not a directory")
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
    except FileNotFoundError:
        raise ConfigError("git is not installed") from None
    except subprocess.CalledProcessError:
        raise ConfigError(f"{path} is not inside a Git repository (run `git init` there first)") from None
    return Path(out.stdout.strip())


def base_of(repo: Path) -> tuple[str, str]:
    """(name, sha) of what the user has checked out."""
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "HEAD^{commit}"], capture_output=True, text=True)
    if sha.returncode != 0:
        raise ConfigError(f"{repo} has no commits yet; commit something first (the task branch starts from HEAD)")
    name = subprocess.run(
        ["git", "-C", str(repo), "symbolic-ref", "-q", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return name or sha.stdout.strip()[:12], sha.stdout.strip()


def uncommitted(repo: Path) -> list[str]:
    """Paths with changes a commit would not have yet (modified, staged, new and not ignored)."""
    p = subprocess.run(["git", "-C", str(repo), "status", "--porcelain=v1", "-z", "--untracked-files=all"], capture_output=True)
    out = p.stdout.decode("utf-8", "replace").split("\0") if p.returncode == 0 else []
    paths, skip = [], False
    for entry in out:
        if skip:  # the source path of a rename
            skip = False
            continue
        if len(entry) > 3:
            paths.append(entry[3:])
            skip = entry[0] in "RC"
    return paths


def snapshot_worktree(repo: Path) -> str:
    """A commit of the working tree as it is (HEAD plus every uncommitted change, .gitignore
    honoured), on no branch; the user's index and checkout are not touched."""
    head = base_of(repo)[1]
    with in_repo(GitRepo(repo).common_dir) as tmp:
        env = {**os.environ, "GIT_INDEX_FILE": str(tmp / "index")}

        def g(*args: str, input: bytes | None = None) -> str:
            p = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, env=env, input=input)
            if p.returncode != 0:
                raise ConfigError(f"could not take the working tree (git {args[0]}): {p.stderr.decode(errors='replace').strip()}")
            return p.stdout.decode().strip()

        g("read-tree", head)
        g("add", "-A", "--", ".")
        tree = g("write-tree")
        env.update(
            GIT_AUTHOR_NAME="gitops-agent",
            GIT_AUTHOR_EMAIL="gitops-agent@localhost",
            GIT_COMMITTER_NAME="gitops-agent",
            GIT_COMMITTER_EMAIL="gitops-agent@localhost",
        )
        return g(
            "commit-tree",
            "--no-gpg-sign",
            tree,
            "-p",
            head,
            input=b"gitops-agent: the working tree, uncommitted changes included\n",
        )


def check_model_env(spec: str) -> None:
    """Fail early, and clearly, when a provider has no credentials (its declaration says which)."""
    check_credentials(spec)


def make_runtime(
    repo: Path,
    *,
    config: AgentConfig | None = None,
    config_path: Path | None = None,
    remote: str | None = None,
    reporter: Reporter | None = None,
    models: dict[str, Model] | None = None,
) -> Runtime:
    cfg = config or load_config(config_path or (repo / CONFIG_PATH))
    git = GitRepo(repo, remote=remote, mirror_local=remote is not None)
    reporter = reporter or Reporter()
    if remote is not None:
        share_branches(git, reporter)
    rt = Runtime(
        git=git,
        config=cfg,
        # brain: the packaged agents and prompts with the repository's agent/brain branch on top
        brain=load_repo_brain(git),
        reporter=reporter,
        models=dict(models or {}),
        read_setting_file=lambda path: _working_tree_file(repo, path),
    )
    return rt


def _working_tree_file(repo: Path, path: str) -> bytes | None:
    """A file the local settings name (`sandbox.requirements`), read where the settings are: the
    working tree; None when it is not a file inside the repository (a link out of it included)."""
    root = repo.resolve()
    real = (root / path).resolve()
    if real != root and root not in real.parents or not real.is_file():
        return None
    return real.read_bytes()


def share_branches(git: GitRepo, reporter: Reporter) -> None:
    """`--push`: the remote's memory and brain include this repository's, so a run adds to the
    history that exists instead of starting a second one."""
    for branch in (MEMORY_BRANCH, BRAIN_BRANCH):
        how = git.share_branch(branch)
        if how == "pushed":
            reporter.event("note", text=f"pushed the local {branch} to {git.remote} (the remote had less)")
        elif how == "diverged":
            reporter.event(
                "note",
                text=f"the local {branch} and {git.remote}'s have diverged; this run uses {git.remote}'s "
                f"(merge them with git, then push)",
            )


def _after_push(rt: Runtime) -> None:
    """`--push`: the experience went to the remote's memory; this repository's follows it."""
    if rt.git.remote is not None and not CANCEL.is_set():
        share_branches(rt.git, rt.reporter)


def result_of(rt: Runtime, task_id: str, failures: list | None = None) -> RunResult:
    snap = load_snapshot(rt.git, task_id)
    raw = rt.git.read_file(snap.tip, f"{task_dir(task_id)}/report.md")
    report = raw.decode() if raw else ""
    outcome, answer, reason = snap.ending()
    charts = [c.path for c in find_charts(rt.git, snap.tip, task_id, snap.steps).shown]
    return RunResult(task_id, branch_for(task_id), outcome, answer, reason, report, snap.cost_usd, failures or [], charts)


def run_question(
    rt: Runtime,
    question: str,
    *,
    planner_model: str,
    executor_model: str,
    budget: Budget | None = None,
    task_id: str | None = None,
    workers: int | None = None,
    include_changes: bool = False,
) -> RunResult:
    # the workbench (and the repository's sandbox.requirements) before any branch or model call:
    # a file that is not a hashed lock, or that will not install, stops here (exit 2)
    rt.workbench()
    base_name, base_sha = base_of(rt.git.repo)
    changed = uncommitted(rt.git.repo)
    if changed and include_changes:
        base_name, base_sha = f"{base_name}+changes", snapshot_worktree(rt.git.repo)
        rt.reporter.event("note", text=f"including {len(changed)} uncommitted change(s) of the working tree")
    elif changed:  # shown under -q too: it changes what the answer means
        rt.reporter.event(
            "warning",
            text=f"{len(changed)} uncommitted change(s) in the working tree ({', '.join(changed[:3])}"
            f"{', …' if len(changed) > 3 else ''}) are not part of this task: it reads the last commit. "
            "Commit them, or run with --include-changes",
        )
    engine = Engine(rt)
    job = engine.start(
        question,
        base_ref=base_name,
        base_sha=base_sha,
        models=TaskModels(planner=planner_model, executor=executor_model),
        budget=budget,
        task_id=task_id,
    )
    engine.run_local([job], workers=workers)
    _after_push(rt)
    if CANCEL.is_set():
        raise Cancelled(CANCEL.reason, task_id=job.task)
    return result_of(rt, job.task, engine.failures)


def check_resumable(repo: Path, task_id: str) -> None:
    """A resume commits to the task branch (here, and with --push mirrored here): refuse, before
    anything runs, while a worktree of this repository has it checked out, as after editing
    plan.json on it. Moving the branch would change that checkout under its user."""
    branch = branch_for(task_id)
    if GitRepo(repo).checked_out(branch):
        raise ConfigError(
            f"the task branch {branch} is checked out in {repo}; a resume commits to it. "
            "Switch away from it first (e.g. `git switch -`; your commits on it are kept), then resume again"
        )


def resume(rt: Runtime, task_id: str, workers: int | None = None) -> RunResult:
    check_resumable(rt.git.repo, task_id)
    engine = Engine(rt)
    for note in engine.check_edits(task_id):  # a plan edited on the branch: refused before anything runs if it cannot stand
        rt.reporter.event("note", text=f"plan.json was edited: {note}")
    jobs = engine.resume_jobs(task_id)
    if jobs:
        engine.run_local(jobs, workers=workers)
    _after_push(rt)
    if CANCEL.is_set():
        raise Cancelled(CANCEL.reason, task_id=task_id)
    unfinished = [e for j, e in engine.failures if j.step == "finish"]
    if unfinished:  # the ending on the branch is an earlier round's: never report it as this one's
        raise AgentError(
            f"the task could not be finished: {unfinished[0]} (what was committed before stays on {branch_for(task_id)})"
        )
    return result_of(rt, task_id, engine.failures)


DEMO_QUESTION = "What is the average order value per region, and which region has the highest?"


def make_demo_repo(where: Path | None = None) -> Path:
    """A fresh Git repository holding the bundled sample data set."""
    repo = Path(where) if where else Path(tempfile.mkdtemp(prefix="gitops-agent-demo-"))
    repo.mkdir(parents=True, exist_ok=True)
    if any(repo.iterdir()):
        raise ConfigError(f"{repo} is not empty; the demo makes its own repository")
    (repo / "data").mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "demo" / "orders.csv", repo / "data" / "orders.csv")
    (repo / "README.md").write_text("# Demo shop\n\nOrders exported from the shop, one row per order, in `data/orders.csv`.\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@localhost",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@localhost",
    }
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "Sample shop data"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    return repo
