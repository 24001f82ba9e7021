"""Search's fast paths: resident vectors give the index's answers; large KBs leave out common words."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from kb import KB, Ingester, Searcher, terms
from kb.search import embed_query, keyword_ranks
from kb.terms import TermCounts
from kb.vectors import nearest, read_matrix
from tests.helpers import COURSE

QUERIES = [
    "Darcy's law hydraulic conductivity",
    "tipping bucket rain gauge",
    "what is the rain shadow of a mountain range",
    "snow water equivalent",
    "how do you measure river discharge with a current meter",
    "infiltration",
    "the",
    "flood return period and peak flow",
]


def same_order_up_to_ties(a: list[tuple[int, float]], b: list[tuple[int, float]], tol: float = 1e-6) -> None:
    """Same ids at each rank, except where the two distances tie within float precision."""
    assert len(a) == len(b)
    last = max(a[-1][1], b[-1][1])
    for (ia, da), (ib, db) in zip(a, b):
        assert abs(da - db) <= tol  # the distance at each rank agrees (float32 sums in another order)
        if ia != ib:
            # Another id only where it ties: with the same id's place in the other list, or with
            # the last distance (which of several tied vectors make the cut is arbitrary).
            assert any(c == ia and abs(d - da) <= tol for c, d in b) or abs(da - last) <= tol


def small_course(course: Path) -> list[str]:
    """The course's text sources only: these tests write to their KB, the lecture audio is slow."""
    return [str(course / "field-guide-measuring-rainfall.md"), str(course / "website")]


@pytest.fixture(scope="module")
def embedder():
    """The deterministic test embedder, registered once for the module (conftest's is per test)."""
    import kb_test_plugins

    from kb.plugins import ensure_plugins_loaded, pm

    ensure_plugins_loaded()
    pm.register(kb_test_plugins, "kb_test_plugins")
    yield "test/hash-embedder"
    pm.unregister(name="kb_test_plugins")


@pytest.fixture(scope="module")
def course_kb(tmp_path_factory, embedder):
    """One sample-course KB shared by the module's read-only tests."""
    db = tmp_path_factory.mktemp("fast") / "kb.db"
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=embedder).run([str(COURSE)])
    return db


def test_resident_vectors_answer_as_the_index_does(course_kb):
    with KB.open(course_kb) as kb:
        assert kb.index().name == "vec"
        plain, resident = Searcher(kb), Searcher(kb, resident=True)
        compared = 0
        for query in QUERIES:
            vector = np.asarray(embed_query(plain.embedder, query), dtype=np.float32)
            near_plain, near_resident = plain._nearest(vector, 50), resident._nearest(vector, 50)
            same_order_up_to_ties(near_plain, near_resident)
            if [c for c, _ in near_plain] != [c for c, _ in near_resident]:
                continue  # tied vectors in another order: their fused ranks may differ too
            compared += 1
            a, b = plain.search(query, k=10), resident.search(query, k=10)
            assert [h.chunk_id for h in a] == [h.chunk_id for h in b], query
            assert [(h.bm25_rank, h.vector_rank) for h in a] == [(h.bm25_rank, h.vector_rank) for h in b]
            assert [h.distance for h in a] == pytest.approx([h.distance for h in b], abs=1e-6)
    assert compared >= 2


def test_resident_vectors_follow_a_source_added_while_the_searcher_lives(tmp_path, course, embedder):
    db = tmp_path / "kb.db"
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=embedder).run(small_course(course))
    query = "quokka wombat marsupial burrows"
    with KB.open(db, readonly=True) as reader:
        searcher = Searcher(reader, resident=True)
        before = searcher.search(query, k=3)
        assert all("quokka" not in h.text for h in before)
        # Another process's connection adds a source while this searcher holds the old vectors.
        (course / "marsupials.md").write_text(
            "# Marsupials\n\nThe quokka and the wombat are marsupial burrows diggers.\n"
        )
        with KB.open(db, write=True) as writer:
            Ingester(writer).run([str(course / "marsupials.md")])
        after = searcher.search(query, k=3)
        assert "quokka" in after[0].text
        assert after[0].vector_rank == 1  # found by the re-read vectors, not only by keywords
        # And a removal: the chunk is gone from the vectors too.
        with KB.open(db, write=True) as writer:
            writer.conn.execute("DELETE FROM chunks WHERE text LIKE '%quokka%'")
        ids, _ = searcher.resident.arrays()
        alive = {r[0] for r in reader.conn.execute("SELECT chunk_id FROM embeddings")}
        assert set(ids.tolist()) == alive


