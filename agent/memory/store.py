"""Memory: the orphan branch ``agent/memory`` (DESIGN.md, "Memory and brain").

    agent/memory
      experiences/<task-id>.json     one per finished task (``Experience``), written by finish
      data/...                       shared data sets (``gitops-agent memory add-data``), mounted
                                     read-only into the sandbox

One file per task, so tasks finishing at the same moment never touch the same path: each one's
commit is re-applied on the new tip after a lost race (``GitRepo.commit_files``' fetch-rebase-
retry, with a generous retry count) and all of them land.

Two ways to reach the branch, like every other branch (``agent.gitstore``):

* local mode: the branch is a ref of the repository itself; nothing is fetched.
* remote mode: a small cache repository ``<git-common-dir>/gitops-agent/memory.git`` holds the
  remote's memory branch only, fetched shallow (depth 1), single-branch and blobless
  (``--filter=blob:none``, where the remote allows it). Reading the experiences then fetches
  only the experience blobs it does not have yet, in one request, and reads them all with one
  ``git cat-file --batch``. Data set blobs are fetched only when a step needs the data.

Retrieval (``agent.retrieval``) runs over question + plan outline + summary + lessons; the
index is cached under ``<git-common-dir>/gitops-agent/memory-index/<memory tip>-<method>``.

Memory must never fail a task: the hooks used by the steps (``planner_memory``,
``record_experience``, ``attach_data``) catch everything and report it as an ``error`` event.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import stat
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.core.errors import AgentError, ConfigError, GitError, PushRetriesExhausted
from agent.git.process import run_git
from agent.git.repo import GitRepo
from agent.memory.retrieval import BM25Index, EmbeddingIndex, Retriever, embed, embed_model_path
from agent.core.state import NodeStatus, TASK_ID_RE, check_task_id, format_validation_error, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from agent.core.runtime import Runtime
    from agent.core.snapshot import Snapshot

MEMORY_BRANCH = "agent/memory"
EXPERIENCES_DIR = "experiences"
DATA_DIR = "data"
EXPERIENCE_SCHEMA = 1
ANSWER_CHARS = 1500
DEFAULT_K = 3
MEMORY_FILE = "memory.json"  # in the planner's step folder: the experiences it was shown
# Off switch: GITOPS_AGENT_MEMORY=0 (or off/false/no). The retrieval method: GITOPS_AGENT_RETRIEVAL.
ENV_SWITCH = "GITOPS_AGENT_MEMORY"
ENV_METHOD = "GITOPS_AGENT_RETRIEVAL"
MAX_DATA_FILE_BYTES = 100 * 1024 * 1024  # GitHub refuses larger files
_DATA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")


# ----------------------------------------------------------------------------- the record


class OutlineItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    title: str
    status: str
    agent: str = ""
    depth: int = 0


class Experience(BaseModel):
    """experiences/<task-id>.json on the memory branch: what one finished task asked, planned,
    found, learned and spent."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_: int = Field(EXPERIENCE_SCHEMA, alias="schema")
    task_id: str
    branch: str
    question: str
    instructions: list[str] = Field(default_factory=list)
    outline: list[OutlineItem] = Field(default_factory=list, description="The final plan: node ids, titles, statuses.")
    outcome: Literal["done", "failed", "budget", "error"]
    summary: str = ""
    answer: str = Field("", description=f"The first {ANSWER_CHARS} characters of the answer.")
    lessons: list[str] = Field(default_factory=list, description="What worked, what failed and why (from the planner).")
    failures: list[str] = Field(default_factory=list, description="Failed nodes and stop reasons, derived by finish.")
    cost_usd: float = 0.0
    tokens: int = 0
    date: datetime
    reused: list[str] = Field(default_factory=list, description="Task ids of past experiences this task cited.")
    parent: str | None = Field(None, description="For a fork: <task-id>@<step> it was forked from.")
    asked_by: str | None = Field(None, description="Who wrote the question (GitHub login), if known.")
    trusted: bool = Field(True, description="Whether they could write to the repository; later planners are told.")

    @property
    def path(self) -> str:
        return experience_path(self.task_id)

    def doc_text(self) -> str:
        """What retrieval indexes: question, plan outline, summary, lessons."""
        parts = [self.question, *self.instructions, " ".join(o.title for o in self.outline), self.summary, *self.lessons]
        return "\n".join(p for p in parts if p)

    def outline_text(self) -> str:
        marks = {s.value: s.mark for s in NodeStatus}
        return "; ".join(f"{marks.get(o.status, '[?]')} {o.id} {o.title}" for o in self.outline)

    def brief(self, score: float | None = None) -> dict[str, Any]:
        """The compact form shown to the planner and recorded in memory.json."""
        d: dict[str, Any] = {
            "task_id": self.task_id, "outcome": self.outcome, "question": self.question[:500],
            "outline": self.outline_text()[:600], "summary": self.summary[:300],
            "lessons": [x[:300] for x in self.lessons[:8]], "failures": [x[:300] for x in self.failures[:4]],
            "date": self.date.date().isoformat(), "cost_usd": self.cost_usd,
            "asked_by": self.asked_by, "trusted": self.trusted,
        }
        if score is not None:
            d["score"] = round(float(score), 4)
        return d


