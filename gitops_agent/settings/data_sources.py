"""``data:`` in the settings: the databases the model's code may query through the broker
(gitops_agent/data/broker.py). A source names the environment variable that holds its URL, never
the URL: the settings file is committed, the URL carries a password."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# the agent's and the runner's own variables (the GitHub token, the model's key, the runner's
# tokens): never a source's URL, whoever wrote the settings; a source has a variable of its own
_NOT_A_SOURCE = re.compile(r"(GITHUB|ACTIONS|RUNNER|GITOPS_AGENT|ANTHROPIC|OPENAI)_\w*|GH_TOKEN|INPUT_\w+", re.IGNORECASE)


class DataSource(BaseModel):
    """One database: where its URL is, and the bounds of every query run on it."""

    model_config = ConfigDict(extra="forbid")
    url_env: str = Field(
        description="The environment variable of the agent's process holding the URL (postgresql://user:pw@host/db, "
        "duckdb:///path/to/file.duckdb); read only when a query needs it, never passed to the sandbox."
    )
    timeout_s: float = Field(30, gt=0, le=3600, description="Seconds one query may run, enforced on the server.")
    max_rows: int = Field(100_000, ge=1, le=50_000_000, description="Rows one query may return; past it the result is cut.")
    max_bytes: int = Field(
        50_000_000, ge=1_000, le=2_000_000_000, description="Bytes (as JSON) one query may return; past it the result is cut."
    )
    description: str = Field("", max_length=2000, description="What the source holds, shown to the model.")

    @field_validator("url_env")
    @classmethod
    def _a_variable_name(cls, v: str) -> str:
        if not _IDENT.match(v):
            # never the value: a URL pasted here carries its password into the log
            what = "a URL" if "://" in v or "@" in v else "not an environment variable name (letters, digits, _)"
            raise ValueError(f"is {what}: name the variable that holds the URL, e.g. SHOP_DB_URL, never the URL itself")
        if _NOT_A_SOURCE.fullmatch(v):
            raise ValueError(
                f"{v!r} is one of the agent's or the runner's own variables; give the source one of its own, e.g. SHOP_DB_URL"
            )
        return v


class DataConfig(BaseModel):
    """``data: {sources: {NAME: {url_env: VAR, ...}}}``."""

    model_config = ConfigDict(extra="forbid")
    sources: dict[str, DataSource] = Field(
        default_factory=dict,
        description="The queryable databases, by name, e.g. "
        "{shop: {url_env: SHOP_DB_URL, description: orders, timeout_s: 30, max_rows: 100000, max_bytes: 50000000}}. "
        "Locally the agent reads SHOP_DB_URL from its environment; on GitHub add a line SHOP_DB_URL=postgresql://... "
        "to the secret GITOPS_AGENT_DATA_SOURCES. The model's code queries it with warehouse.query('shop', sql, params).",
    )

    @field_validator("sources")
    @classmethod
    def _names_are_identifiers(cls, v: dict[str, DataSource]) -> dict[str, DataSource]:
        for name in v:
            if not _IDENT.match(name):
                shown = "(a URL)" if "://" in name or "@" in name else repr(name)  # never a pasted URL's password
                raise ValueError(f"source name {shown} must be an identifier (letters, digits, _; not starting with a digit)")
            if name.lower() == "files":
                raise ValueError(
                    "'files' is the built-in source over the repository's CSV and Parquet files; name yours otherwise"
                )
        return v
