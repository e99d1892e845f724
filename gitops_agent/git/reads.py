"""Reading the object store: files at a ref (without a checkout), listings, blobs, history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gitops_agent.core.errors import GitError
from gitops_agent.git.messages import Commit, one_line, split_message
from gitops_agent.git.names import check_path, dec, enc

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.git.repo import GitRepo


class Reads:
    """Part of ``GitRepo``: everything that reads. It reaches the repository's runner and the other
    parts through ``self.g``, the GitRepo it belongs to."""

    def __init__(self, g: "GitRepo") -> None:
        self.g = g

    def read_files(self, ref: str, paths: list[str]) -> dict[str, bytes | None]:
        """Contents of ``paths`` at ``ref`` (None for a missing path or a non-file), read with
        one ``git cat-file --batch`` from one consistent tree. GitError if ``ref`` is unknown."""
        paths = list(paths)
        for p in paths:
            check_path(p)
        rev = self.g._rev(ref)
        args = ["cat-file", "--batch"]
        _, proc = self.g._spawn(args)
        out: dict[str, bytes | None] = {}
        try:

            def ask(name: str) -> tuple[str, str, bytes | None]:
                proc.stdin.write(enc(name) + b"\n")
                proc.stdin.flush()
                header = proc.stdout.readline()
                if not header:
                    raise GitError(args, proc.poll() or 128, dec(proc.stderr.read()))
                fields = header.split()
                if len(fields) != 3 or fields[-1] in (b"missing", b"ambiguous"):
                    return "", "missing", None
                size = int(fields[2])
                data = proc.stdout.read(size + 1)[:size]
                return dec(fields[0]), dec(fields[1]), data

            tree, kind, _ = ask(rev + "^{tree}")
            if kind != "tree":
                raise GitError(["cat-file", rev], 128, f"unknown revision {ref!r}")
            for p in paths:
                _, kind, data = ask(f"{tree}:{p}")
                out[p] = data if kind == "blob" else None
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.stdout.close()
            proc.stderr.close()
            proc.wait()
        return out

    def read_file(self, ref: str, path: str) -> bytes | None:
        """Content of ``path`` at ``ref`` without a checkout; None if missing."""
        return self.read_files(ref, [path])[path]

    def list_files(self, ref: str, prefix: str = "") -> list[str]:
        """All files (recursively) at ``ref`` whose path starts with ``prefix``, relative to the
        repository root, sorted."""
        if prefix:
            check_path(prefix.rstrip("/"), "prefix")
        rev = self.g._rev(ref)
        args = ["--literal-pathspecs", "ls-tree", "-r", "-z", "--name-only", "--full-tree", rev + "^{tree}"]
        d = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if d:
            args += ["--", d]
        out = self.g._run(args).stdout
        names = [dec(n) for n in out.split(b"\0") if n]
        return sorted(n for n in names if n.startswith(prefix))

    def list_blobs(self, ref: str, prefix: str = "") -> dict[str, str]:
        """{path: blob id} of the files at ``ref`` under ``prefix`` (one ls-tree)."""
        if prefix:
            check_path(prefix.rstrip("/"), "prefix")
        rev = self.g._rev(ref)
        args = ["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", rev + "^{tree}"]
        d = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if d:
            args += ["--", d]
        out: dict[str, str] = {}
        for rec in self.g._run(args).stdout.split(b"\0"):
            if rec:
                meta, _, name = rec.partition(b"\t")
                parts = meta.split()
                n = dec(name)
                if len(parts) == 3 and parts[1] == b"blob" and n.startswith(prefix):
                    out[n] = dec(parts[2])
        return out

    def read_blobs(self, ids: list[str]) -> dict[str, bytes]:
        """Contents of blobs by id (one ``git cat-file --batch``)."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        p = self.g._run(["cat-file", "--batch"], input=enc("\n".join(ids) + "\n"))
        data, out, pos = p.stdout, {}, 0
        for i in ids:
            nl = data.index(b"\n", pos)
            fields = data[pos:nl].split()
            pos = nl + 1
            if len(fields) != 3:
                continue
            size = int(fields[2])
            out[i] = data[pos : pos + size]
            pos += size + 1
        return out

    def log(self, ref: str, max_count: int | None = None, grep_trailer: tuple[str, str] | None = None) -> list[Commit]:
        """Commits reachable from ``ref``, newest first, with parsed trailers. ``grep_trailer``
        keeps those whose trailer ``key`` has exactly ``value``. In a shallow clone this is the
        history fetched so far (see ``find_commit`` for deepening)."""
        return self._log(ref, max_count, [grep_trailer] if grep_trailer else [])

    def _log(self, ref: str, max_count: int | None, wanted: list[tuple[str, str]]) -> list[Commit]:
        args = ["log", "-z", "--no-show-signature", "--format=%H%x00%P%x00%B"]
        if max_count is not None and not wanted:
            args.append(f"--max-count={int(max_count)}")
        if wanted:
            args += ["--fixed-strings", "--all-match"] + [f"--grep={k}: {one_line(v)}" for k, v in wanted]
        args.append(self.g._rev(ref))
        out = self.g._run(args).stdout
        fields = out.split(b"\0")
        commits: list[Commit] = []
        for i in range(0, len(fields) - 2, 3):
            sha = dec(fields[i]).strip()
            if not sha:
                continue
            subject, body, trailers = split_message(dec(fields[i + 2]))
            if any(trailers.get(k) != one_line(v) for k, v in wanted):
                continue
            commits.append(Commit(sha, subject, body, trailers, dec(fields[i + 1]).split()))
            if max_count is not None and len(commits) >= max_count:
                break
        return commits

    def find_commit(self, ref: str, trailers: dict[str, str]) -> Commit | None:
        """The newest commit on ``ref`` whose trailers include all of ``trailers``.

        Remote mode in a shallow clone: while it is not found and the oldest fetched commit
        still carries the same ``Agent-Task`` trailer (or, without one in ``trailers``, the
        first of ``trailers``), fetch deeper, so the whole task's history is searched but
        never the base's."""
        wanted = list(trailers.items())
        if not wanted:
            got = self._log(ref, 1, [])
            return got[0] if got else None
        rev = self.g._rev(ref)
        deep = self.g.remote and rev.startswith(f"refs/remotes/{self.g.remote}/") and self.g.is_shallow()
        if not deep:
            got = self._log(ref, 1, wanted)
            return got[0] if got else None
        branch = rev[len(f"refs/remotes/{self.g.remote}/") :]
        scope_k, scope_v = ("Agent-Task", trailers["Agent-Task"]) if "Agent-Task" in trailers else wanted[0]
        depth = 0
        for _ in range(12):
            history = self._log(ref, None, [])
            for c in history:
                if all(c.trailers.get(k) == one_line(v) for k, v in wanted):
                    return c
            if not history:
                return None
            oldest = history[-1]
            shallow = set((self.g.common_dir / "shallow").read_text().split()) if self.g.is_shallow() else set()
            if oldest.sha not in shallow or oldest.trailers.get(scope_k) != one_line(scope_v):
                return None
            depth = max(depth * 4, len(history) + 32)
            self.g.fetch_deeper(branch, depth)
        return None
