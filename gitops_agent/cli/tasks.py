"""Finding tasks for the local commands (`tasks`, `show`, `trace`, `run --resume`): a task is a
branch of this repository or of one of its remotes (a `run --push`, or the agent on GitHub)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gitops_agent.core.errors import AgentError, GitError, TaskNotFound, UsageError
from gitops_agent.core.state import BRANCH_PREFIX, branch_for, check_task_id
from gitops_agent.git.repo import GitRepo
from gitops_agent.safety.chars import terminal_text


def remotes(git: GitRepo) -> list[str]:
    return git.git("remote").split()


def open_task(repo: Path, text: str, *, fetch: bool = True) -> tuple[GitRepo, str]:
    """(store, task id) for ``text`` (an id, its branch, or a unique prefix): this repository's
    branch; else a remote's, from its remote-tracking ref or, with ``fetch``, fetched."""
    from gitops_agent.observe.trace_build import resolve_task_id

    local = GitRepo(repo)
    try:
        tid = resolve_task_id(local, text, fetch=False)
    except TaskNotFound as e:
        if "several" in str(e):
            raise
        tid = None
    name = tid or _plain_id(text)
    branch = branch_for(name)
    if local.tip(branch, fetch=False) is not None:
        return local, name
    names = remotes(local)
    for r in names:  # known already: no network
        g = GitRepo(repo, remote=r)
        if g.tip(branch, fetch=False) is not None:
            return g, name
    if fetch:
        for r in names:
            g = GitRepo(repo, remote=r)
            try:
                if g.tip(branch) is not None:
                    return g, name
            except GitError:
                continue  # an unreachable remote: try the next, then say where we looked
    where = f" here or on {', '.join(names)}" if names else " in this repository"
    raise TaskNotFound(f"no task {text!r}{where} (list them with `gitops-agent tasks`)")


def local_branch_for(repo: Path, text: str) -> str:
    """`run --resume` without --push: a task found only on a remote gets a local branch first
    (then the local run goes on from the remote's last commit)."""
    git, tid = open_task(repo, text)
    if git.remote is not None:
        sha = git.tip(branch_for(tid), fetch=False)
        git.git("update-ref", "-m", f"gitops-agent: from {git.remote}", f"refs/heads/{branch_for(tid)}", sha, "0" * len(sha))
    return tid


def _plain_id(text: str) -> str:
    name = (text or "").strip()
    for prefix in ("refs/heads/", "refs/remotes/"):
        name = name.removeprefix(prefix)
    if BRANCH_PREFIX in name:
        name = name.split(BRANCH_PREFIX, 1)[1]
    check_task_id(name)
    return name


def cmd_tasks(args: argparse.Namespace) -> int:
    from gitops_agent.app.local import find_repo
    from gitops_agent.cli.output import EXIT_OK
    from gitops_agent.core.snapshot import load_snapshot

    repo = find_repo(args.repo)
    git = GitRepo(repo)
    if args.remove:
        return _remove(git, args.remove)
    if args.fetch:
        if args.fetch not in remotes(git):
            raise UsageError(f"--fetch: no remote {args.fetch!r} (git remote lists: {', '.join(remotes(git)) or 'none'})")
        git.git(
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            args.fetch,
            f"+refs/heads/{BRANCH_PREFIX}*:refs/remotes/{args.fetch}/{BRANCH_PREFIX}*",
            network=True,
        )
    rows: dict[str, tuple[GitRepo, str, str, str]] = {}  # task id -> store, where, date, subject
    fmt = "--format=%(refname)\t%(committerdate:iso8601)\t%(contents:subject)"
    for line in git.git("for-each-ref", "--sort=refname", fmt, f"refs/heads/{BRANCH_PREFIX}").splitlines():
        ref, date, subject = (line.split("\t") + ["", ""])[:3]
        rows[ref.removeprefix(f"refs/heads/{BRANCH_PREFIX}")] = (git, "", date, subject)
    for r in remotes(git):
        for line in git.git("for-each-ref", "--sort=refname", fmt, f"refs/remotes/{r}/{BRANCH_PREFIX}").splitlines():
            ref, date, subject = (line.split("\t") + ["", ""])[:3]
            tid = ref.removeprefix(f"refs/remotes/{r}/{BRANCH_PREFIX}")
            rows.setdefault(tid, (GitRepo(repo, remote=r), f" (on {r} only)", date, subject))
    if not rows:
        print("no tasks in this repository" + (" or its remotes (`--fetch REMOTE` looks there)" if remotes(git) else ""))
        return EXIT_OK
    for tid in sorted(rows):
        store, where, date, subject = rows[tid]
        try:
            snap = load_snapshot(store, tid, fetch=False)
            state = snap.ending()[0]
            state = "not finished" if state == "unfinished" else state
        except AgentError as e:
            hint = f"remove it: gitops-agent tasks --remove {tid}" if not where else "on a remote: not removed from here"
            print(terminal_text(f"{tid:48} {date[:16]}  BROKEN: {e} ({hint}){where}"))
            continue
        print(terminal_text(f"{tid:48} {date[:16]}  {state:12} {subject}{where}"))  # "not finished" fits
    return EXIT_OK


def _remove(git: GitRepo, text: str) -> int:
    from gitops_agent.cli.output import EXIT_OK

    try:
        check_task_id(text)
    except AgentError as e:
        raise UsageError(f"--remove: {e}") from None
    ref = f"refs/heads/{BRANCH_PREFIX}{text}"
    sha = git.tip(BRANCH_PREFIX + text, fetch=False)
    if sha is None:
        raise UsageError(f"--remove: no task {text!r} here (see `gitops-agent tasks`)")
    git.git("update-ref", "-d", ref, sha)
    print(f"removed task {text} (branch {BRANCH_PREFIX}{text} was at {sha[:12]})")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from gitops_agent.app.local import find_repo
    from gitops_agent.cli.output import EXIT_OK
    from gitops_agent.core.snapshot import load_snapshot
    from gitops_agent.observe.charts import find_charts, terminal_lines
    from gitops_agent.observe.render import checklist, without_escapes

    git, tid = open_task(find_repo(args.repo), args.task_id)
    snap = load_snapshot(git, tid, fetch=False)
    raw = git.read_file(snap.tip, f"{snap.root}/report.md")
    if raw:  # the escapes the file needs for GitHub (\_plan) would only be noise here
        print(terminal_text(without_escapes(raw.decode("utf-8", "replace"))))
    else:
        print(terminal_text(f"# {snap.task.question}\n\n(unfinished)\n\n{checklist(snap.plan)}"))
    charts = terminal_lines(find_charts(git, snap.tip, snap.task_id, snap.steps))
    if charts:  # the files themselves: `git show <branch>:<path> > chart.png` opens one
        print(terminal_text("\n".join(["", *charts])))
    return EXIT_OK