def experience_path(task_id: str) -> str:
    return f"{EXPERIENCES_DIR}/{check_task_id(task_id)}.json"


def dump_experience(exp: Experience) -> bytes:
    return (exp.model_dump_json(by_alias=True, indent=2) + "\n").encode()


def parse_experience(raw: bytes | str, where: str) -> Experience:
    try:
        return Experience.model_validate_json(raw)
    except ValidationError as e:
        raise ConfigError(f"{where}: {format_validation_error(e)}") from None


_TASK_REF = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{2,79}")


def cited_ids(texts: Iterable[str], candidates: Iterable[str]) -> list[str]:
    """The candidate task ids that appear (as whole ids) in any of ``texts``."""
    blob = "\n".join(t for t in texts if t)
    out = []
    for c in candidates:
        if c and re.search(rf"(?<![0-9A-Za-z_-]){re.escape(c)}(?![0-9A-Za-z_-])", blob):
            out.append(c)
    return out


def experience_from_snapshot(snap: "Snapshot", outcome: str, answer: str, reason: str | None, shown: list[str] | None = None) -> Experience:
    """The experience of a finished task, from its branch (the snapshot before the finish commit)."""
    plan = snap.plan
    outline: list[OutlineItem] = []
    failures: list[str] = []
    if plan is not None:
        def visit(n, depth: int) -> None:
            outline.append(OutlineItem(id=n.id, title=n.title, status=plan.status_of(n).value, agent=n.agent, depth=depth))
            for c in n.children:
                visit(c, depth + 1)
        for n in plan.nodes:
            visit(n, 0)
        for n in plan.walk():
            if n.is_leaf and n.status == NodeStatus.failed:
                rec = snap.step_record(n.step, n.id) if n.step is not None else None
                why = (rec.error if rec and rec.error else "") or _first_line(snap.result_of(n.step, n.id) if n.step else "")
                failures.append(f"{n.id} ({n.title}) failed: {why}"[:300])
    if outcome != "done" and reason:
        failures.append(f"task stopped ({outcome}): {reason}"[:300])
    fin = plan.finish if plan else None
    summary = (fin.summary if fin and fin.summary else "") or _first_line(answer)
    lessons = list(getattr(fin, "lessons", None) or []) if fin else []
    shown = list(shown or [])
    texts = [answer, summary, plan.note if plan else "", *lessons]
    parent = getattr(snap.task, "parent", None)
    return Experience(
        task_id=snap.task_id, branch=snap.branch, question=snap.task.question, instructions=list(snap.task.instructions),
        outline=outline, outcome=outcome if outcome in ("done", "failed", "budget", "error") else "error",  # type: ignore[arg-type]
        summary=summary[:300], answer=(answer or "")[:ANSWER_CHARS], lessons=lessons, failures=failures,
        cost_usd=snap.cost_usd, tokens=snap.usage.total, date=utcnow(), reused=cited_ids(texts, shown),
        parent=f"{parent.task_id}@{parent.step}" if parent is not None else None,
        asked_by=snap.task.source.author, trusted=snap.task.source.trusted,
    )


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:300]
    return ""