def test_searchers_of_one_file_share_one_copy_of_its_vectors(course_kb):
    with KB.open(course_kb, readonly=True) as one, KB.open(course_kb, readonly=True) as two:
        a, b = Searcher(one, resident=True), Searcher(two, resident=True)
        a.search("rain gauge"), b.search("rain gauge")
        assert a.resident is b.resident
        assert a.resident.arrays()[1] is b.resident.arrays()[1]
        assert Searcher(one).resident is None  # a one-shot searcher keeps using the index
    # kb serve's search threads take turns with the one store (its connection is not theirs).
    vector = a.resident.arrays()[1][0]
    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(lambda _: a.resident.search(vector, 1)[0][0], range(4)))
    assert found == [int(a.resident.arrays()[0][0])] * 4


def test_read_matrix_reads_each_vector_once_in_id_order(course_kb):
    with KB.open(course_kb) as kb:
        ids, matrix = read_matrix(kb.conn, 64)
        rows = kb.conn.execute("SELECT chunk_id, vector FROM embeddings ORDER BY chunk_id").fetchall()
    assert ids.tolist() == [r[0] for r in rows]
    np.testing.assert_array_equal(matrix, np.vstack([np.frombuffer(r[1], dtype="<f4") for r in rows]))
    assert matrix.dtype == np.float32 and matrix.flags.c_contiguous


def test_nearest_breaks_ties_by_chunk_id():
    matrix = np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    ids = np.array([40, 10, 30, 20])
    assert [cid for cid, _ in nearest(ids, matrix, np.array([1, 0], dtype=np.float32), 3)] == [20, 30, 40]
    assert nearest(ids[:0], matrix[:0], np.array([1, 0], dtype=np.float32), 3) == []


def test_small_kbs_search_every_word(course_kb):
    with KB.open(course_kb) as kb:
        counts = TermCounts(kb.conn)
        assert counts.threshold() is None  # ~100 chunks: far below PRUNE_MIN_CHUNKS
        for query in QUERIES:
            assert keyword_ranks(kb, query, 50, counts) == keyword_ranks(kb, query, 50)


def test_large_kbs_leave_out_words_most_chunks_hold(course_kb, monkeypatch):
    monkeypatch.setattr(terms, "PRUNE_MIN_CHUNKS", 1)  # the sample course, treated as large
    with KB.open(course_kb) as kb:
        total = kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]

        def held(word: str) -> int:
            return kb.conn.execute(
                "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{word}"',)
            ).fetchone()[0]

        counts = TermCounts(kb.conn)
        cap = counts.threshold()
        assert cap == int(terms.COMMON_SHARE * kb.conn.execute("SELECT max(id) FROM chunks").fetchone()[0])
        common, rare = "rainfall", "orographic"
        assert held(common) > cap >= held(rare) > 0 and total > 20
        assert counts.count(common, cap) == cap + 1  # counted no further than needed
        assert counts.prune([common, rare]) == [rare]
        # The pruned query is the rare word's own query; a query of common words has no keyword list.
        assert keyword_ranks(kb, f"{common} {rare}", 50, counts) == keyword_ranks(kb, rare, 50)
        assert keyword_ranks(kb, f"{common} water", 50, counts) == []
        # Hybrid search still answers it, from the vectors alone.
        hits = Searcher(kb).search(f"{common} water", k=3)
        assert hits and all(h.bm25_rank is None and h.vector_rank for h in hits)


def test_word_counts_start_over_when_the_file_changes(tmp_path, course, embedder, monkeypatch):
    monkeypatch.setattr(terms, "PRUNE_MIN_CHUNKS", 1)
    db = tmp_path / "kb.db"
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=embedder).run(small_course(course))
    with KB.open(db, readonly=True) as reader:
        counts = TermCounts(reader.conn)
        cap = counts.threshold()
        assert counts.count("quokka", cap) == 0
        many = "".join(f"# Quokka {i}\n\nThe quokka {i} lives on an island.\n\n" for i in range(3))
        (course / "quokkas.md").write_text(many)
        with KB.open(db, write=True) as writer:
            Ingester(writer).run([str(course / "quokkas.md")])
        assert counts.count("quokka", counts.threshold()) > 0
