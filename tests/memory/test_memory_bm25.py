"""The pure-Python BM25 of gitops_agent/memory/retrieval.py: its scores against the Lucene formula
worked out here, the top-k order and bound, the on-disk round trip, the rebuild of an old or
damaged index cache, and that BM25 alone never imports numpy or bm25s."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from gitops_agent.memory.retrieval import FORMAT, BM25Index, Retriever, tokenize
from gitops_agent.memory.store import MemoryStore
from tests.memory.helpers import ROOT, experience, make_repo
from tests.memory.test_memory_retrieval import load_set

# five docs, 11 tokens in all (avgdl 2.2), one of them empty
TINY = ["alpha alpha beta", "alpha gamma gamma gamma delta", "beta", "", "delta delta"]
TINY_TF = [{"alpha": 2, "beta": 1}, {"alpha": 1, "gamma": 3, "delta": 1}, {"beta": 1}, {}, {"delta": 2}]


def lucene(term: str, doc: int, k1: float = 1.5, b: float = 0.75) -> float:
    """BM25 (Lucene variant) of ``term`` in TINY[doc], from TINY_TF alone."""
    n = len(TINY_TF)
    dl = [sum(tf.values()) for tf in TINY_TF]
    avgdl = sum(dl) / n
    df = sum(term in tf for tf in TINY_TF)
    tf = TINY_TF[doc].get(term, 0)
    if not tf:
        return 0.0
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl[doc] / avgdl))


def test_scores_are_lucene_bm25_worked_out_by_hand():
    assert [dict((t, toks.count(t)) for t in toks) for toks in map(tokenize, TINY)] == TINY_TF  # the test's premise
    idx = BM25Index.build(TINY)
    assert idx.n_docs == 5
    for query in ("alpha", "beta", "gamma", "delta", "alpha beta", "gamma delta", "alpha beta gamma delta"):
        terms = query.split()
        want = {d: sum(lucene(t, d) for t in terms) for d in range(5)}
        got = dict(idx.search(query, 5))
        assert got == pytest.approx({d: s for d, s in want.items() if s > 0}, rel=1e-12, abs=0), query
    # one figure by hand: alpha in doc 0 (tf 2, df 2, dl 3): ln 2.4 * 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 3 / 2.2))
    assert dict(idx.search("alpha", 1))[0] == pytest.approx(1.1197856, rel=1e-6)
    # other parameters are honoured (b=0: no length normalisation)
    flat = BM25Index.build(TINY, k1=1.2, b=0.0)
    assert dict(flat.search("delta", 5)) == pytest.approx(
        {1: lucene("delta", 1, 1.2, 0.0), 4: lucene("delta", 4, 1.2, 0.0)}, rel=1e-12
    )
    # a word said twice counts twice (as with bm25s); unknown words, stop words and k <= 0 give nothing
    assert dict(idx.search("alpha alpha", 5)) == pytest.approx({d: 2 * s for d, s in idx.search("alpha", 5)}, rel=1e-12)
    assert idx.search("omega", 3) == [] and idx.search("the of", 3) == [] and idx.search("alpha", 0) == []
    assert BM25Index.build([]).search("alpha", 3) == [] and BM25Index.build(["", ""]).search("alpha", 3) == []


def _corpus(filler: int) -> list[str]:
    # 1-4 "order" words decide the score; docs 2 and 5 are identical (a tie), and filler docs
    # that never match make the query touch few docs (the sparse path) when there are many
    docs = ["order region", "order order region", "order order order region", "order", "region", "order order order region"]
    return docs + ["kappa zeta"] * filler


@pytest.mark.parametrize("filler", [0, 200])  # the dense and the sparse accumulation
def test_top_k_is_ordered_bounded_and_ties_go_to_the_lower_doc(filler):
    idx = BM25Index.build(_corpus(filler))
    full = idx.search("order", 100)
    assert [d for d, _ in full] == [2, 5, 3, 1, 0]  # 2 and 5 tie; doc 4 has no "order": not listed
    assert full[0][1] == full[1][1] and all(a[1] > b[1] for a, b in zip(full[1:], full[2:]))
    for k in range(1, 6):
        assert idx.search("order", k) == full[:k], k
    assert idx.search("order", 6) == full and idx.search("order", 0) == [] and idx.search("order", -1) == []
    both = idx.search("order region", 100)  # docs 3 ("order") and 4 ("region") tie too
    assert [d for d, _ in both] == [1, 2, 5, 0, 3, 4] and both[1][1] == both[2][1] and both[4][1] == both[5][1]
    assert idx.search("order region", 5) == both[:5] and idx.search("order region", 2) == both[:2]
    assert Retriever.build(_corpus(filler)).search("order", 2) == full[:2]


def test_the_ranking_is_the_same_on_every_build_and_query():
    exps, queries = load_set()
    texts = [e.doc_text() for e in exps]
    a, b = BM25Index.build(texts), BM25Index.build(list(texts))
    for q in queries:
        ra = a.search(q["query"], 10)
        assert ra == b.search(q["query"], 10) == a.search(q["query"], 10)
        assert all(x[1] > y[1] or (x[1] == y[1] and x[0] < y[0]) for x, y in zip(ra, ra[1:]))


def test_save_and_load_give_the_same_results(tmp_path):
    exps, queries = load_set()
    texts = [e.doc_text() for e in exps]
    r = Retriever.build(texts)
    r.save(tmp_path / "r")
    back = Retriever.load(tmp_path / "r")
    assert back.method == "bm25" and back.n_docs == len(texts) and back.bm25 is not None
    for q in queries:
        assert back.search(q["query"], 10) == r.search(q["query"], 10)  # exactly: scores are saved as float64
    for texts in ([], ["", ""], TINY):
        BM25Index.build(texts).save(tmp_path / "small")
        one = BM25Index.load(tmp_path / "small", len(texts))
        assert one.n_docs == len(texts) and one.search("alpha beta", 5) == BM25Index.build(texts).search("alpha beta", 5)
    for n in (4, 6):  # saved for another number of docs
        with pytest.raises(ValueError):
            BM25Index.load(tmp_path / "small", n)


def test_a_hybrid_retriever_round_trips_with_its_bm25_half(tmp_path):
    np = pytest.importorskip("numpy")  # the embed extra's; no model needed for saved vectors
    from gitops_agent.memory.retrieval import EmbeddingIndex

    bm25 = BM25Index.build(TINY)
    Retriever("hybrid", bm25, EmbeddingIndex(np.eye(5, 384, dtype=np.float32), "some-model"), 5).save(tmp_path / "h")
    back = Retriever.load(tmp_path / "h")
    assert back.method == "hybrid" and back.bm25 is not None and back.emb is not None and back.emb.model_path == "some-model"
    assert back.bm25.search("alpha beta", 5) == bm25.search("alpha beta", 5) and back.emb.vectors.shape == (5, 384)


def _cache(store: MemoryStore) -> Path:
    return store.cache_dir / "memory-index" / f"{store.tip()}-bm25"


def _bm25s_era(d: Path) -> None:
    """Make ``d`` look like a cache written by the bm25s version (format 1)."""
    meta = json.loads((d / "retriever.json").read_text())
    (d / "retriever.json").write_text(json.dumps({"method": meta["method"], "n_docs": meta["n_docs"]}))
    for f in (d / "bm25").iterdir():
        f.unlink()
    for name in ("params.index.json", "vocab.index.json", "indices.csc.index.npy", "data.csc.index.npy", "indptr.csc.index.npy"):
        (d / "bm25" / name).write_bytes(b"\x93NUMPY junk" if name.endswith(".npy") else b"{}")


def _retag(d: Path, name: str, fmt: int) -> None:
    meta = json.loads((d / name).read_text())
    (d / name).write_text(json.dumps({**meta, "format": fmt}))


DAMAGE = {
    "bm25s-era cache": _bm25s_era,
    "retriever.json of format 1": lambda d: _retag(d, "retriever.json", 1),
    "bm25.json of format 1": lambda d: _retag(d / "bm25", "bm25.json", 1),
    "short postings": lambda d: (d / "bm25" / "postings.bin").write_bytes((d / "bm25" / "postings.bin").read_bytes()[:-8]),
    "long postings": lambda d: (d / "bm25" / "postings.bin").write_bytes((d / "bm25" / "postings.bin").read_bytes() + b"\0" * 12),
    "garbled bm25.json": lambda d: (d / "bm25" / "bm25.json").write_text('{"format": 2, "terms": ['),
    "no bm25 dir": lambda d: [f.unlink() for f in (d / "bm25").iterdir()],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_an_old_or_damaged_index_cache_is_rebuilt(tmp_path, damage):
    from gitops_agent.git.repo import GitRepo

    store = MemoryStore.open(GitRepo(make_repo(tmp_path)))
    for i, q in enumerate(["average order value per region", "flaky CI builds on Mondays", "churn of monthly subscribers"]):
        store.add_experience(experience(f"{i}-t", q))
    store.index()
    d = _cache(store)
    assert MemoryStore.open(store.git).index().cached  # the cache as written is used
    DAMAGE[damage](d)
    idx = MemoryStore.open(store.git).index()
    assert not idx.cached, damage  # not loaded, and no crash: rebuilt
    assert idx.search("which CI builds are flaky", 1)[0].experience.task_id == "1-t"
    assert json.loads((d / "retriever.json").read_text())["format"] == FORMAT  # and saved anew
    assert MemoryStore.open(store.git).index().cached


def test_pyproject_needs_neither_numpy_nor_bm25s_but_the_embed_extra_has_numpy():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in project["dependencies"]]
    assert "numpy" not in names and "bm25s" not in names
    assert any(d.startswith("numpy") for d in project["optional-dependencies"]["embed"])


BM25_ONLY = """
import sys
from pathlib import Path
import gitops_agent.memory.index
from gitops_agent.git.repo import GitRepo
from gitops_agent.memory.retrieval import Retriever
from gitops_agent.memory.store import MemoryStore

