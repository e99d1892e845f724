"""The action's first step: refuse an outsider before anything is installed or cloned.

Run by ``action.yml`` with the runner's bare ``python3`` and only the standard library (so it
costs a second, not an install). It answers ``proceed=true`` unless it is sure the event cannot
start or steer a task:

* not an ``issues``/``issue_comment`` event, or the actor can write to the repository, or the
  actor's login is listed in ``trigger.allow``/``trigger.allow_bots`` of
  ``.github/gitops-agent.yml`` -> proceed: the full intake decides with the real rules;
* an outsider's comment or issue that is not a trigger (no phrase, no label) -> stop, silently;
* an outsider (or a bot) trying to trigger -> stop, and answer them once: at most one refusal
  comment per person per issue (a marker in the comment), none for bots.

Any doubt (the API does not answer, an unexpected event) means proceed: this is a cost filter,
never the access check itself. Usage: ``python3 gate.py`` with GITHUB_* and GITOPS_AGENT_*
variables; writes ``proceed=`` to $GITHUB_OUTPUT.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_LABEL = "agent"
DEFAULT_PHRASE = "/agent"
CONFIG_PATH = ".github/gitops-agent.yml"
WRITE_ROLES = {"admin", "maintain", "write"}
LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?")


def refusal_marker(login: str) -> str:
    return f"<!-- gitops-agent:refused={login.lower()} -->"


class Api:
    def __init__(self, url: str, repo: str, token: str, timeout: float = 15):
        self.url, self.repo, self.token, self.timeout = url.rstrip("/"), repo, token, timeout

    def call(self, method: str, path: str, body: dict | None = None, raw: bool = False) -> tuple[int, object]:
        req = urllib.request.Request(
            f"{self.url}/repos/{self.repo}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github.raw" if raw else "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "gitops-agent-gate",
                **({"Content-Type": "application/json"} if body is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                data = r.read()
                return r.status, (data.decode("utf-8", "replace") if raw else (json.loads(data) if data else None))
        except urllib.error.HTTPError as e:
            return e.code, None


def _setting(text: str, key: str) -> str | None:
    """A ``key: value`` scalar from the config's text (best effort: only to tell whether an
    outsider's text was meant as a trigger, never to start anything)."""
    m = re.search(rf"^\s*{key}\s*:\s*[\"']?([^\"'#\n]+?)[\"']?\s*(?:#.*)?$", text, re.M)
    return m.group(1).strip() if m else None


_ALLOW_KEY = re.compile(r"""(?<![\w-])["']?(allow|allow_bots)["']?\s*:[ \t]*""", re.I)
_ITEM = r"""\s*["']?([A-Za-z0-9][A-Za-z0-9-]{0,38}(?:\[bot\])?)["']?\s*"""
_FLOW_ITEM = re.compile(_ITEM + r"(,|\])")
_BLOCK_ITEM = re.compile(r"\s*-" + _ITEM)


def _allowed_logins(text: str) -> set[str] | None:
    """The logins of ``trigger.allow`` and ``trigger.allow_bots`` (the only keys of that name),
    in flow (``allow: [a, b]``) or block form (``allow:`` then ``- a`` lines), lower-cased; None
    when one is written in a form this reader does not know (then: proceed, the intake decides).
    Only these lists count: a login that is merely some word of the file (``require``,
    ``hosts``, a comment) is not named."""
    flat = "\n".join(line.split("#", 1)[0].rstrip() for line in text.splitlines())
    found: set[str] = set()
    for m in _ALLOW_KEY.finditer(flat):
        pos = m.end()
        if flat.startswith("[", pos):  # flow: [a, "b", c[bot]]
            pos += 1
            if re.match(r"\s*\]", flat[pos:]):
                continue
            while True:
                item = _FLOW_ITEM.match(flat, pos)
                if item is None:
                    return None
                found.add(item.group(1).lower())
                pos = item.end()
                if item.group(2) == "]":
                    break
        elif flat.startswith("\n", pos) or pos == len(flat):  # block: "- a" lines (or nothing: null)
            for line in flat[pos + 1 :].split("\n"):
                if not line.strip():
                    continue
                item = _BLOCK_ITEM.fullmatch(line)
                if item is None:
                    if line.lstrip().startswith("-"):
                        return None
                    break
                found.add(item.group(1).lower())
        elif not re.match(r"(null|~)\s*(\n|,|}|$)", flat[pos:]):
            return None
    return found


def _starts_with(body: str, phrase: str) -> bool:
    text = (body or "").lstrip()
    if not phrase or not text.lower().startswith(phrase.lower()):
        return False
    rest = text[len(phrase) :]
    return not rest or rest[0].isspace()


