"""Fusion weights recorded in the KB file, used by search, and shown by `kb search --explain`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from kb import KB, Ingester, Searcher
from kb.cli import cli
from kb.fusion import DEFAULT, LEGACY, Fusion, fuse, ranking
from kb.search import fts_query

# Written so the two lists disagree: "aquifer" is a rare word in a passage that is otherwise about
# something else, and the hash embedder puts other passages nearer the query's vector.
PASSAGES = {
    "wells.txt": "Groundwater is pumped from wells. The aquifer recharge rate limits how much can be taken.",
    "rain.txt": "Rain gauges measure precipitation in millimetres; a tipping bucket counts each small volume.",
    "rivers.txt": "Rivers carry baseflow between storms. Aquifer water seeps into the channel as baseflow.",
    "clouds.txt": "Clouds form when rising air cools. Condensation on dust releases latent heat into the air.",
    "snow.txt": "Snowpack stores winter precipitation and releases it as meltwater in spring.",
}
QUERY = "aquifer recharge from rain and snow precipitation"


@pytest.fixture
def small_db(tmp_path, hash_embedder):
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in PASSAGES.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    db = tmp_path / "small.db"
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=hash_embedder).run([str(folder)])
    return db


def independent_lists(db, query: str) -> tuple[dict[int, float], dict[int, float]]:
    """BM25 and cosine distance by chunk id, computed here without kb.search: FTS5's bm25() and NumPy."""
    from kb.plugins import get_embedder

    with KB.open(db, readonly=True) as kb:
        bm25 = dict(
            kb.conn.execute(
                "SELECT rowid, bm25(chunks_fts, 1.0, 0.5) FROM chunks_fts WHERE chunks_fts MATCH ?",
                (fts_query(query),),
            ).fetchall()
        )
        rows = kb.conn.execute("SELECT chunk_id, vector FROM embeddings").fetchall()
        q = np.asarray(get_embedder(kb.model_id).embed([query])[0], dtype=np.float32)
    return bm25, {cid: 1.0 - float(np.frombuffer(blob, dtype="<f4") @ q) for cid, blob in rows}


def independent_ranks(db, query: str) -> tuple[dict[int, int], dict[int, int]]:
    """1-based keyword and vector ranks (lower BM25 and lower distance first)."""
    bm25, distance = independent_lists(db, query)
    keyword = sorted(bm25, key=lambda cid: (bm25[cid], cid))
    nearest = sorted(distance, key=lambda cid: (distance[cid], cid))
    return {c: i for i, c in enumerate(keyword, 1)}, {c: i for i, c in enumerate(nearest, 1)}


def expected_scores(db, query: str, fusion: Fusion) -> dict[int, float]:
    """The fused score of every candidate, by the formulas of kb/fusion.py's docstring, written out here."""
    bm25, distance = independent_lists(db, query)
    keyword, vector = independent_ranks(db, query)
    keyword = {c: r for c, r in keyword.items() if r <= fusion.depth}
    vector = {c: r for c, r in vector.items() if r <= fusion.depth}
    if fusion.method == "rrf":
        return {
            c: (fusion.keyword_weight / (fusion.rrf_k + keyword[c]) if c in keyword else 0.0)
            + (fusion.vector_weight / (fusion.rrf_k + vector[c]) if c in vector else 0.0)
            for c in set(keyword) | set(vector)
        }
    assert fusion.method in ("zscore", "adaptive")
    k_values = np.array([-bm25[c] for c in keyword])
    v_values = np.array([-distance[c] for c in vector])
    k_z = dict(zip(keyword, (k_values - k_values.mean()) / k_values.std()))
    v_z = dict(zip(vector, (v_values - v_values.mean()) / v_values.std()))
    # adaptive: each weight times its list's top z-score to the power `confidence` (0 for zscore).
    k_w = fusion.keyword_weight * max(k_z.values()) ** fusion.confidence
    v_w = fusion.vector_weight * max(v_z.values()) ** fusion.confidence
    return {
        c: k_w * k_z.get(c, min(k_z.values())) + v_w * v_z.get(c, min(v_z.values())) for c in set(keyword) | set(vector)
    }


def set_fusion(db, fusion: Fusion) -> None:
    with KB.open(db) as kb, kb.conn:
        kb.set_meta(fusion.as_meta())


