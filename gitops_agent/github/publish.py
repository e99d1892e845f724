"""What a job shows on GitHub: the answer's pull request and comment, the progress comment, the
job's step summary and outputs -- all sanitised (gitops_agent/safety/text.py)."""

from __future__ import annotations

from typing import Any

from gitops_agent.core.snapshot import Snapshot
from gitops_agent.github.errors import GitHubError, GitHubRateLimited
from gitops_agent.observe.charts import find_charts, remote_markdown
from gitops_agent.observe.render import checklist, cost_table, md_block, md_text
from gitops_agent.observe.surfaces import pr_body, progress_comment
from gitops_agent.runtime.context import Runtime
from gitops_agent.safety.chars import log_line
from gitops_agent.safety.text import strip_invisible

MARKER = "<!-- gitops-agent:task={task} -->"
ANSWER_MARKER = "<!-- gitops-agent:answer={task} -->"


def answer_marker(task_id: str, follow_up: int = 0) -> str:
    """The marker of the answer comment: the first answer, or the reply to follow-up N."""
    return ANSWER_MARKER.format(task=task_id if not follow_up else f"{task_id}.{follow_up}")


class Publisher:
    """What a job shows on GitHub: the answer, replies, the progress comment, the job summary and outputs."""

    def __init__(self, settings: Any, client: Any, outputs: dict[str, str]) -> None:
        self.s, self.client, self.outputs = settings, client, outputs

    def publish_answer(self, rt: Runtime, snap: Snapshot) -> None:
        outcome, answer, reason = snap.ending()
        hosts = tuple(rt.config.github.image_hosts)
        title_src = (
            snap.plan.finish.summary
            if snap.plan and snap.plan.finish and snap.plan.finish.summary
            else snap.task.question.splitlines()[0]
        )
        title = " ".join(strip_invisible(f"gitops-agent: {title_src}").split())[:120]
        # the charts: this repository's own files at the pushed tip (a sha, so what is shown never changes)
        charts = remote_markdown(
            find_charts(snap.git, snap.tip, snap.task_id, snap.steps), self.s.server_url, self.s.repo, snap.tip, hosts
        )
        body = strip_invisible(pr_body(snap, run_url=self.s.run_url, image_hosts=hosts, charts=charts))[:60000]
        reviewers = [snap.task.source.author] if snap.task.source.author else []
        n = len(snap.task.instructions)
        fu = snap.task.follow_ups[n - 1] if n and len(snap.task.follow_ups) >= n else None
        refused: GitHubError | None = None
        try:
            number, url = self.client.open_pull(
                head=snap.branch,
                base=snap.task.base_ref,
                title=title,
                body=body,
                draft=rt.config.github.draft_pr,
                reviewers=reviewers,
                again=[fu.by] if fu is not None and fu.by else None,
            )
        except GitHubError as e:
            if isinstance(e, GitHubRateLimited) or e.status is None or not 400 <= e.status < 500:
                raise  # a passing fault: the job fails and the finish is sent again
            refused, number, url = e, 0, ""  # the setting, a protected branch, a token's scope: the answer goes on
        self.outputs["pr-url"] = url
        if refused is None and outcome == "done" and rt.config.github.draft_pr:  # a draft while the agent works
            self.client.mark_ready(number)
        where = fu.number if fu is not None and fu.number is not None else snap.task.source.issue
        if refused is not None:
            self._without_pull(snap, refused, where)
        if where is None:
            return
        # one reply per question, where it was asked: the first answer, then one for each follow-up
        # (a new comment, so whoever asked is notified, even when the answer did not change)
        marker = answer_marker(snap.task_id, n)
        status = (
            "Here is the answer"
            if outcome == "done"
            else f"The task stopped ({outcome}: {md_text(reason or 'see the report', 500)}); here is what it has"
        )
        if n:
            status = f"Follow-up {n} ({md_text(snap.task.instructions[-1], 300)}): " + status[0].lower() + status[1:]
        link = f"pull request: {url}" if refused is None else self._branch_links(snap)
        text = f"{marker}\n{status} — {link}\n\n{md_block(answer, hosts) if answer else ''}\n"
        if charts:
            text += f"\n{charts}\n"
        if refused is not None:
            text += "\n" + self._why_no_pull(refused) + "\n"
        if fu is not None and fu.where == "review" and fu.comment_id is not None:
            self.client.reply_in_thread(where, fu.comment_id, text[:60000])
        else:
            self.client.upsert_comment(where, marker, text[:60000])

    # -- when no pull request can be opened
    def _branch_links(self, snap: Snapshot) -> str:
        server, repo = self.s.server_url.rstrip("/"), self.s.repo
        branch, base = snap.branch, snap.task.base_ref
        self.outputs["branch-url"] = f"{server}/{repo}/tree/{branch}"
        self.outputs["compare-url"] = f"{server}/{repo}/compare/{base}...{branch}?expand=1"
        return (
            f"the answer is on the branch [`{branch}`]({self.outputs['branch-url']}) "
            f"([open a pull request from it]({self.outputs['compare-url']}))"
        )

    @staticmethod
    def _why_no_pull(e: GitHubError) -> str:
        """One sentence on what to change, naming the setting when GitHub named it."""
        said = md_text(f"{e.status} {e.github_message}", 300)
        if "not permitted to create or approve pull requests" in e.github_message:
            return (
                "The pull request could not be opened: GitHub Actions may not open pull requests in this repository "
                f"({said}). A maintainer can turn on **Allow GitHub Actions to create and approve pull requests** "
                "(Settings → Actions → General → Workflow permissions; for an organisation, also in its settings), "
                "or open it from the link above."
            )
        return (
            f"The pull request could not be opened ({said}); the branch is pushed: open it from the link above, or "
            "check the token's permissions and the branch rules."
        )

    def _without_pull(self, snap: Snapshot, e: GitHubError, where: int | None) -> None:
        print(f"gitops-agent: no pull request for {snap.branch}: {log_line(str(e), 300)}; the answer goes on the issue")
        if where is None:  # no issue to answer on (a workflow's input): the job's log and summary say it
            print(f"gitops-agent: {log_line(self._why_no_pull(e), 500)}")
        if self.s.summary_path:
            with open(self.s.summary_path, "a") as f:
                f.write(f"\n**No pull request.** {self._why_no_pull(e)} Branch: `{snap.branch}`.\n")

    def reply(self, trigger, text: str) -> None:
        """A short answer where a trigger was asked: its issue, or its PR's conversation (intake
        holds `issues: write`, not the `pull-requests: write` a review-thread reply takes)."""
        where = trigger.issue if trigger.issue is not None else trigger.pull
        if where is None:
            print(f"gitops-agent: {log_line(text, 500)}")
            return
        self.client.comment(where, text[:60000])

    def progress(self, snap: Snapshot, current: str) -> None:
        issue = snap.task.source.issue
        if issue is None:
            return
        marker = MARKER.format(task=snap.task_id)
        body = progress_comment(snap, current=current, run_url=self.s.run_url, commit_url=self.commit_url)
        if marker not in body:
            body = marker + "\n" + body
        self.client.upsert_comment(issue, marker, strip_invisible(body))

    def commit_url(self, sha: str) -> str:
        return f"{self.s.server_url.rstrip('/')}/{self.s.repo}/commit/{sha}"

    def summary(self, snap: Snapshot, desc: str) -> None:
        if not self.s.summary_path:
            return
        try:
            from gitops_agent.observe.surfaces import step_summary

            text = step_summary(snap, desc)
        except ImportError:
            text = f"### gitops-agent · {snap.task_id} · {desc}\n\n{checklist(snap.plan)}\n\n{cost_table(snap.steps)}\n"
        with open(self.s.summary_path, "a") as f:
            f.write(text + "\n")

    def write_outputs(self) -> None:
        if not self.s.output_path:
            return
        with open(self.s.output_path, "a") as f:
            for k, v in self.outputs.items():
                f.write(f"{k}={v}\n")
