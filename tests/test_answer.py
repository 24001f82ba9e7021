"""The answer engine's checks in code, with a scripted stand-in for the slow model.

The real default model runs in tests/test_ask_real.py; here the model's output is fixed so that
what kb does with good, wrong and garbage output is tested exactly.
"""

from __future__ import annotations

import json

import pytest

from kb import KB
from kb.answer import AnswerEngine, AskSettings, check_answer, relevance
from kb.errors import KBError
from kb.llm import LLM, Generation, LLMError
from kb.types import Evidence, Hit, Locator, SourceRef


class ScriptedLLM(LLM):
    """Returns fixed text per call kind: JSON for evidence calls, `answer` for the answer call."""

    backend = "scripted"
    name = "scripted"

    def __init__(self, answer: str, evidence: str = '{"relevance": 8, "summary": ""}', fail: bool = False):
        self.answer, self.evidence, self.fail = answer, evidence, fail
        self.calls = []

    def generate(self, messages, *, max_tokens, constraint=None, on_token=None, stop=None, prefix="", until=None):
        self.calls.append("evidence" if constraint else "answer")
        if self.fail and not constraint:
            raise LLMError("The server went away.")
        text = self.evidence if constraint else self.answer
        if on_token:
            for word in text.split(" "):
                on_token(word + " ")
        return Generation(text, 0.01, 0.001, len(text.split()))


def make_evidence(*texts):
    return [
        Evidence(
            key=i,
            hit=Hit(
                rank=i,
                chunk_id=100 + i,
                score=0.1,
                text=t,
                source=SourceRef("file:///c.pdf", "Notes", "pdf"),
                locator=Locator(page=i),
                link=None,
                distance=0.3,
            ),
            score=6.0,
            summary=t,
        )
        for i, t in enumerate(texts, start=1)
    ]


EVIDENCE = make_evidence(
    "The residence time of water in the atmosphere is about 9 days. Rivers hold water for 2 to 6 months.",
    "Darcy's law says the flow Q equals minus K times A times the hydraulic gradient dh/dl.",
)


def test_valid_citations_are_kept():
    answer = check_answer(
        "How long does water stay in the atmosphere?", "Water stays in the atmosphere for about 9 days [1].", EVIDENCE
    )
    assert answer.origin == "model" and not answer.abstained
    assert answer.text == "Water stays in the atmosphere for about 9 days [1]."
    assert [e.key for e in answer.cited] == [1]


def test_citation_to_missing_evidence_is_dropped_and_the_right_one_attached():
    answer = check_answer("How long?", "Water stays in the atmosphere for about 9 days [7].", EVIDENCE)
    assert answer.raw_citations == [7]
    assert [e.key for e in answer.cited] == [1] and "[7]" not in answer.text


def test_unsupported_sentences_are_removed():
    raw = (
        "Water stays in the atmosphere for about 9 days [1]. "
        "The Moon pulls the oceans into two tidal bulges every day [2]."
    )
    answer = check_answer("How long?", raw, EVIDENCE)
    assert "Moon" not in answer.text and answer.text.endswith("[1].")


def test_garbage_falls_back_to_the_evidence_itself():
    for raw in ["", "{{{{ 1000000000000", "Reply with JSON please", "The the the the"]:
        answer = check_answer("How long does water stay in the atmosphere?", raw, EVIDENCE)
        assert answer.origin == "extract"
        assert "9 days" in answer.text and "[1]" in answer.text
        assert all(e.key in (1, 2) for e in answer.cited)


def never():
    raise AssertionError("the model must not be loaded to abstain")


def test_abstains_without_loading_the_model(course_db):
    with KB.open(course_db) as kb:
        engine = AnswerEngine(kb, never)
        answer = engine.ask("How do I bake sourdough bread?")
        assert answer.abstained and answer.origin == "none" and not answer.cited
        assert answer.nearest and "does not answer" in answer.text
        row = kb.conn.execute("SELECT question, abstained, citations FROM answers").fetchone()
    assert row == ("How do I bake sourdough bread?", 1, "[]")


def test_answer_is_logged_with_citations(course_db):
    llm = ScriptedLLM("A tipping-bucket gauge tips when it holds about 0.2 mm of rain [1].")
    with KB.open(course_db) as kb:
        answer = AnswerEngine(kb, lambda: llm).ask("How much rain does one tip of a tipping-bucket gauge record?")
        assert not answer.abstained and answer.origin == "model"
        assert llm.calls[-1] == "answer" and llm.calls.count("evidence") == len(answer.evidence)
        ids = {r[0] for r in kb.conn.execute("SELECT id FROM chunks")}
        assert all(e.hit.chunk_id in ids for e in answer.cited)
        row = kb.conn.execute("SELECT answer, citations, model, settings, timings FROM answers").fetchone()
    assert row[0] == answer.text
    assert [c["chunk_id"] for c in json.loads(row[1])] == [e.hit.chunk_id for e in answer.cited]
    assert json.loads(row[2])["backend"] == "scripted"
    assert json.loads(row[3])["fast"] is False
    assert {"retrieval_s", "evidence_s", "answer_s", "total_s"} <= set(json.loads(row[4]))


