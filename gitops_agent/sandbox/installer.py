"""How this machine installs Python packages: uv when it can be found, else pip; and the index
and certificates either is given. One place, used by the workbench build and by `doctor`.

uv reads no pip.conf: the index and certificates pip is configured with here (its environment,
else its configuration) are handed to uv, and uv trusts the system's store as pip does (a
TLS-inspecting proxy's root is there, not in uv's own roots). That is what the action's own
install does (action.yml); this is the same rule for what the agent installs later.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def run_tool(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 20, errors_first: bool = False
) -> tuple[int, str]:
    """(exit code, what it printed) of a short host tool; 127 and the reason when it cannot run
    or outlasts ``timeout``. ``errors_first``: its stderr before its stdout (an installer's
    failure is on stderr; a query such as `pip config get` answers on stdout)."""
    try:
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        return 127, str(e)
    return p.returncode, ((p.stderr or p.stdout) if errors_first else (p.stdout or p.stderr)).strip()


def uv_binary(environ: dict[str, str] | None = None) -> str | None:
    """The uv to use: $GITOPS_AGENT_UV (the action sets it to the uv it installed, pinned by
    hash), uv on PATH, uv beside this interpreter (a virtualenv's bin), else None."""
    e = os.environ if environ is None else environ
    given = e.get("GITOPS_AGENT_UV")
    if given and os.access(given, os.X_OK):
        return given
    beside = Path(sys.executable).parent / "uv"
    for candidate in (shutil.which("uv", path=e.get("PATH")), str(beside) if beside.exists() else None):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def index_url(environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(the index uv is given, where that came from)."""
    e = os.environ if environ is None else environ
    for var in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL"):
        if e.get(var):
            return e[var], var
    rc, out = run_tool([sys.executable, "-I", "-m", "pip", "config", "get", "global.index-url"])
    if rc == 0 and out.startswith(("http://", "https://")):
        return out.splitlines()[-1].strip(), "pip's global.index-url"
    return "https://pypi.org/simple", "the default"


# what an installer needs of the agent's environment: where things are, the proxy, the index and
# its certificates; never the model keys or the GitHub token (a package's install runs nothing
# here -- wheels only -- but the installer itself has no need of them)
_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT")
_PASSED_PREFIXES = ("UV_", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CONFIG_FILE")
_PROXY = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


def uv_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an installer runs with: an allow-list of this one (no credentials), no
    project's uv.toml or pyproject.toml deciding how it installs, pip's index and certificates,
    and the system trust store."""
    src = os.environ if environ is None else environ
    env = {k: v for k, v in src.items() if k in _PASSED or k.startswith(_PASSED_PREFIXES) or k.lower() in _PROXY}
    env["UV_NO_CONFIG"] = "1"
    env.setdefault("UV_NATIVE_TLS", "1")
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    url, source = index_url(env)
    if source != "the default" and not env.get("UV_DEFAULT_INDEX") and not env.get("UV_INDEX_URL"):
        env["UV_INDEX_URL"] = url
    if env.get("PIP_EXTRA_INDEX_URL") and not env.get("UV_EXTRA_INDEX_URL"):
        env["UV_EXTRA_INDEX_URL"] = env["PIP_EXTRA_INDEX_URL"]
    if not env.get("SSL_CERT_FILE") and env.get("PIP_CERT"):
        env["SSL_CERT_FILE"] = env["PIP_CERT"]
    return env
