"""Model providers behind one protocol (gitops_agent.core.seams.Model), chosen by a spec string
(gitops_agent/models/registry.py says which specs there are)."""

from __future__ import annotations

from gitops_agent.models.providers.scripted import DEMO_SCRIPT
from gitops_agent.models.registry import make_model, model_id

__all__ = ["DEMO_SCRIPT", "make_model", "model_id"]
