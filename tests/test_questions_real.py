"""`kb questions` with the real default model (Qwen2.5-Coder-1.5B-Instruct) on a passage of the course.

One KB (the field guide, real embedder) and one model load for the module. The model writes a
multiple-choice and a cloze question (the kinds with the most rules; every kind is made by
benchmarks/bench_questions.py, which takes minutes); every question it made is saved with a status,
and every one kept passes every check again when re-run here. Planted bad questions (the answer
not in the quote, leaning on the text, two correct options, a duplicate, a question the KB answers
from another fact) are rejected by the same pipeline, each with its reason, the last by the real answer engine.
"""

from __future__ import annotations

import shutil

import pytest
from test_questions import assert_engine_agrees

from kb import KB
from kb.questions import REASONS, Question, checks, store
from kb.questions.generate import Generator, sections
from tests.helpers import COURSE, run_kb

pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow

GAUGE = "It has a copper or plastic body and a funnel with a sharp brass rim exactly 5 inches (127 mm) in diameter."


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    from kb.answer import load_llm

    folder = tmp_path_factory.mktemp("guide")
    shutil.copy(COURSE / "field-guide-measuring-rainfall.md", folder)
    db = folder.parent / "guide.db"
    proc = run_kb("ingest", str(db), str(folder))
    assert proc.returncode == 0, proc.stderr
    with KB.open(db, write=True) as kb:
        yield Generator(kb, load_llm())


def section_with(generator, words: str):
    return next(s for s in sections(generator.kb) if words in " ".join(s.text.split()))


@pytest.fixture(scope="module")
def made(generator):
    """One question of each kind, two passages, made and checked by the real model and engine."""
    out = []
    for words, kinds in (("brass rim exactly 5 inches", ("mcq", "cloze")),):
        section = section_with(generator, words)
        drafts = [generator.make(section, kind, []) for kind in kinds]
        for q in drafts:
            generator.check(q, section.text)
            store.save(generator.kb, q)
            out.append((q, section))
    return out


def test_every_question_is_saved_with_a_status_and_kept_ones_pass_every_check(made, generator):
    assert [q.kind for q, _ in made] == ["mcq", "cloze"]
    kept = [(q, s) for q, s in made if q.status == "draft"]
    for q, _ in made:
        assert q.id is not None and q.chunk_id is not None and q.locator.startswith("Field guide")
        assert q.status in ("draft", "rejected") and (q.status == "draft") == (q.reason is None)
        assert q.reason is None or q.reason in REASONS, q.reason
    assert kept, [(q.kind, q.reason, q.question, q.answer, q.quote) for q, _ in made]
    for q, section in kept:
        again = Question(**{**q.to_dict(), "checks": {}})
        assert checks.grounding(again, section.text) is None, again.checks
        assert not checks.leans_on_text(q)
        engine = q.checks["engine"]
        assert not engine["abstained"] and engine["agrees"], engine
        assert_engine_agrees(q, dict(generator.kb.conn.execute("SELECT id, text FROM chunks")))
        if q.kind == "mcq":
            assert len(set(q.options)) == 4 and q.options[q.correct] == q.answer
        if q.kind == "cloze":
            assert q.question.count("_____") == 1


def test_planted_bad_questions_are_rejected_with_their_reason(generator, made):
    section = section_with(generator, "brass rim exactly 5 inches")

    def plant(question, answer, kind="short", **more):
        return Question(kind=kind, question=question, answer=answer, quote=GAUGE, chunk_id=section.chunk_id, **more)

    wide = "How wide is the funnel of the Met Office standard gauge?"
    planted = {
        "answer_not_in_quote": plant(wide, "8 inches"),
        "leans_on_text": plant("According to the text, how wide is the funnel of the standard gauge?", "5 inches"),
        "not_one_correct": plant(
            wide, "5 inches", kind="mcq", options=["2 inches", "5 inches", "127 mm", "10 inches"], correct=1
        ),
        # The answer is in the quote, but the course answers this question from the tipping-bucket passage.
        "answered_elsewhere": plant("How much rain does a tipping bucket hold before it tips?", "5 inches"),
    }
    for reason, q in planted.items():
        generator.check(q, section.text)
        assert (q.status, q.reason) == ("rejected", reason), (reason, q.checks)
    assert planted["answered_elsewhere"].checks["engine"]["cited"]  # the engine answered, from elsewhere
    kept = next((q for q, _ in made if q.status == "draft"), None)
    assert kept is not None, "no question of the model's was kept to plant a duplicate of"
    twin = Question(**{**kept.to_dict(), "id": None, "checks": {}})
    source = next(s for q, s in made if q is kept)
    generator.check(twin, source.text)
    assert (twin.status, twin.reason) == ("rejected", "duplicate") and twin.checks["duplicate_of"] == kept.id