# ----------------------------------------------------------------------------- search hits


@dataclass
class Hit:
    experience: Experience
    score: float
    rank: int


class MemoryIndex:
    """The experiences at one memory tip and a retriever over them. Experiences are kept as raw
    JSON and parsed on demand, so loading a cached index of 100k experiences stays cheap."""

    def __init__(self, tip: str | None, method: str, raw: list[bytes], retriever: Retriever, build_ms: int = 0, cached: bool = False):
        self.tip = tip
        self.method = method
        self._raw = raw
        self._parsed: dict[int, Experience] = {}
        self.retriever = retriever
        self.build_ms = build_ms
        self.cached = cached

    def __len__(self) -> int:
        return len(self._raw)

    def experience(self, i: int) -> Experience:
        e = self._parsed.get(i)
        if e is None:
            e = self._parsed[i] = Experience.model_validate_json(self._raw[i])
        return e

    def search(self, query: str, k: int = DEFAULT_K, exclude: Iterable[str] = ()) -> list[Hit]:
        exclude = set(exclude)
        hits: list[Hit] = []
        for i, score in self.retriever.search(query, k + len(exclude)):
            e = self.experience(i)
            if e.task_id in exclude:
                continue
            hits.append(Hit(e, score, len(hits) + 1))
            if len(hits) >= k:
                break
        return hits


# ----------------------------------------------------------------------------- git plumbing


class _PartialCache(GitRepo):
    """The remote-mode cache repository: always fetched shallow (depth 1); commits are built
    with ``write-tree --missing-ok`` so blobs that were never fetched (blobless clone) are not
    fetched one by one just to write a tree that refers to them."""

    def is_shallow(self) -> bool:  # noqa: D401
        return True

    def _run(self, args, **kw):  # type: ignore[override]
        if list(args) == ["write-tree"]:
            args = ["write-tree", "--missing-ok"]
        return super()._run(args, **kw)


def _enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def default_method() -> str:
    return Retriever.check_method(os.environ.get(ENV_METHOD, "bm25").strip().lower() or "bm25")


