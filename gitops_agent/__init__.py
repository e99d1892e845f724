"""gitops-agent: a low-cost LLM agent whose whole state is a Git repository."""

__version__ = "0.1.0"
