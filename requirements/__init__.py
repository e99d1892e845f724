"""The locks: requirements/action.txt (the agent), uv.txt (the installer), workbench.txt (the model code's packages)."""