class MemoryStore:
    """The memory branch of one repository (local mode) or of its remote (remote mode)."""

    #: Memory writes never clash on paths, so losing a race only means that other tasks
    #: finished at the same moment: each round is one attempt (``push_retries`` extra ones
    #: inside gitstore), then a jittered wait that grows linearly with the losses (capped),
    #: which spreads a crowd of writers better than gitstore's exponential back-off.
    push_retries = 0
    rounds = 80
    CHUNK = 1000  # files per commit for bulk writes (add_data)

    def __init__(self, git: GitRepo, cache_dir: Path, *, partial: bool = False):
        self.git = git
        self.cache_dir = Path(cache_dir)
        self.partial = partial
        self.problems: list[str] = []  # experience files that did not validate (last load)
        self._lock = threading.Lock()
        self._index: MemoryIndex | None = None

    @classmethod
    def open(cls, git: GitRepo) -> "MemoryStore":
        """The memory of ``git``'s repository: its own refs in local mode, a blobless shallow
        cache of the remote's memory branch in remote mode."""
        cache = git.common_dir / "gitops-agent"
        kw = dict(author_name=git.author_name, author_email=git.author_email, push_retries=cls.push_retries)
        if git.remote is None:
            return cls(GitRepo(git.repo, remote=None, **kw), cache)
        url = git.git("remote", "get-url", git.remote).strip()
        if url and "://" not in url and not re.match(r"^[\w.-]+@[\w.-]+:", url) and not os.path.isabs(url):
            url = str((Path(git.repo) / url).resolve())  # a relative local path
        path = cache / "memory.git"
        _init_cache_repo(path, url)
        return cls(_PartialCache(path, remote="origin", auth_env=git.auth_env, **kw), cache, partial=True)

    # ------------------------------------------------------------- the branch

    def tip(self, fetch: bool = True) -> str | None:
        return self.git.tip(MEMORY_BRANCH, fetch=fetch)

    def ensure(self) -> str:
        """The memory branch's tip, creating the branch (an orphan root commit with an empty
        tree) if it does not exist. Two creating it at once: one wins, both go on."""
        tip = self.tip()
        if tip is not None:
            return tip
        try:
            return self.git.create_branch(MEMORY_BRANCH, None)
        except AgentError as e:
            if "already exists" not in str(e):
                raise
            tip = self.tip()
            if tip is None:
                raise
            return tip

    def commit(self, changes: dict[str, bytes | None], subject: str, trailers: dict[str, str] | None = None,
               body: str = "", modes: dict[str, str] | None = None) -> str:
        """One commit on the memory branch (created if missing), re-applied on the new tip as
        often as it takes while other writers win the race."""
        self.ensure()
        message = subject + ("\n\n" + body if body else "")
        trailers = {"Agent-Role": "memory", **(trailers or {})}
        for attempt in range(self.rounds):
            try:
                return self.git.commit_files(MEMORY_BRANCH, changes, message, trailers, modes=modes)
            except PushRetriesExhausted:
                if attempt == self.rounds - 1:
                    raise
                time.sleep(random.uniform(0.0, min(1.5, 0.15 * (attempt + 1))))
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------- experiences

    def add_experience(self, exp: Experience) -> str:
        return self.commit(
            {exp.path: dump_experience(exp)}, f"memory: {exp.task_id} ({exp.outcome})",
            {"Agent-Task": exp.task_id, "Agent-Outcome": exp.outcome},
        )

    def _ls(self, tip: str, prefix: str) -> list[tuple[str, str, str, str]]:
        """(mode, type, oid, path) of every entry under ``prefix`` at ``tip`` (no blob is read)."""
        out = self.git._run(["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", tip, "--", prefix]).stdout
        rows = []
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, _, name = rec.partition(b"\t")
            mode, kind, oid = meta.decode().split()
            rows.append((mode, kind, oid, name.decode("utf-8", "surrogateescape")))
        return rows

    def experience_files(self, tip: str | None = None) -> dict[str, str]:
        """task id -> blob id of every experience at ``tip`` (default: the current tip)."""
        tip = tip or self.tip()
        if tip is None:
            return {}
        out = {}
        for mode, kind, oid, path in self._ls(tip, EXPERIENCES_DIR):
            name = path[len(EXPERIENCES_DIR) + 1:]
            if kind == "blob" and name.endswith(".json") and "/" not in name and TASK_ID_RE.fullmatch(name[:-5]):
                out[name[:-5]] = oid
        return out

    def _missing(self, tip: str, oids: set[str]) -> list[str]:
        """Which of ``oids`` (blobs under ``tip``) are not in the cache yet (never fetches)."""
        if not self.partial or not oids:
            return []
        out = self.git._run(["rev-list", "--objects", "--missing=print", tip]).stdout.decode()
        return [line[1:] for line in out.splitlines() if line.startswith("?") and line[1:] in oids]

    def _prefetch(self, tip: str, oids: Iterable[str]) -> None:
        """Fetch the missing ones of ``oids`` in one request (remote mode, blobless cache)."""
        missing = self._missing(tip, set(oids))
        if not missing:
            return
        # what git's own lazy fetch runs, for all of them at once (object ids as refspecs)
        self.git._run(
            ["-c", "fetch.negotiationAlgorithm=noop", "fetch", "--quiet", "origin", "--no-tags", "--no-write-fetch-head",
             "--recurse-submodules=no", "--no-auto-maintenance", "--filter=blob:none", "--stdin"],
            input=("\n".join(missing) + "\n").encode(), network=True,
        )

    def _cat(self, oids: list[str]) -> list[bytes]:
        """The contents of blobs ``oids``, in order, from one ``git cat-file --batch``."""
        if not oids:
            return []
        p = self.git._run(["cat-file", "--batch"], input=("\n".join(oids) + "\n").encode(), check=False)
        if p.returncode != 0:
            raise GitError(["cat-file", "--batch"], p.returncode, p.stderr.decode(errors="replace"))
        out, pos, buf = [], 0, p.stdout
        for oid in oids:
            nl = buf.index(b"\n", pos)
            header = buf[pos:nl].split()
            if len(header) != 3:
                raise GitError(["cat-file", "--batch"], 1, f"object {oid} is missing")
            size = int(header[2])
            out.append(buf[nl + 1: nl + 1 + size])
            pos = nl + 1 + size + 1
        return out

    def read_raw(self, tip: str | None = None) -> tuple[str | None, list[tuple[str, str, bytes]]]:
        """(tip, [(task id, blob id, raw JSON)]) of every experience, sorted by task id."""
        tip = tip or self.tip()
        if tip is None:
            return None, []
        files = self.experience_files(tip)
        ids = sorted(files)
        self._prefetch(tip, files.values())
        blobs = self._cat([files[i] for i in ids])
        return tip, [(i, files[i], b) for i, b in zip(ids, blobs)]

    def experiences(self, tip: str | None = None, *, with_blobs: bool = False):
        """Every experience that validates (with its blob id if ``with_blobs``); the others are
        listed in ``self.problems``."""
        _, raw = self.read_raw(tip)
        out, problems = [], []
        for tid, oid, data in raw:
            try:
                e = parse_experience(data, f"{MEMORY_BRANCH}:{experience_path(tid)}")
                out.append((e, oid) if with_blobs else e)
            except ConfigError as e:
                problems.append(str(e))
        self.problems = problems
        return out

    def get(self, task_id: str) -> Experience | None:
        check_task_id(task_id)
        tip = self.tip()
        if tip is None:
            return None
        files = self.experience_files(tip)
        oid = files.get(task_id)
        if oid is None:
            return None
        self._prefetch(tip, [oid])
        return parse_experience(self._cat([oid])[0], f"{MEMORY_BRANCH}:{experience_path(task_id)}")

    # ------------------------------------------------------------- the index

    def index(self, method: str | None = None, tip: str | None = None, rebuild: bool = False) -> MemoryIndex:
        """The retrieval index at the memory tip: from the cache when it was built for this tip,
        else built (and cached)."""
        method = Retriever.check_method(method or default_method())
        tip = tip or self.tip()
        if tip is None:
            return MemoryIndex(None, method, [], Retriever.build([], "bm25"))
        with self._lock:
            if not rebuild and self._index is not None and self._index.tip == tip and self._index.method == method:
                return self._index
        d = self.cache_dir / "memory-index" / f"{tip}-{method}"
        if not rebuild and (d / "done").exists():
            try:
                raw = (d / "experiences.jsonl").read_bytes().splitlines()
                idx = MemoryIndex(tip, method, raw, Retriever.load(d), json.loads((d / "done").read_text()).get("build_ms", 0), cached=True)
                with self._lock:
                    self._index = idx
                return idx
            except Exception:  # noqa: BLE001 - a damaged cache is rebuilt
                shutil.rmtree(d, ignore_errors=True)
        t0 = time.monotonic()
        pairs = self.experiences(tip, with_blobs=True)
        exps = [e for e, _ in pairs]
        texts = [e.doc_text() for e in exps]
        if method == "bm25":
            retriever = Retriever.build(texts, method)
        else:  # embeddings of experiences seen before are reused (keyed by their blob id)
            emb = self._embeddings([oid for _, oid in pairs], texts)
            retriever = Retriever(method, BM25Index.build(texts) if method == "hybrid" else None, emb, len(texts))
        raw = [e.model_dump_json(by_alias=True).encode() for e in exps]
        build_ms = int((time.monotonic() - t0) * 1000)
        idx = MemoryIndex(tip, method, raw, retriever, build_ms)
        try:
            self._save_index(d, idx)
        except OSError:
            pass  # a cache is a cache
        with self._lock:
            self._index = idx
        return idx

    def _embeddings(self, keys: list[str], texts: list[str]) -> EmbeddingIndex:
        """Embeddings of ``texts``, encoding only those whose key (the experience's blob id) is
        not in the cache ``memory-embeddings.npz`` of the same model; the cache is rewritten
        with exactly ``keys``."""
        model = embed_model_path()
        path = self.cache_dir / "memory-embeddings.npz"
        known: dict[str, np.ndarray] = {}
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["model"]) == model:
                    known = dict(zip((str(k) for k in z["keys"]), z["vectors"]))
        except (OSError, KeyError, ValueError):
            pass
        todo = [i for i, k in enumerate(keys) if k not in known]
        if todo:
            for i, v in zip(todo, embed([texts[i] for i in todo], model)):
                known[keys[i]] = v
        vectors = np.stack([known[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, 384), np.float32)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}.npz")
            np.savez(tmp, model=np.array(model), keys=np.array(keys), vectors=vectors)
            os.replace(tmp, path)
        except OSError:
            pass
        return EmbeddingIndex(vectors, model)

    def _save_index(self, d: Path, idx: MemoryIndex) -> None:
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=d.parent))
        try:
            (tmp / "experiences.jsonl").write_bytes(b"\n".join(idx._raw) + (b"\n" if idx._raw else b""))
            idx.retriever.save(tmp)
            (tmp / "done").write_text(json.dumps({"tip": idx.tip, "method": idx.method, "count": len(idx), "build_ms": idx.build_ms}))
            os.rename(tmp, d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (d / "done").exists():
                raise
        _prune(d.parent, keep=4)

    def search(self, query: str, k: int = DEFAULT_K, method: str | None = None, exclude: Iterable[str] = ()) -> list[Hit]:
        return self.index(method).search(query, k, exclude)

    def reindex(self, method: str | None = None) -> MemoryIndex:
        return self.index(method, rebuild=True)

    # ------------------------------------------------------------- data sets

    def add_data(self, src: Path | str, name: str | None = None) -> tuple[str, list[str]]:
        """Commit a file, or a directory's files, under data/<name> on the memory branch.
        Returns (commit, paths written)."""
        src = Path(src)
        if not src.exists():
            raise ConfigError(f"{src} does not exist")
        name = (name or src.resolve().name).strip().strip("/")
        if not _DATA_NAME.fullmatch(name) or any(p in ("..", ".git") for p in name.split("/")):
            raise ConfigError(f"bad data set name {name!r}: use letters, digits, '.', '_', '-' and '/' between parts")
        files: dict[str, bytes | None] = {}
        modes: dict[str, str] = {}
        if src.is_file():
            items = [(src, f"{DATA_DIR}/{name}")]
        else:
            items = []
            for root, dirs, names in os.walk(src):
                dirs[:] = sorted(d for d in dirs if d != ".git")
                for n in sorted(names):
                    p = Path(root) / n
                    if p.is_file() and not p.is_symlink():
                        items.append((p, f"{DATA_DIR}/{name}/{p.relative_to(src).as_posix()}"))
            if not items:
                raise ConfigError(f"{src} holds no files")
        for p, dest in items:
            size = p.stat().st_size
            if size > MAX_DATA_FILE_BYTES:
                raise ConfigError(f"{p} is {size / 1e6:.0f} MB; files over {MAX_DATA_FILE_BYTES // 2**20} MiB cannot be pushed to GitHub")
            files[dest] = p.read_bytes()
            if os.access(p, os.X_OK):
                modes[dest] = "100755"
        # At most CHUNK files per commit: GitRepo.commit_files feeds `git hash-object
        # --stdin-paths` through a pipe without reading its output meanwhile, which deadlocks
        # somewhere past a few thousand files.
        paths = sorted(files)
        sha = ""
        for i in range(0, len(paths), self.CHUNK):
            part = {p: files[p] for p in paths[i:i + self.CHUNK]}
            n = f" ({i // self.CHUNK + 1}/{(len(paths) - 1) // self.CHUNK + 1})" if len(paths) > self.CHUNK else ""
            sha = self.commit(part, f"memory: add data {name}{n}", {"Agent-Data": name}, modes={p: m for p, m in modes.items() if p in part})
        return sha, paths

    def data_files(self, tip: str | None = None) -> list[str]:
        tip = tip or self.tip()
        if tip is None:
            return []
        return [path for mode, kind, oid, path in self._ls(tip, DATA_DIR) if kind == "blob"]

    def materialize_data(self) -> Path | None:
        """The data/ folder of the memory tip as plain read-only files in a local cache directory
        (keyed by the data tree, so new experiences do not copy the data again); None if
        the memory branch has no data."""
        tip = self.tip()
        if tip is None:
            return None
        p = self.git._run(["rev-parse", "--verify", "--quiet", f"{tip}:{DATA_DIR}"], check=False)
        tree = p.stdout.decode().strip()
        if p.returncode != 0 or not tree:
            return None
        dest = self.cache_dir / "memory-data" / tree
        if (dest / ".complete").exists():
            return dest
        entries = [(mode, oid, path) for mode, kind, oid, path in self._ls(tip, DATA_DIR) if kind == "blob" and mode in ("100644", "100755")]
        self._prefetch(tip, {oid for _, oid, _ in entries})
        blobs = self._cat([oid for _, oid, _ in entries])
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
        try:
            for (mode, _oid, path), data in zip(entries, blobs):
                rel = path[len(DATA_DIR) + 1:]
                f = tmp / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
                f.chmod(0o555 if mode == "100755" else 0o444)
            (tmp / ".complete").write_text(tip + "\n")
            (tmp / ".complete").chmod(0o444)
            for root, dirs, _ in os.walk(tmp):
                for d in dirs:
                    os.chmod(Path(root) / d, 0o555)
            os.chmod(tmp, 0o555)
            os.rename(tmp, dest)
        except OSError:
            _rmtree_ro(tmp)
            if not dest.exists():
                raise
        _prune(dest.parent, keep=3, ro=True)
        return dest


def _init_cache_repo(path: Path, url: str) -> None:
    """A bare partial-clone repository for the remote's memory branch (made once, atomically)."""
    if (path / "HEAD").exists():
        cur = run_git(["config", "--get", "remote.origin.url"], git_dir=path, check=False).stdout.decode().strip()
        if cur != url:
            run_git(["config", "remote.origin.url", url], git_dir=path)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-memory-", dir=path.parent))
    try:
        run_git(["init", "-q", "--bare", str(tmp)])
        for args in (
            ["config", "remote.origin.url", url],
            ["config", "remote.origin.promisor", "true"],
            ["config", "remote.origin.partialclonefilter", "blob:none"],
            ["config", "gc.auto", "0"],
            ["config", "maintenance.auto", "false"],
        ):
            run_git(args, git_dir=tmp)
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (path / "HEAD").exists():
            raise


def _rmtree_ro(d: Path) -> None:
    def onerror(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
            func(p)
        except OSError:
            pass

    if d.exists():
        for root, dirs, _ in os.walk(d):
            for x in dirs:
                try:
                    os.chmod(Path(root) / x, 0o755)
                except OSError:
                    pass
        try:
            os.chmod(d, 0o755)
        except OSError:
            pass
        shutil.rmtree(d, onerror=onerror)


def _prune(parent: Path, keep: int, ro: bool = False) -> None:
    """Keep the ``keep`` newest cache entries in ``parent``; older ones are removed (best effort)."""
    try:
        entries = sorted((p for p in parent.iterdir() if not p.name.startswith(".tmp-")), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in entries[keep:]:
        if time.time() - old.stat().st_mtime < 600:  # maybe in use by a running step
            continue
        _rmtree_ro(old) if ro else shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- hooks for the steps

_store_lock = threading.Lock()


def get_memory(rt: "Runtime") -> MemoryStore | None:
    """The runtime's memory store (made on first use); None when memory is switched off or the
    store is not a GitRepo."""
    if not _enabled() or getattr(rt, "memory_store", None) is False:
        return None
    with _store_lock:
        store = getattr(rt, "memory_store", None)
        if store is None:
            if not isinstance(rt.git, GitRepo):
                return None
            store = MemoryStore.open(rt.git)
            rt.memory_store = store  # type: ignore[attr-defined]
        return store


def _report_error(rt: "Runtime", what: str, e: BaseException) -> None:
    detail = str(e) if isinstance(e, AgentError) else f"{type(e).__name__}: {e}"
    rt.reporter.event("error", step="memory", node=None, error=f"{what}: {detail}", trace=traceback.format_exc())


def retrieve(rt: "Runtime", query: str, exclude: Iterable[str] = (), k: int = DEFAULT_K) -> dict[str, Any] | None:
    """The record of a retrieval for the planner: memory tip, method, query and the shown
    experiences (brief form with score); None without memory."""
    store = get_memory(rt)
    if store is None:
        return None
    tip = store.tip()
    if tip is None:
        return None
    method = default_method()
    idx = store.index(method, tip)
    hits = idx.search(query, k, exclude)
    return {
        "schema": 1, "memory_tip": tip, "method": method, "k": k, "query": query[:2000], "experiences": len(idx),
        "shown": [h.experience.brief(h.score) for h in hits],
    }


def planner_memory(rt: "Runtime", snap: "Snapshot") -> tuple[dict[str, Any] | None, bool]:
    """(memory record, new?) for a planner step. The first plan retrieves the top-k experiences
    (a new record, to be committed as memory.json in the step folder); later plan steps reuse
    the recorded ones, so the planner can cite them in its answer and the prompt prefix stays
    the same (cached). Never raises."""
    try:
        recorded = shown_memory(snap)
        if recorded is not None:
            return recorded, False
        if snap.plan is not None:
            return None, False
        query = "\n".join([snap.task.question, *snap.task.instructions])
        return retrieve(rt, query, exclude={snap.task_id}), True
    except Exception as e:  # noqa: BLE001 - memory must not fail the task
        _report_error(rt, "memory retrieval failed", e)
        return None, False


def shown_memory(snap: "Snapshot") -> dict[str, Any] | None:
    """The memory.json of the task's first planner step that has one."""
    for f in snap.files:  # sorted: the earliest step first
        if f.startswith(f"{snap.root}/steps/") and f.endswith(f"-_plan/{MEMORY_FILE}"):
            raw = snap.git.read_file(snap.tip, f)
            if raw:
                try:
                    data = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("shown"), list):
                    return data
    return None


def record_experience(rt: "Runtime", snap: "Snapshot", outcome: str, answer: str, reason: str | None, *, only_if_missing: bool = False) -> str | None:
    """finish: add experiences/<task-id>.json to the memory branch. Returns the memory commit
    (None when off, already there, or failed: a failure is reported, never raised)."""
    try:
        store = get_memory(rt)
        if store is None:
            return None
        if only_if_missing and snap.task_id in store.experience_files():
            return None
        shown = [e.get("task_id") for e in (shown_memory(snap) or {}).get("shown", []) if isinstance(e, dict)]
        exp = experience_from_snapshot(snap, outcome, answer, reason, [s for s in shown if isinstance(s, str)])
        sha = store.add_experience(exp)
        rt.reporter.event("memory", task=snap.task_id, action="experience saved", commit=sha, reused=exp.reused)
        return sha
    except Exception as e:  # noqa: BLE001
        _report_error(rt, "could not save the experience to memory", e)
        return None


def attach_data(rt: "Runtime") -> Path | None:
    """Make the memory's shared data sets visible to the model's code: materialize data/ into
    the local cache, mount it read-only (same path inside the sandbox) and set ``rt.data_dir``.
    Never raises."""
    try:
        store = get_memory(rt)
        if store is None:
            return None
        d = store.materialize_data()
        if d is None:
            return None
        rt.data_dir = str(d)
        return d
    except Exception as e:  # noqa: BLE001
        _report_error(rt, "could not fetch the shared data sets", e)
        return None


__all__ = [
    "DEFAULT_K", "Experience", "Hit", "MEMORY_BRANCH", "MemoryIndex", "MemoryStore", "OutlineItem", "attach_data",
    "cited_ids", "experience_from_snapshot", "experience_path", "get_memory", "planner_memory", "record_experience",
    "retrieve", "shown_memory",
]