def test_a_new_kb_records_the_tuned_fusion(small_db):
    with KB.open(small_db, readonly=True) as kb:
        meta = kb.meta()
        assert {k: meta[k] for k in DEFAULT.as_meta()} == DEFAULT.as_meta()
        assert Searcher(kb).fusion == DEFAULT


def test_recorded_weights_change_the_ranking(small_db):
    keyword, vector = independent_ranks(small_db, QUERY)
    keyword_first = min(keyword, key=keyword.get)
    vector_first = min(vector, key=vector.get)
    assert keyword_first != vector_first, "the fixture must make the two lists disagree"
    firsts = {}
    for weights in ((1.0, 0.0), (0.0, 1.0)):
        set_fusion(small_db, Fusion("rrf", *weights, depth=50, rrf_k=60))
        with KB.open(small_db, readonly=True) as kb:
            firsts[weights] = Searcher(kb).search(QUERY, k=1)[0].chunk_id
    assert firsts == {(1.0, 0.0): keyword_first, (0.0, 1.0): vector_first}


def test_an_old_kb_without_fusion_settings_keeps_equal_weight_rrf(small_db):
    with KB.open(small_db) as kb, kb.conn:
        kb.conn.execute("DELETE FROM kb_meta WHERE key LIKE 'fusion_%'")
    keyword, vector = independent_ranks(small_db, QUERY)
    with KB.open(small_db, readonly=True) as kb:
        searcher = Searcher(kb)
        assert searcher.fusion == LEGACY
        hits = searcher.search(QUERY, k=5)
    for hit in hits:
        expected = sum(1.0 / (60 + r[hit.chunk_id]) for r in (keyword, vector) if hit.chunk_id in r)
        assert hit.score == pytest.approx(expected)


