"""One module per model provider, each with its PROVIDER declaration (gitops_agent/models/registry.py)."""
