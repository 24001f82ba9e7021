#!/usr/bin/env python
"""Search at scale: kb's `Searcher.search` against the floor it sits on, at 100k and 1M chunks.

    nice -n 10 python benchmarks/bench_search.py [--sizes 100000,1000000] [--queries 50] [--json PATH]

The KBs are built once in kb's own file format (real schema, vec0 index, FTS5 index; synthetic text
and random unit vectors) and cached under ~/.cache/kb/bench/search-N.kb; a half-built file is never
reused (it is written under a .part name and renamed when complete).

Per size it prints p50/p95 for: the floor (a NumPy float32 matrix-vector scan of the same vectors,
held in memory), sqlite-vec's vec0 KNN alone, FTS5 alone (kb's OR query), kb's Searcher as a
one-shot process uses it (vec0 + FTS5) and as a long-lived one does (resident vectors), each kb
figure as a ratio to the floor; recall@10 of kb's vector list against exact search; whether kb's
fused hits equal those of the plain path; peak RSS and file size; the load average before and after.
Levers measured beside it: PRAGMA mmap_size for vec0, FTS5 `ORDER BY rank`, binary-quantised
vectors with exact rescoring, and the learner copy's matrix load.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from kb import KB  # noqa: E402
from kb.search import Searcher, fts_query, keyword_ranks, query_words  # noqa: E402
from kb.vectors import NumpyScan, VecIndex, to_blob  # noqa: E402

DIM = 384
K = 10
POOL = 50  # Searcher's candidate depth
CACHE = Path.home() / ".cache" / "kb" / "bench"
MODEL = "bench/random"
BUILD_BATCH = 10_000
now = time.perf_counter


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- synthetic text: real words at the head of a Zipf distribution, made-up words in its tail --------


@functools.cache
def vocabulary(size: int = 30_000) -> np.ndarray:
    """`size` distinct words, most frequent first: the sample course's words by frequency, then
    pronounceable made-up ones (a course has a few thousand words, a million chunks many more)."""
    import re
    from collections import Counter

    counts: Counter[str] = Counter()
    for path in sorted((ROOT / "corpora" / "hydrology").rglob("*")):
        if path.suffix in (".md", ".html"):
            text = re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8"))
            counts.update(w.lower() for w in re.findall(r"[A-Za-z]{2,}", text))
    words = [w for w, _ in counts.most_common()]
    seen = set(words)
    rng = np.random.default_rng(7)
    onsets = "b c d f g h j k l m n p r s t v w z br cl dr fl gr pl pr st tr ch sh th".split()
    vowels = "a e i o u ai ea ee ie oa ou".split()
    codas = ["", "n", "r", "s", "t", "l", "m", "nd", "st", "rk", "ng"]
    syllables = [o + v + c for o in onsets for v in vowels for c in codas]
    while len(words) < size:
        picks = rng.integers(0, len(syllables), (size, 3))
        for row, parts in zip(picks, rng.integers(2, 4, size)):
            w = "".join(syllables[i] for i in row[:parts])
            if w not in seen:
                seen.add(w)
                words.append(w)
    return np.array(words[:size], dtype=object)


def zipf_weights(size: int, s: float = 1.05) -> np.ndarray:
    w = 1.0 / np.arange(1, size + 1) ** s
    return w / w.sum()


def chunk_texts(rng: np.random.Generator, vocab: np.ndarray, p: np.ndarray, n: int) -> list[str]:
    lengths = rng.integers(40, 121, n)  # 40-120 words: ~250-800 characters, as kb's chunks run
    ids = rng.choice(len(vocab), size=int(lengths.sum()), p=p)
    words = vocab[ids]
    out, at = [], 0
    for length in lengths:
        out.append(" ".join(words[at : at + length]))
        at += length
    return out


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.standard_normal((n, DIM), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m


# -- the KB file ------------------------------------------------------------------------------------


def kb_path(n: int) -> Path:
    return CACHE / f"search-{n}.kb"


def build(n: int) -> Path:
    """The cached n-chunk KB, built (once) in kb's format: 100 sources of n/100 chunks each."""
    path = kb_path(n)
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    for p in (part, Path(f"{part}-wal"), Path(f"{part}-shm")):
        p.unlink(missing_ok=True)
    log(f"building {path} ({n:,} chunks); load {load()}")
    t0 = now()
    rng = np.random.default_rng(n)
    vocab = vocabulary()
    p = zipf_weights(len(vocab))
    kb = KB.open(part, create=True)
    try:
        kb.bind_model(MODEL, DIM, True, "vec", {"max_chars": 900, "overlap_chars": 150})
        index = kb.index()
        assert isinstance(index, VecIndex), index
        conn = kb.conn
        sources = 100
        per_source = max(1, n // sources)
        next_id = 1
        for s in range(sources):
            count = per_source if s < sources - 1 else n - per_source * (sources - 1)
            conn.execute("BEGIN")
            cur = conn.execute(
                "INSERT INTO sources(uri, kind, title, content_hash, size, ingested_at, status, metadata) "
                "VALUES (?, 'text', ?, ?, 0, '2026-01-01T00:00:00+00:00', 'ok', '{}')",
                (f"bench://source-{s}", f"Synthetic source {s}", f"hash-{s}"),
            )
            source_id = cur.lastrowid
            for start in range(0, count, BUILD_BATCH):
                size = min(BUILD_BATCH, count - start)
                ids = list(range(next_id, next_id + size))
                texts = chunk_texts(rng, vocab, p, size)
                vectors = unit_rows(rng, size)
                conn.executemany(
                    "INSERT INTO chunks(id, source_id, ordinal, text, heading) VALUES (?, ?, ?, ?, ?)",
                    [
                        (cid, source_id, start + j, texts[j], f"Part {s} > Section {(start + j) // 20}")
                        for j, cid in enumerate(ids)
                    ],
                )
                conn.executemany(
                    "INSERT INTO embeddings(chunk_id, vector) VALUES (?, ?)",
                    [(cid, to_blob(v)) for cid, v in zip(ids, vectors)],
                )
                index.add(ids, vectors)
                conn.execute(
                    "INSERT INTO chunks_fts(rowid, text, heading) SELECT id, text, heading FROM chunks "
                    "WHERE id BETWEEN ? AND ?",
                    (ids[0], ids[-1]),
                )
                next_id += size
            conn.execute("COMMIT")
            if s % 10 == 9:
                log(f"    {next_id - 1:,} chunks in {now() - t0:.0f} s")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        kb.close()
    part.rename(path)
    for suffix in ("-wal", "-shm"):
        Path(f"{part}{suffix}").unlink(missing_ok=True)
    log(f"    built in {now() - t0:.0f} s, {path.stat().st_size / 2**20:,.0f} MiB")
    return path


# -- queries ----------------------------------------------------------------------------------------


def make_queries(n: int, count: int) -> list[tuple[str, np.ndarray]]:
    """Question-like texts (a few content words among stopwords) with random unit query vectors."""
    rng = np.random.default_rng(1000 + n)
    vocab = vocabulary()
    p = zipf_weights(len(vocab))
    frames = ["what is the {} of {}", "how does {} affect {} and {}", "why {} {} in {}", "{} {} {} {}"]
    out = []
    for i in range(count):
        frame = frames[i % len(frames)]
        words = vocab[rng.choice(len(vocab), size=frame.count("{}"), p=p)]
        out.append((frame.format(*words), unit_rows(rng, 1)[0]))
    return out


class FixedEmbedder:
    """The queries' vectors, looked up by text: the benchmark times search, not a model."""

    model_id = MODEL
    dimension = DIM

    def __init__(self, queries: list[tuple[str, np.ndarray]]):
        self.vectors = {text: vector for text, vector in queries}

    def embed_query(self, text: str) -> np.ndarray:
        return self.vectors[text]

    def embed(self, texts: list[str]) -> list[np.ndarray]:
        return [self.vectors[t] for t in texts]


# -- measuring --------------------------------------------------------------------------------------


def latencies(fn: Callable[[Any], Any], items: list[Any], warm: int = 2) -> list[tuple[float, float]]:
    """(wall, CPU) milliseconds per call. On a shared machine the wall time mostly measures the wait
    for a core; this thread's CPU time (one BLAS thread, SQLite in the calling thread) is the work."""
    for item in items[:warm]:
        fn(item)
    gc.collect()
    out = []
    for item in items:
        t0, c0 = now(), time.thread_time()
        fn(item)
        out.append(((now() - t0) * 1000, (time.thread_time() - c0) * 1000))
    return out


def summary(lat: list[tuple[float, float]]) -> dict[str, float]:
    wall = sorted(w for w, _ in lat)
    cpu = sorted(c for _, c in lat)
    at95 = min(len(wall) - 1, int(0.95 * len(wall)))
    return {
        "p50_ms": statistics.median(wall),
        "p95_ms": wall[at95],
        "cpu_p50_ms": statistics.median(cpu),
        "cpu_p95_ms": cpu[at95],
    }


def exact(matrix: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[tuple[int, float]]:
    d = 1.0 - matrix @ q
    top = np.argpartition(d, k - 1)[:k]
    top = top[np.lexsort((ids[top], d[top]))]
    return [(int(ids[i]), float(d[i])) for i in top]


def recall(got: list[list[int]], truth: list[list[int]]) -> float:
    return sum(len(set(g[:K]) & set(t[:K])) for g, t in zip(got, truth)) / (K * len(truth))


def binary_lever(matrix: np.ndarray, ids: np.ndarray, queries: np.ndarray, truth: list[list[int]]) -> dict[str, Any]:
    """Sign bits (48 bytes a vector), Hamming distance by popcount, exact float32 rescoring."""
    bits = np.packbits(matrix > 0, axis=1).view(np.uint64)
    out: dict[str, Any] = {"bytes_per_vector": bits.shape[1] * 8}
    for rescore in (200, 2000, 20000):
        rescore = min(rescore, len(ids))

        def one(q: np.ndarray) -> list[int]:
            qb = np.packbits(q > 0).view(np.uint64)
            ham = np.bitwise_count(bits ^ qb).sum(axis=1, dtype=np.uint16)
            pool = np.argpartition(ham, rescore - 1)[:rescore]
            d = 1.0 - matrix[pool] @ q
            best = pool[np.argsort(d, kind="stable")[:K]]
            return [int(ids[i]) for i in best]

        got = [one(q) for q in queries]
        out[f"rescore_{rescore}"] = {**summary(latencies(one, list(queries))), "recall_at_10": recall(got, truth)}
    return out


def bench_size(n: int, count: int) -> dict[str, Any]:
    path = build(n)
    queries = make_queries(n, count)
    texts = [t for t, _ in queries]
    qvecs = np.stack([v for _, v in queries])
    res: dict[str, Any] = {
        "chunks": n,
        "queries": count,
        "file_mib": path.stat().st_size / 2**20,
        "load_before": load(),
    }
    log(f"\n== {n:,} chunks ({res['file_mib']:,.0f} MiB), {count} queries; load {load()}")

    with KB.open(path, readonly=True) as kb:
        # The learner copy's path and the floor's input: every vector read from the file once.
        t0 = now()
        scan = NumpyScan(kb.conn, DIM)
        ids, matrix = scan._matrix()
        res["matrix_load_s"] = now() - t0
        res["rss_after_matrix_mib"] = peak_rss_mib()
        truth_pairs = [exact(matrix, ids, q, K) for q in qvecs]
        truth = [[cid for cid, _ in t] for t in truth_pairs]
        res["numpy"] = summary(latencies(lambda q: exact(matrix, ids, q, K), list(qvecs)))
        floor, cpu_floor = res["numpy"]["p50_ms"], res["numpy"]["cpu_p50_ms"]

        index = kb.index()
        slow = texts[: len(texts) if n < 1_000_000 else 10]  # vec0 and full FTS5 at 1M: fewer queries
        vec_lat = latencies(lambda q: index.search(q, POOL), list(qvecs[: len(slow)]))
        vec_got = [[cid for cid, _ in index.search(q, K)] for q in qvecs[: len(slow)]]
        res["vec0"] = {**summary(vec_lat), "recall_at_10": recall(vec_got, truth[: len(slow)])}
        res["fts5"] = summary(latencies(lambda t: keyword_ranks(kb, t, POOL), slow))
        log(json.dumps(res, default=str))
        res["fts5"]["matched_rows_p50"] = statistics.median(
            kb.conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (fts_query(t),)).fetchone()[0]
            for t in texts[:10]
        )

        embedder = FixedEmbedder(queries)
        before = Searcher(kb, embedder)
        before.counts = None  # the search of issue 18's measurements: vec0 and every word
        one_shot = Searcher(kb, embedder)  # vec0, common words left out
        resident = Searcher(kb, embedder, resident=True)  # vectors in memory, common words left out
        for name, searcher, items in (
            ("kb_before", before, slow),
            ("kb_one_shot", one_shot, slow),
            ("kb_resident", resident, texts),
        ):
            lat = latencies(lambda t, s=searcher: s.search(t, K), items)
            stats = summary(lat)
            res[name] = {
                **stats,
                "over_floor_p50": stats["p50_ms"] / floor,
                "over_floor_cpu_p50": stats["cpu_p50_ms"] / cpu_floor,
                "queries": len(items),
            }
        near = [[cid for cid, _ in resident._nearest(q, K)] for q in qvecs]
        res["kb_resident"]["recall_at_10"] = recall(near, truth)
        counts = resident.counts
        res["fts5_pruned"] = summary(latencies(lambda t: keyword_ranks(kb, t, POOL, counts), texts))

        def hit_ids(searcher: Searcher, t: str) -> list[int]:
            return [h.chunk_id for h in searcher.search(t, K)]

        res["kb_resident"]["same_hits_as_one_shot"] = sum(
            hit_ids(one_shot, t) == hit_ids(resident, t) for t in slow
        ) / len(slow)
        # Leaving common words out changes the keyword list: how much of the answer it changes.
        full = [keyword_ranks(kb, t, POOL) for t in slow]
        pruned = [keyword_ranks(kb, t, POOL, counts) for t in slow]
        res["pruning"] = {
            "keyword_top10_overlap": sum(
                len(set(a[:K]) & set(b[:K])) / max(1, min(K, len(a))) for a, b in zip(full, pruned)
            )
            / len(slow),
            "hits_top10_overlap": sum(len(set(hit_ids(before, t)) & set(hit_ids(one_shot, t))) / K for t in slow)
            / len(slow),
            "queries_with_a_word_left_out": sum(counts.prune(query_words(t)) != query_words(t) for t in texts)
            / len(texts),
        }
        res["rss_peak_mib"] = peak_rss_mib()
        log(json.dumps(res, default=str))  # so far: a run cut short still leaves its figures

        # Levers.
        res["levers"] = {}
        conn = kb.conn
        conn.execute("PRAGMA mmap_size = 0")
        no_mmap = summary(latencies(lambda q: index.search(q, POOL), list(qvecs[:10])))
        conn.execute(f"PRAGMA mmap_size = {1 << 40}")
        with_mmap = summary(latencies(lambda q: index.search(q, POOL), list(qvecs[:10])))
        res["levers"]["vec0_mmap"] = {"off": no_mmap, "on": with_mmap}
        rank_sql = (
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? AND rank MATCH 'bm25(1.0, 0.5)' "
            "ORDER BY rank LIMIT ?"
        )
        res["levers"]["fts5_order_by_rank"] = summary(
            latencies(lambda t: conn.execute(rank_sql, (fts_query(t), POOL)).fetchall(), slow)
        )
        res["levers"]["binary_rescored"] = binary_lever(matrix, ids, qvecs, truth)
    res["load_after"] = load()
    return res


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'chunks':>9} {'file MiB':>8} | {'numpy':>13} | {'vec0':>13} | {'fts5':>13} | "
        f"{'kb before':>17} | {'kb one-shot':>17} | {'kb resident':>17} | recall@10 | RSS MiB | load",
        "   (CPU ms: p50/p95)           |  p50    p95   |  p50    p95   |  p50    p95   | "
        " p50   p95  x floor |  p50   p95  x floor |  p50   p95  x floor |           |         |",
    ]
    for r in results:

        def pp(d: dict[str, float]) -> str:
            return f"{d['cpu_p50_ms']:6.1f} {d['cpu_p95_ms']:6.1f}"

        lines.append(
            f"{r['chunks']:>9,} {r['file_mib']:>8,.0f} | {pp(r['numpy'])} | {pp(r['vec0'])} | {pp(r['fts5'])} | "
            f"{pp(r['kb_before'])} {r['kb_before']['over_floor_cpu_p50']:4.1f} | "
            f"{pp(r['kb_one_shot'])} {r['kb_one_shot']['over_floor_cpu_p50']:4.1f} | "
            f"{pp(r['kb_resident'])} {r['kb_resident']['over_floor_cpu_p50']:4.1f} | "
            f"{r['kb_resident']['recall_at_10']:9.3f} | {r['rss_peak_mib']:7,.0f} | {r['load_before']} -> {r['load_after']}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    # One BLAS thread, as kb serve runs: on a shared 2-core machine more threads spin-wait (issue 18).
    threadpool_limits(1, user_api="blas")
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.build_only:
        for n in sizes:
            build(n)
        return
    results = [bench_size(n, args.queries) for n in sizes]
    print(table(results))
    print(json.dumps(results, indent=1, default=str))
    try:
        from bench_fusion import fusion_table  # issue 18 item 1 (another branch); joined here when present
    except ImportError:
        pass
    else:
        print(fusion_table())
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
