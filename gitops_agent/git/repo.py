"""Git as the whole state: ``GitRepo`` implements the ``GitStore`` seam with plumbing only.

It never touches a checkout, the repository's own index or HEAD: commits are built from trees
(``gitops_agent.git.commits``) and published with a compare-and-swap (``git update-ref <ref> <new>
<old>``) in local mode, or a plain, never forced ``git push`` in remote mode (``gitops_agent.git.sync``).
A lost race re-reads the tip, checks that nobody else changed the same paths since ``base`` and
re-applies the same change on the new tip (bounded, jittered back-off).

Two modes:

* local (``remote=None``): the branches are refs in ``repo`` (the user's own repository).
* remote (``remote="origin"``): ``repo`` is a job's (usually shallow) clone; branches live on the
  remote. A plain branch name given to a read (``read_file``, ``list_files``, ``log``,
  ``checkout``, ``create_branch``'s base) means the remote-tracking ref
  ``refs/remotes/<remote>/<name>``, i.e. the remote as of the last ``tip()`` or commit. Full
  ref names (``refs/...``), object ids and ``HEAD`` are used as given.

Every git command goes through ``gitops_agent.git.process`` (explicit git dir, no hooks, fsmonitor,
attribute drivers, system or global config, no secret in the environment). Identity always comes
from ``author_name``/``author_email`` through the environment. Credentials only ever travel in the
environment of network commands (``auth_env``), so no token is written to ``.git/config``.
"""

from __future__ import annotations

from gitops_agent.git.commits import Commits
from gitops_agent.git.export import Checkouts
from gitops_agent.git.messages import Commit, format_message, parse_trailers
from gitops_agent.git.process import GitRunner
from gitops_agent.git.reads import Reads
from gitops_agent.git.sync import Sync

__all__ = ["Commit", "GitRepo", "format_message", "parse_trailers"]


class GitRepo(Checkouts, Commits, Sync, Reads, GitRunner):
    """A repository used as the agent's store (implements ``gitops_agent.core.seams.GitStore``)."""
