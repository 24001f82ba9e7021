"""Hybrid search on real KB files: FTS5 escaping, both vector backends, reindex, model refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kb import KB, Ingester, KBError, ModelMismatch, Searcher, fts_query
from kb.vectors import NumpyScan
from tests.helpers import COURSE, TEST_PLUGINS, kb_cli

HOSTILE_QUERIES = [
    '"',
    '""',
    "*",
    "a*",
    "NEAR(a b)",
    "text:rain",
    "heading : gauge",
    "^rain",
    "rain AND OR NOT",
    "(rain",
    "rain)",
    "-rain",
    "+rain",
    'rain"gauge',
    "{rain}",
    "rain'; DROP TABLE chunks; --",
    "\u2603 \U0001f327 pluie",
    "\x00rain",
    "NOT",
    "OR",
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
def test_fts_escaping(course_db, query):
    with KB.open(course_db) as kb:
        hits = Searcher(kb).search(query, k=3)
        assert len(hits) <= 3
        assert kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0


def test_fts_query_quotes_every_word():
    assert fts_query('rain AND "gauge" *') == '"rain" OR "gauge"'
    assert fts_query("what is the") == '"what" OR "is" OR "the"'  # only stopwords: keep them
    assert fts_query("?!* ") is None
    assert fts_query('a"b') == '"b"'  # "a" is a stopword, the quote is dropped


def test_empty_and_huge_queries_are_refused(course_db):
    with KB.open(course_db) as kb:
        searcher = Searcher(kb)
        with pytest.raises(KBError, match="empty"):
            searcher.search("   ")
        with pytest.raises(KBError, match="too long"):
            searcher.search("rain " * 5000)


def test_keyword_and_vector_ranks_are_fused(course_db):
    with KB.open(course_db) as kb:
        hits = Searcher(kb).search("Darcy's law hydraulic conductivity", k=5)
    assert hits[0].locator.page == 5
    assert hits[0].bm25_rank is not None and hits[0].vector_rank is not None
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


def test_vss_backend_and_reindex_agree_with_vec(tmp_path, hash_embedder):
    results = {}
    for backend in ("vec", "vss"):
        db = tmp_path / f"{backend}.db"
        with KB.open(db, create=True) as kb:
            Ingester(kb, embedder=hash_embedder, vector_backend=backend).run([str(COURSE)])
        with KB.open(db) as kb:
            assert kb.meta()["vector_backend"] == backend
            assert type(kb.index()).__name__ == {"vec": "VecIndex", "vss": "VssIndex"}[backend]
            vector = kb.conn.execute("SELECT vector FROM embeddings LIMIT 1 OFFSET 7").fetchone()[0]
            query = np.frombuffer(vector, dtype="<f4")
            results[backend] = kb.index().search(query, 5)
            results[backend + "-numpy"] = NumpyScan(kb.conn, 64).search(query, 5)
    for name in ("vec", "vss"):
        ids = [cid for cid, _ in results[name]]
        assert ids[0] == [cid for cid, _ in results[name + "-numpy"]][0]
        np.testing.assert_allclose([d for _, d in results[name]], [d for _, d in results[name + "-numpy"]], atol=1e-4)
    # Switch the vec file to vss and back: the index is rebuilt from the stored embeddings.
    db = tmp_path / "vec.db"
    with KB.open(db) as kb:
        before = Searcher(kb).search("rain shadow orographic", k=5)
        assert kb.reindex("vss") == kb.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        names = {r[0] for r in kb.conn.execute("SELECT name FROM sqlite_master")}
        assert "chunks_vss" in names and "chunks_vec" not in names
    with KB.open(db) as kb:
        assert kb.meta()["vector_backend"] == "vss"
        after = Searcher(kb).search("rain shadow orographic", k=5)
    assert [h.chunk_id for h in after] == [h.chunk_id for h in before]
    proc = kb_cli("reindex", str(db), "--vector-backend", "vec", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0 and "Rebuilt the vec index" in proc.stdout


def test_vss_replace_source_in_one_transaction(tmp_path, course, hash_embedder):
    db = tmp_path / "kb.db"
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=hash_embedder, vector_backend="vss").run([str(course)])
    handout = course / "field-guide-measuring-rainfall.md"
    handout.write_text("# Replaced\n\nThe handout now only talks about hailstones and graupel.\n")
    with KB.open(db, create=True) as kb:
        Ingester(kb).run([str(course)])
        count = kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        query = np.frombuffer(
            kb.conn.execute(
                "SELECT vector FROM embeddings JOIN chunks ON chunks.id = chunk_id WHERE text LIKE '%graupel%'"
            ).fetchone()[0],
            dtype="<f4",
        )
        nearest = kb.index().search(query, count + 10)
        live = {r[0] for r in kb.conn.execute("SELECT id FROM chunks")}
        # Every indexed vector belongs to a live chunk: old rows were removed from vss0 too.
        assert {cid for cid, _ in nearest} == live


def test_model_mismatch_is_refused(course_db):
    with KB.open(course_db, create=True) as kb:
        with pytest.raises(ModelMismatch) as err:
            Ingester(kb, embedder="test/other-hash-embedder")
    message = str(err.value)
    assert "test/hash-embedder" in message and "test/other-hash-embedder" in message
    proc = kb_cli("ingest", str(course_db), str(COURSE), "--embedder", "other-hash", env_extra=TEST_PLUGINS)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "test/hash-embedder" in proc.stderr and "test/other-hash-embedder" in proc.stderr


def test_search_refuses_a_model_that_is_not_installed(course_db):
    # Without the test plugin, the KB's recorded model is unknown to this kb.
    proc = kb_cli("search", str(course_db), "rain")
    assert proc.returncode == 1
    assert "test/hash-embedder" in proc.stderr and "not installed" in proc.stderr


def test_search_json_contract(course_db):
    proc = kb_cli(
        "search",
        str(course_db),
        "tipping bucket gauge",
        "-k",
        "4",
        "--json",
        env_extra=TEST_PLUGINS,
    )
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert len(hits) == 4
    for i, hit in enumerate(hits, start=1):
        assert set(hit) == {
            "rank",
            "chunk_id",
            "score",
            "text",
            "source",
            "page",
            "slide",
            "start_s",
            "end_s",
            "heading",
            "link",
        }
        assert hit["rank"] == i
        assert set(hit["source"]) == {"uri", "title", "kind"}
    assert hits[0]["heading"].endswith("Tipping-bucket gauge") or "tipping" in hits[0]["text"].lower()


def test_vss_vectors_that_look_like_its_header_are_stored_whole(tmp_path):
    """sqlite-vss treats a BLOB starting b"v\\x01" as headed; kb must not lose a float to that."""
    from kb.vectors import VssIndex, to_blob

    db = tmp_path / "kb.db"
    with KB.open(db, create=True) as kb:
        kb.bind_model("bench/random", 8, True, "vss", {"max_chars": 900, "overlap_chars": 150})
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(50, 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        raw = bytearray(to_blob(vectors[10]))
        raw[:2] = b"v\x01"
        vectors[10] = np.frombuffer(bytes(raw), dtype="<f4")
        assert to_blob(vectors[10])[:2] == b"v\x01"
        index = kb.index()
        assert isinstance(index, VssIndex)
        kb.conn.execute("BEGIN")
        index.add(list(range(1, 51)), vectors)
        kb.conn.execute("COMMIT")
        for i in (9, 10, 11, 49):
            assert index.search(vectors[i] / np.linalg.norm(vectors[i]), 1)[0][0] == i + 1


def test_an_interrupted_reindex_is_not_trusted(course_db):
    with KB.open(course_db) as kb:
        before = [h.chunk_id for h in Searcher(kb).search("rain shadow", k=5)]
        kb.set_meta({"vector_index_state": "building"})
    with KB.open(course_db) as kb:
        assert type(kb.index()).__name__ == "NumpyScan"
        assert [h.chunk_id for h in Searcher(kb).search("rain shadow", k=5)] == before
        with pytest.raises(KBError, match="kb reindex"):
            kb._writable_index()
        kb.reindex("vec")
    with KB.open(course_db) as kb:
        assert type(kb.index()).__name__ == "VecIndex" and kb.meta()["vector_index_state"] == "ready"
