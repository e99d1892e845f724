"""`gitops-agent doctor`: what is wrong with this machine or runner, one line each.

The runner part (``--runner``; the action runs it when a job starts and the job summary shows
it): Python, git, the sandbox (bubblewrap and the user namespaces it needs), cgroup delegation,
uv and the package index it would use (with the trust store in use). Besides, on a workstation:
the model endpoints (the pre-flight `run` does: key, endpoint, model) and the repository's
settings file. Every check runs even when one before it failed.
"""

from __future__ import annotations

import os
import shutil
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gitops_agent.sandbox.installer import run_tool

OK, WARN, FAIL = "ok", "warn", "fail"
MARK = {OK: "✓", WARN: "!", FAIL: "✗"}


@dataclass
class Check:
    name: str
    state: str
    line: str

    def text(self) -> str:
        return f"{MARK[self.state]} {self.name:<9} {self.line}"


def check_python() -> Check:
    v = sys.version_info
    where = sys.executable
    if v < (3, 10):
        return Check("python", FAIL, f"{v.major}.{v.minor} at {where}: gitops-agent needs Python 3.10 or newer")
    return Check("python", OK, f"{v.major}.{v.minor}.{v.micro} at {where}")


def check_git() -> Check:
    git = shutil.which("git")
    if git is None:
        return Check("git", FAIL, "not found on PATH: install git (apt-get install git)")
    rc, out = run_tool([git, "--version"])
    parts = out.split()[-1].split(".") if rc == 0 else []
    if rc != 0 or len(parts) < 2 or not parts[0].isdigit() or (int(parts[0]), int(parts[1])) < (2, 30):
        return Check("git", FAIL, f"{out or 'does not run'}: gitops-agent needs git 2.30 or newer")
    return Check("git", OK, f"{out} at {git}")


def check_sandbox() -> Check:
    from gitops_agent.sandbox.bubblewrap import bwrap_works

    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Check(
            "sandbox",
            FAIL,
            "bubblewrap is not installed: the model's code cannot be isolated (apt-get install bubblewrap); "
            "on GitHub the action installs it",
        )
    if not bwrap_works():
        userns = _read("/proc/sys/kernel/unprivileged_userns_clone") or _read("/proc/sys/user/max_user_namespaces")
        apparmor = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        why = "unprivileged user namespaces are off"
        if apparmor == "1":
            why += " (AppArmor restricts them: sysctl kernel.apparmor_restrict_unprivileged_userns=0)"
        return Check("sandbox", FAIL, f"{bwrap} is installed but cannot start a sandbox: {why} [{userns or '?'}]")
    rc, out = run_tool([bwrap, "--version"])
    return Check("sandbox", OK, f"{out or 'bubblewrap'}: starts a sandbox with user namespaces (no network, own /tmp)")


def check_cgroups() -> Check:
    from gitops_agent.sandbox.cgroups import describe

    got = describe()
    missing = [c for c, where in got.items() if where == "unavailable"]
    if not missing:
        return Check("cgroups", OK, f"delegated: pids and memory cgroups per action under {got['pids']}")
    return Check(
        "cgroups",
        WARN,
        f"no {' or '.join(missing)} cgroup can be made here (not delegated): limits fall back to rlimits and a "
        "memory watchdog; fine for most runners",
    )


def _trust_store() -> tuple[ssl.SSLContext, str]:
    cafile = os.environ.get("SSL_CERT_FILE")
    if cafile and Path(cafile).is_file():
        return ssl.create_default_context(cafile=cafile), f"SSL_CERT_FILE={cafile}"
    paths = ssl.get_default_verify_paths()
    return ssl.create_default_context(), f"the system trust store ({paths.cafile or paths.capath or 'OpenSSL default'})"


def check_index(timeout: float = 10) -> Check:
    from gitops_agent.sandbox.installer import index_url, uv_binary

    url, source = index_url()
    ctx, store = _trust_store()
    uv = uv_binary()
    uv_text = (
        f"uv {(run_tool([uv, '--version'])[1].split() + ['?', '?'])[1]}"
        if uv
        else "uv not installed (the action installs it; pip works too)"
    )
    probe = url.rstrip("/") + "/pip/"
    try:
        req = urllib.request.Request(probe, headers={"Accept": "text/html", "User-Agent": "gitops-agent-doctor"})
        with urllib.request.urlopen(req, timeout=timeout, context=ctx if probe.startswith("https") else None) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        hint = " (a TLS-inspecting proxy? set SSL_CERT_FILE to its CA bundle)" if isinstance(reason, ssl.SSLError) else ""
        return Check("index", FAIL, f"{url} ({source}) cannot be reached: {reason}{hint}; trust store: {store}; {uv_text}")
    if status >= 400:
        return Check("index", FAIL, f"{url} ({source}) answers HTTP {status} for {probe}; trust store: {store}; {uv_text}")
    return Check("index", OK, f"{url} ({source}) answers (HTTP {status}); trust store: {store}; {uv_text}")