@pytest.mark.parametrize(
    "fusion",
    [DEFAULT, Fusion("rrf", 0.8, 0.2, depth=3, rrf_k=10), Fusion("adaptive", 0.4, 0.6, depth=4, confidence=2.0)],
)
def test_explain_shows_ranks_and_fused_scores_computed_independently(small_db, fusion):
    set_fusion(small_db, fusion)
    keyword, vector = independent_ranks(small_db, QUERY)
    # Past the fusion depth a list does not count, and its rank is not shown.
    keyword = {c: r for c, r in keyword.items() if r <= fusion.depth}
    vector = {c: r for c, r in vector.items() if r <= fusion.depth}
    result = CliRunner().invoke(cli, ["search", str(small_db), QUERY, "-k", "5", "--json", "--explain"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert hits
    expected = expected_scores(small_db, QUERY, fusion)
    for hit in hits:
        explained = hit["explain"]
        assert explained["keyword_rank"] == keyword.get(hit["chunk_id"])
        assert explained["vector_rank"] == vector.get(hit["chunk_id"])
        # sqlite-vec's float32 distances against NumPy's: z-scores of near-equal distances magnify
        # their last-digit differences.
        assert explained["fused_score"] == pytest.approx(expected[hit["chunk_id"]], rel=1e-5, abs=1e-6)
    assert [h["chunk_id"] for h in hits] == sorted(expected, key=lambda c: (-expected[c], c))[:5]
    assert [h["explain"]["fused_score"] for h in hits] == sorted(
        (h["explain"]["fused_score"] for h in hits), reverse=True
    )
    text = CliRunner().invoke(cli, ["search", str(small_db), QUERY, "-k", "2", "--explain"])
    assert text.exit_code == 0, text.output
    first = hits[0]["explain"]
    assert f"keyword rank {first['keyword_rank'] or '-'}, vector rank {first['vector_rank'] or '-'}" in text.output
    assert f"{fusion.depth} candidates from each list" in text.output


def test_search_json_without_explain_keeps_the_design_record(small_db):
    result = CliRunner().invoke(cli, ["search", str(small_db), QUERY, "--json"])
    assert result.exit_code == 0, result.output
    assert all("explain" not in hit for hit in json.loads(result.output))


def test_damaged_fusion_settings_are_one_sentence(small_db):
    with KB.open(small_db) as kb, kb.conn:
        kb.set_meta({"fusion_method": "magic"})
    result = CliRunner().invoke(cli, ["search", str(small_db), QUERY])
    assert result.exit_code != 0
    assert "fusion settings are not valid" in result.output
    assert "Traceback" not in result.output


def test_zscore_fusion_standardises_each_list():
    keyword = [(1, -9.0), (2, -5.0), (3, -1.0)]
    nearest = [(3, 0.1), (4, 0.3), (1, 0.5)]
    z = 1.5**0.5  # the z-score of 9 among 9, 5, 1 (and of -0.1 among -0.1, -0.3, -0.5)
    scores = fuse(Fusion("zscore", 0.5, 0.5, depth=10), keyword, nearest)
    assert scores == pytest.approx({1: 0.0, 2: -z / 2, 3: 0.0, 4: -z / 2})  # a missed chunk: the list's worst


def test_minmax_fusion_normalises_each_list():
    # BM25 from FTS5: lower is better; distance: lower is better.
    keyword = [(1, -9.0), (2, -5.0), (3, -1.0)]
    nearest = [(3, 0.1), (4, 0.3), (1, 0.5)]
    scores = fuse(Fusion("minmax", 0.5, 0.5, depth=10), keyword, nearest)
    assert scores == pytest.approx({1: 0.5, 2: 0.25, 3: 0.5, 4: 0.25})
    assert ranking(scores) == [1, 3, 2, 4]
    keyword_only = fuse(Fusion("minmax", 1.0, 0.0, depth=2), keyword, nearest)
    assert keyword_only == pytest.approx({1: 1.0, 2: 0.0, 3: 0.0, 4: 0.0})


def test_adaptive_fusion_lets_a_decisive_list_outweigh_a_flat_one():
    # One keyword match far above nine near-equal ones; ten evenly spaced vector distances.
    keyword = [(1, -30.0)] + [(c, -3.0 + 0.1 * i) for i, c in enumerate([3, 2, 5, 6, 7, 8, 9, 10, 11])]
    nearest = [(c, 0.10 + 0.01 * i) for i, c in enumerate([3, 4, 1, 12, 13, 14, 15, 16, 17, 18])]
    plain = Fusion("zscore", 0.15, 0.85, depth=10)
    adaptive = Fusion("adaptive", 0.15, 0.85, depth=10, confidence=2.0)
    assert ranking(fuse(plain, keyword, nearest))[0] == 3  # the vector list's favourite
    scores = fuse(adaptive, keyword, nearest)
    assert ranking(scores)[0] == 1  # the decisive keyword match
    # The formula, written out: z-scores per list, each weight times its list's top z-score squared.
    expected = {}
    for weight, ranked in ((0.15, keyword), (0.85, nearest)):
        values = -np.array([raw for _, raw in ranked])
        z = dict(zip([c for c, _ in ranked], (values - values.mean()) / values.std()))
        for cid in {c for c, _ in keyword} | {c for c, _ in nearest}:
            expected[cid] = expected.get(cid, 0.0) + weight * max(z.values()) ** 2 * z.get(cid, min(z.values()))
    assert scores == pytest.approx(expected)
    # A list of equal scores has confidence 1 (its z-scores are 1 each); an empty list adds nothing.
    assert fuse(adaptive, [(1, -2.0), (2, -2.0)], []) == pytest.approx({1: 0.15, 2: 0.15})


def test_adaptive_settings_round_trip_through_kb_meta(small_db):
    fusion = Fusion("adaptive", 0.3, 0.7, depth=20, confidence=1.5)
    set_fusion(small_db, fusion)
    with KB.open(small_db, readonly=True) as kb:
        assert Searcher(kb).fusion == fusion
    result = CliRunner().invoke(cli, ["search", str(small_db), QUERY, "--explain"])
    assert result.exit_code == 0, result.output
    assert "top z-score to the power 1.5" in result.output and "0.3 x keyword + 0.7 x vector" in result.output


@pytest.mark.parametrize(
    "meta",
    [
        {"fusion_method": "rrf", "fusion_keyword_weight": "-1"},
        {"fusion_method": "rrf", "fusion_depth": "0"},
        {"fusion_method": "adaptive", "fusion_confidence": "-1"},
        {"fusion_method": "zscore", "fusion_keyword_weight": "nan"},
        {"fusion_method": "adaptive", "fusion_confidence": "inf"},
    ],
)
def test_invalid_recorded_settings_are_refused(meta):
    with pytest.raises(ValueError):
        Fusion.from_meta(meta)
