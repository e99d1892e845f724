"""Exceptions that carry meaning: each one says what happened, and is recorded as it is."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error gitops-agent raises on purpose (the CLI prints these as one line)."""


class ConfigError(AgentError):
    """A config file, agent definition or command-line value is wrong."""


class UsageError(ConfigError):
    """A command-line flag or argument is wrong (the command exits 2, naming it)."""


class BadName(AgentError, ValueError):
    """A task id, node id or branch name from outside input that does not fit its pattern.
    (A ValueError too, so pydantic validators report it as a field error.)"""


class StateFileError(AgentError):
    """A file on a task branch does not validate. Names the file and the field."""

    def __init__(self, path: str, detail: str):
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


class GitError(AgentError):
    """A git command failed; carries the command and its stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: str):
        self.args_ = args
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"git {' '.join(args)} failed ({returncode}): {stderr.strip()[-2000:]}")


class PushConflict(AgentError):
    """The branch moved and our change touches a file that someone else changed too."""


class PushRetriesExhausted(AgentError):
    """Lost the race to update a branch more times than allowed."""


class TaskNotFound(AgentError):
    """No task branch with that id."""


class TaskExists(ConfigError):
    """A task of that id exists already (two intakes raced for an issue's task id)."""


class ModelError(AgentError):
    """The model provider failed in a way retries did not fix (kept as the step's error).

    ``status`` is the HTTP status when there was a response; ``retry_after`` the seconds the
    provider asked to wait (``retry-after`` / ``retry-after-ms``), when it said so;
    ``retryable`` whether trying again later may succeed (overloaded, rate limited, 5xx, a
    timeout, a dropped connection) -- the runtime then retries a bounded number of times."""

    def __init__(
        self, message: str = "", *, status: int | None = None, retry_after: float | None = None, retryable: bool = False
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable and not isinstance(self, FatalModelError)


class FatalModelError(ModelError):
    """A provider error that cannot succeed on retry (bad key, spend limit, bad request)."""


# how the steps word a provider failure in a task's reason (gitops_agent/steps/plan.py, execute.py)
MODEL_ERROR_MARK = "model error"


def is_infrastructure_failure(outcome: str, reason: str | None) -> bool:
    """A task that ended because the model provider failed (no connection, refused key, no such
    model, retries spent): it teaches nothing about the question, so it is no experience."""
    return outcome == "error" and MODEL_ERROR_MARK in (reason or "")


class FormatError(AgentError):
    """The model's output does not fit the tool contract; the message goes back to the model."""


class BudgetExceeded(AgentError):
    """A task budget (dollars, tokens, steps, wall time, hops) is spent."""

    def __init__(self, what: str, used: float, limit: float):
        self.what = what
        self.used = used
        self.limit = limit
        super().__init__(f"budget exceeded: {what} {used:g} of {limit:g}")


class SpendCapReached(BudgetExceeded):
    """The repository's daily or monthly spending cap (settings ``spending``) is reached: no
    task of the repository may make another paid call until it resets."""

    def __init__(self, period: str, used: float, limit: float, why: str = ""):
        self.what, self.used, self.limit, self.period = f"{period} spending", used, limit, period
        setting = "spending.daily_usd" if period == "daily" else "spending.monthly_usd"
        resets = "at 00:00 UTC" if period == "daily" else "on the 1st of the month (UTC)"
        AgentError.__init__(
            self,
            why
            or (
                f"the repository's {period} spending cap is reached: ${used:.4f} of ${limit:.2f} spent by all its tasks "
                f"({setting} in .github/gitops-agent.yml; it resets {resets})"
            ),
        )


class TurnLimit(AgentError):
    """An executor reached its turn limit without finishing its node."""


class SandboxError(AgentError):
    """The sandbox could not run the code at all (not: the code failed)."""


class PolicyViolation(AgentError):
    """A change the agent may not make (a path outside the allowed ones, a file too large)."""