def check_workbench() -> Check:
    """Whether the model code's environment is ready here; never builds it (a task does)."""
    from gitops_agent.core.errors import AgentError
    from gitops_agent.sandbox import workbench as wbm

    try:
        root, rec = wbm.default_status()
    except (AgentError, OSError) as e:
        return Check("workbench", FAIL, f"cannot be checked: {e}")
    if rec is None:
        return Check("workbench", WARN, f"not built yet at {root}: the first task builds it (uv, wheels only, hashes checked)")
    pk = rec["packages"]
    listing = ", ".join(f"{n} {pk[n]}" for n in wbm.default_offered() if n in pk)
    return Check("workbench", OK, f"ready at {root}: {listing}")


def check_models(specs: list[str]) -> list[Check]:
    from gitops_agent.core.errors import AgentError
    from gitops_agent.core.seams import Preflight
    from gitops_agent.models import make_model
    from gitops_agent.models.registry import check_credentials

    out = []
    for spec in dict.fromkeys(specs):
        if spec.startswith("scripted"):
            continue
        try:
            check_credentials(spec)
            m = make_model(spec)
            if isinstance(m, Preflight):
                m.preflight()
                out.append(Check("model", OK, f"{spec}: the endpoint answers, takes the key and has the model"))
            else:
                out.append(Check("model", WARN, f"{spec}: this provider has no pre-flight; it is tried on the first call"))
        except AgentError as e:
            out.append(Check("model", FAIL, f"{spec}: {e}"))
    return out


def check_settings(repo: Path) -> Check:
    from gitops_agent.core.errors import ConfigError
    from gitops_agent.settings.config import CONFIG_PATH, load_config

    path = repo / CONFIG_PATH
    if not path.exists():
        return Check("settings", OK, f"no {CONFIG_PATH}: the defaults (`gitops-agent init` writes one to edit)")
    try:
        load_config(path)
    except ConfigError as e:
        return Check("settings", FAIL, str(e))
    return Check("settings", OK, f"{CONFIG_PATH} is valid")


def check_sources(repo: Path) -> list[Check]:
    """Each data source of the settings (``data.sources``): its URL variable is set, it connects,
    and its role sees tables; read as the broker reads it (the URL is never printed)."""
    from gitops_agent.core.errors import ConfigError
    from gitops_agent.data.broker import Broker
    from gitops_agent.data.environ import source_environ
    from gitops_agent.settings.config import CONFIG_PATH, load_config

    path = repo / CONFIG_PATH
    try:
        sources = load_config(path).data.sources if path.exists() else {}
    except ConfigError:
        return []  # the settings check says what is wrong
    broker = Broker(sources, environ=source_environ())
    out = []
    for name in sources:
        d = broker.describe(name)
        tables = [t["name"] for t in d.get("tables", [])]
        if d.get("error"):
            out.append(Check("data source", FAIL, f"{name}: {d['error']}"))
        elif not tables:
            out.append(Check("data source", WARN, f"{name}: connects, but its role can read no table"))
        else:
            shown = ", ".join(tables[:6]) + (f" and {len(tables) - 6} more" if len(tables) > 6 else "")
            out.append(Check("data source", OK, f"{name}: connects read-only; {len(tables)} table(s): {shown}"))
    return out


def run_checks(runner: bool, repo: Path | None = None, specs: list[str] | None = None) -> list[Check]:
    checks = [check_python(), check_git(), check_sandbox(), check_cgroups(), check_index(timeout=5 if runner else 10)]
    checks.append(check_workbench())
    if not runner:
        if repo is not None:
            checks.append(check_settings(repo))
            checks += check_sources(repo)
        checks += check_models(specs or [])
    return checks


def summary_markdown(checks: list[Check]) -> str:
    from gitops_agent.observe.render import md_text

    rows = "\n".join(f"| {MARK[c.state]} | {c.name} | {md_text(c.line, 1000)} |" for c in checks)
    return f"### gitops-agent doctor (this runner)\n\n| | check | result |\n|---|---|---|\n{rows}\n\n"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""
