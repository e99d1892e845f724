"""Retrieval over the experiences at one memory tip: the index, cached per tip and method."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from gitops_agent.memory.retrieval import EmbeddingIndex, Retriever
    from gitops_agent.memory.store import MemoryStore

# gitops_agent.memory.retrieval (tokenizer, BM25, embeddings) is imported where a search or an index
# build needs it: the execute and finish steps, which only read and write experiences, never load it

from gitops_agent.memory.data import _prune
from gitops_agent.memory.experience import DEFAULT_K, ENV_METHOD, ENV_SWITCH, Experience

# ----------------------------------------------------------------------------- search hits


@dataclass
class Hit:
    experience: Experience
    score: float
    rank: int


class MemoryIndex:
    """The experiences at one memory tip and a retriever over them. Experiences are kept as raw
    JSON and parsed on demand, so loading a cached index of 100k experiences stays cheap."""

    def __init__(
        self, tip: str | None, method: str, raw: list[bytes], retriever: Retriever, build_ms: int = 0, cached: bool = False
    ):
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


def _enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


def default_method() -> str:
    from gitops_agent.memory.retrieval import Retriever

    return Retriever.check_method(os.environ.get(ENV_METHOD, "bm25").strip().lower() or "bm25")


class IndexCache:
    """Part of ``MemoryStore`` (``self.m``): the retrieval index of its tip, built once and cached under
    ``<git-common-dir>/gitops-agent/memory-index/<memory tip>-<method>``."""

    def __init__(self, m: "MemoryStore") -> None:
        self.m = m

    # ------------------------------------------------------------- the index

    def index(self, method: str | None = None, tip: str | None = None, rebuild: bool = False) -> MemoryIndex:
        """The retrieval index at the memory tip: from the cache when it was built for this tip,
        else built (and cached)."""
        from gitops_agent.memory.retrieval import BM25Index, Retriever

        method = Retriever.check_method(method or default_method())
        tip = tip or self.m.tip()
        if tip is None:
            return MemoryIndex(None, method, [], Retriever.build([], "bm25"))
        with self.m._lock:
            if not rebuild and self.m._index is not None and self.m._index.tip == tip and self.m._index.method == method:
                return self.m._index
        d = self.m.cache_dir / "memory-index" / f"{tip}-{method}"
        if not rebuild and (d / "done").exists():
            try:
                raw = (d / "experiences.jsonl").read_bytes().splitlines()
                idx = MemoryIndex(
                    tip, method, raw, Retriever.load(d), json.loads((d / "done").read_text()).get("build_ms", 0), cached=True
                )
                with self.m._lock:
                    self.m._index = idx
                return idx
            except Exception:  # noqa: BLE001 - a damaged cache, or one of another format (an older
                # version's bm25s files: Retriever.load checks the version), is rebuilt
                shutil.rmtree(d, ignore_errors=True)
        t0 = time.monotonic()
        pairs = self.m.experiences(tip, with_blobs=True)
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
        with self.m._lock:
            self.m._index = idx
        return idx

    def _embeddings(self, keys: list[str], texts: list[str]) -> EmbeddingIndex:
        """Embeddings of ``texts``, encoding only those whose key (the experience's blob id) is
        not in the cache ``memory-embeddings.npz`` of the same model; the cache is rewritten
        with exactly ``keys``."""
        import numpy as np  # only with embeddings: a step that never embeds does not pay for numpy

        from gitops_agent.memory.retrieval import EmbeddingIndex, embed, embed_model_path

        model = embed_model_path()
        path = self.m.cache_dir / "memory-embeddings.npz"
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
            self.m.cache_dir.mkdir(parents=True, exist_ok=True)
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
            (tmp / "done").write_text(
                json.dumps({"tip": idx.tip, "method": idx.method, "count": len(idx), "build_ms": idx.build_ms})
            )
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