r = Retriever.build(["average order value per region", "flaky CI builds"], "bm25")
assert r.search("order value", 3)[0][0] == 0
r.save(Path(sys.argv[2]))
assert Retriever.load(Path(sys.argv[2])).search("order value", 3) == r.search("order value", 3)
store = MemoryStore.open(GitRepo(Path(sys.argv[1])))
assert store.index().cached and store.search("CI builds", 1)[0].experience.task_id == "1-t"
assert not store.reindex().cached and store.search("order value", 1)[0].experience.task_id == "0-t"
print(sorted(m for m in sys.modules if m.split(".")[0] in ("numpy", "bm25s")))
"""


def test_bm25_alone_never_imports_numpy_or_bm25s(tmp_path):
    from gitops_agent.git.repo import GitRepo

    repo = make_repo(tmp_path)
    store = MemoryStore.open(GitRepo(repo))
    for i, q in enumerate(["average order value per region", "flaky CI builds on Mondays"]):
        store.add_experience(experience(f"{i}-t", q))
    store.index()  # cached here: the child loads it, then rebuilds it
    p = subprocess.run(
        [sys.executable, "-c", BM25_ONLY, str(repo), str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_a_planted_huge_experience_is_indexed_only_up_to_a_cap():
    """Experiences come from earlier tasks (their models, maybe injected ones): a megabyte of unique
    words in a summary must not make every later lookup slow; what is indexed is capped."""
    from gitops_agent.memory.experience import DOC_TEXT_MAX

    words = " ".join(f"w{i:07d}" for i in range(120_000))  # ~1 MB of unique tokens
    e = experience("1-big", "average order value", summary=words)
    assert len(e.doc_text()) == DOC_TEXT_MAX and e.doc_text().startswith("average order value")
    idx = BM25Index.build([e.doc_text(), "average order value per region"])
    assert len(idx._postings) < 5_000 and idx.search("average order value", 2)[0][0] in (0, 1)