def test_fast_mode_makes_one_model_call(course_db):
    llm = ScriptedLLM("Baseflow is the part of river flow fed by groundwater [1].")
    with KB.open(course_db) as kb:
        AnswerEngine(kb, lambda: llm, AskSettings(fast=True)).ask("What is baseflow?")
    assert llm.calls == ["answer"]


def test_model_failure_leaves_no_log_row(course_db):
    with KB.open(course_db) as kb:
        engine = AnswerEngine(kb, lambda: ScriptedLLM("", fail=True))
        with pytest.raises(LLMError):
            engine.ask("What is baseflow?")
        assert kb.conn.execute("SELECT count(*) FROM answers").fetchone()[0] == 0


def test_llm_judge_may_drop_but_never_add_evidence(course_db):
    low = ScriptedLLM("Baseflow is fed by groundwater [1].", evidence='{"relevance": 1, "summary": "nothing"}')
    with KB.open(course_db) as kb:
        answer = AnswerEngine(kb, lambda: low, AskSettings(judge="llm")).ask("What is baseflow?")
        assert answer.abstained
        high = ScriptedLLM("x", evidence='{"relevance": 10, "summary": "x"}')
        answer = AnswerEngine(kb, lambda: high, AskSettings(judge="llm")).ask("How do I bake sourdough bread?")
        assert answer.abstained and high.calls == []


def test_bad_questions(course_db):
    with KB.open(course_db) as kb:
        engine = AnswerEngine(kb, never)
        with pytest.raises(KBError, match="empty"):
            engine.ask("  \n ")
        with pytest.raises(KBError, match="too long"):
            engine.ask("why " * 12_500)


def test_relevance_scale():
    hit = EVIDENCE[0].hit
    assert relevance("How long does water stay in the atmosphere?", hit) > relevance("sourdough bread", hit)
    assert 0.0 <= relevance("sourdough", hit) <= 10.0


def test_question_in_another_language_gets_a_warning(course_db):
    with KB.open(course_db) as kb:
        engine = AnswerEngine(kb, lambda: ScriptedLLM("x"))
        answer = engine.ask("Quelle est la durée de séjour de l'eau dans l'atmosphère ?")
        assert any("English-only" in w for w in answer.warnings)
        assert "warnings" in answer.to_dict()
        answer = engine.ask("Comment mesure-t-on la pluie au pluviomètre")
        assert answer.warnings
        assert not engine.ask("What is baseflow?").warnings


def test_restated_questions_and_prompt_echoes_are_not_claims():
    raw = (
        "How long does water stay in the atmosphere [1]? Question: how long does water stay in the atmosphere. "
        "Water stays in the atmosphere for about 9 days [1]."
    )
    answer = check_answer("How long does water stay in the atmosphere?", raw, EVIDENCE)
    assert answer.text == "Water stays in the atmosphere for about 9 days [1]."


def test_a_swapped_number_is_not_backed():
    answer = check_answer(
        "How long does water stay in the atmosphere?", "Water stays in the atmosphere for about 90 days [1].", EVIDENCE
    )
    assert answer.origin == "extract" and "9 days" in answer.text and "90" not in answer.text


def test_generation_stops_after_enough_sentences():
    from kb.answer import MAX_ANSWER_SENTENCES, enough_sentences

    assert not enough_sentences("One [1]. Two [2].")
    assert enough_sentences(" ".join(f"Claim {i} [1]." for i in range(MAX_ANSWER_SENTENCES)))


def test_a_model_too_large_for_memory_is_refused_before_loading(tmp_path, monkeypatch):
    import kb.llm

    model = tmp_path / "big.gguf"
    with model.open("wb") as handle:
        handle.write(b"GGUF")
        handle.truncate(64 * 2**20)  # sparse: 64 MB on paper
    monkeypatch.setattr(kb.llm, "_available_memory", lambda: 16 * 2**20)
    with pytest.raises(LLMError, match="needs about .* GB of memory"):
        kb.llm.LlamaCppLLM(model_path=model)


def test_short_evidence_still_gives_an_answer():
    evidence = make_evidence("Darcy's law: q = -K dh/dl")
    answer = check_answer("What is Darcy's law?", "I don't know.", evidence)
    assert answer.origin == "extract" and "q = -K dh/dl" in answer.text and answer.cited
