"""Sandboxes: run the model's code with no credentials, inside limits, in a working tree.

limits.py      SandboxLimits (the `sandbox:` settings)
env.py         the scrubbed environment
output.py      stdout/stderr as head + tail, redacted
cgroups.py     pids and memory cgroups of one action
watchdog.py    disk budget, and memory where no cgroup can be had
base.py        what the process backends share (rlimits, timeout, kill)
plain.py       subprocess: not a boundary
bubblewrap.py  bwrap over an allow-list of the host (mounts.py)
docker.py      a throwaway container
choose.py      make_sandbox: auto, require_isolation
"""
