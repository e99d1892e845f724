"""Model specs written where someone other than the user could have written them.

A spec on the command line or in the trusted settings (``.github/gitops-agent.yml`` at the base
commit, the action's inputs) may name an endpoint (``openai:NAME@URL``) or a script file
(``scripted:PATH``): the user chose them. A spec in a file on a branch -- an agent of
``agent/brain``, an evolve proposal, an eval payload -- is data. It names a provider and a model,
never where the provider's key is sent nor a file the host reads: an endpoint there would get
``OPENAI_API_KEY`` (the third review's F1), a path would be read on the runner.
"""

from __future__ import annotations

import re

from gitops_agent.models.registry import providers

# provider:model, with the characters model ids use (org/model, tags, dates); no '@', no spaces
_PROVIDER_MODEL = re.compile(r"([a-z][a-z0-9_-]{0,31}):[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,199}")
# scripted:NAME names a model the run was given (tests, replay), never a file
_SCRIPTED_NAME = re.compile(r"scripted:[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def data_spec_problem(spec: str) -> str | None:
    """Why ``spec`` cannot stand in a branch-held file, or None when it can."""
    if not isinstance(spec, str):
        return "a model spec must be a string"
    if "@" in spec:
        return (
            f"{spec!r} names an endpoint; a brain file names a provider and a model only "
            "(endpoints come from the trusted settings: models: in .github/gitops-agent.yml or the action's inputs)"
        )
    if spec.startswith("scripted:"):
        if _SCRIPTED_NAME.fullmatch(spec):
            return None
        return f"{spec!r} names a file; in a brain file scripted:NAME names a model the run was given, never a path"
    m = _PROVIDER_MODEL.fullmatch(spec)
    known = {n for n, p in providers().items() if p.in_data}
    if m and m.group(1) in known:
        return None
    return f"{spec!r} is not provider:model (" + " or ".join(f"{n}:ID" for n in sorted(known)) + ")"


def with_trusted_endpoint(spec: str, trusted: list[str]) -> str:
    """A data spec ``openai:NAME`` served where the trusted settings serve that provider's models
    (``openai:OTHER@URL``): a brain may pick another model of the user's own server, never
    another server. Without such a trusted spec the provider's own setting applies
    (OPENAI_BASE_URL)."""
    provider, _, name = spec.partition(":")
    if not getattr(providers().get(provider), "endpoint", False):
        return spec
    for t in trusted:
        p, _, rest = (t or "").partition(":")
        _model, at, url = rest.partition("@")
        if p == provider and at and url:
            return f"{provider}:{name}@{url}"
    return spec