def decide(env: dict[str, str], event: dict, api: Api) -> tuple[bool, str]:
    """(proceed, why); posts the one refusal comment when it refuses a person."""
    name = env.get("GITHUB_EVENT_NAME", "")
    if name not in ("issues", "issue_comment", "pull_request_review_comment", "pull_request_review"):
        return True, f"{name or 'no'} event: not gated"
    if name in ("issue_comment", "pull_request_review_comment"):
        actor = (event.get("comment") or {}).get("user") or event.get("sender") or {}
    elif name == "pull_request_review":
        actor = (event.get("review") or {}).get("user") or event.get("sender") or {}
    else:
        actor = event.get("sender") or {}
    login = str(actor.get("login") or "")
    is_bot = actor.get("type") == "Bot" or login.endswith("[bot]")
    if not LOGIN.fullmatch(login):
        return True, "no usable login: the intake decides"
    status, data = api.call("GET", f"/collaborators/{urllib.parse.quote(login)}/permission")
    if (
        status == 200
        and isinstance(data, dict)
        and (data.get("role_name") in WRITE_ROLES or data.get("permission") in WRITE_ROLES)
    ):
        return True, f"@{login} can write"
    if status not in (200, 404):
        return True, f"permission check answered {status}: the intake decides"
    branch = (event.get("repository") or {}).get("default_branch")
    status, text = api.call(
        "GET", f"/contents/{CONFIG_PATH}" + (f"?ref={urllib.parse.quote(branch)}" if branch else ""), raw=True
    )
    if status not in (200, 404):
        return True, f"config read answered {status}: the intake decides"
    text = text if status == 200 and isinstance(text, str) else ""
    allowed = _allowed_logins(text)
    if allowed is None:
        return True, f"trigger.allow in {CONFIG_PATH} is in a form this gate does not read: the intake decides"
    if login.lower() in allowed:
        return True, f"@{login} is listed in trigger.allow of {CONFIG_PATH}: the intake decides"
    phrase = env.get("GITOPS_AGENT_TRIGGER_PHRASE") or _setting(text, "phrase") or DEFAULT_PHRASE
    label = env.get("GITOPS_AGENT_TRIGGER_LABEL") or _setting(text, "label") or DEFAULT_LABEL
    issue = event.get("issue") or event.get("pull_request") or {}  # a pull request is an issue too (its comments)
    if name in ("issue_comment", "pull_request_review_comment"):
        trying = event.get("action") == "created" and _starts_with(str((event.get("comment") or {}).get("body") or ""), phrase)
    elif name == "pull_request_review":
        review = event.get("review") or {}
        trying = event.get("action") == "submitted" and (
            _starts_with(str(review.get("body") or ""), phrase) or str(review.get("state") or "").lower() == "changes_requested"
        )
    else:
        labels = [str(x.get("name", "")) for x in issue.get("labels") or [] if isinstance(x, dict)]
        trying = event.get("action") in ("opened", "reopened", "labeled") and (
            label in labels or _starts_with(str(issue.get("body") or ""), phrase)
        )
    if not trying:
        return False, f"@{login} cannot write and this is not a trigger: nothing to do"
    if is_bot:
        return False, f"bot @{login} is not allowed to trigger (not listed): nothing to do"
    number = issue.get("number")
    if isinstance(number, int):
        marker = refusal_marker(login)
        for page in range(1, 11):
            status, comments = api.call("GET", f"/issues/{number}/comments?per_page=100&page={page}")
            if status != 200 or not isinstance(comments, list):
                break
            if any(marker in str(c.get("body") or "") for c in comments if isinstance(c, dict)):
                return False, f"@{login} cannot write; already told on #{number}"
            if len(comments) < 100:
                break
        api.call("POST", f"/issues/{number}/comments", {"body": refusal_text(login, label, phrase)})
    return False, f"@{login} cannot write to the repository: refused"


def refusal_text(login: str, label: str, phrase: str) -> str:
    return (
        f"{refusal_marker(login)}\nThanks @{login}! gitops-agent only starts or steers tasks for people with "
        f"write access to this repository, so nothing ran. A maintainer can label the issue `{label}` or comment "
        f"`{phrase} …` to start it."
    )


def main() -> int:
    env = dict(os.environ)
    try:
        with open(env.get("GITHUB_EVENT_PATH") or "", encoding="utf-8") as f:
            event = json.load(f)
    except (OSError, ValueError):
        event = {}
    token = env.get("GITOPS_AGENT_GITHUB_TOKEN") or env.get("GITHUB_TOKEN") or ""
    repo = env.get("GITHUB_REPOSITORY", "")
    if not token or "/" not in repo or not isinstance(event, dict):
        proceed, why = True, "no token or repository: the intake decides"
    else:
        try:
            proceed, why = decide(env, event, Api(env.get("GITHUB_API_URL") or "https://api.github.com", repo, token))
        except Exception as e:  # noqa: BLE001 - a cost filter never blocks on its own failure
            proceed, why = True, f"gate failed ({type(e).__name__}): the intake decides"
    print(f"gitops-agent gate: {why.replace('::', ': :')}")
    out = env.get("GITHUB_OUTPUT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(f"proceed={'true' if proceed else 'false'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
