"""The answer engine's checks in code, with a scripted stand-in for the slow model.

The real default model runs in tests/test_ask_real.py; here the model's output is fixed so that
what kb does with good, wrong and garbage output is tested exactly.
"""

from __future__ import annotations

import json

import pytest

from kb import KB
from kb.answer import AnswerEngine, AskSettings, enough, grounding, relevance, support
from kb.errors import KBError
from kb.evidence import check_quotes, focus, judge_constraint, occurs, parse_verdict, snap, verdict_from
from kb.grounding import (
    MAX_ANSWER_SENTENCES,
    bracket_citations,
    check_answer,
    citations_inside,
    extract,
    looping,
    unframed,
)
from kb.llm import LLM, Generation, LLMError
from kb.text import sentences
from kb.types import Evidence, Hit, Locator, SourceRef


class ScriptedLLM(LLM):
    """Returns fixed text per call kind: `verdict` for the judge call (the one with a grammar), `answer` else."""

    backend = "scripted"
    name = "scripted"

    def __init__(
        self,
        answer: str,
        verdict: str | None = None,
        fail: bool = False,
        judges: bool = True,
        p_yes=None,
        sufficient: bool = True,
    ):
        self.answer, self.verdict, self.fail, self.judges, self.p_yes = answer, verdict, fail, judges, p_yes
        self.sufficient = sufficient
        self.calls: list[str] = []
        self.prompts: list[list[dict]] = []

    def generate(self, messages, *, max_tokens, constraint=None, on_token=None, stop=None, prefix="", until=None):
        self.calls.append("judge" if constraint else "answer")
        self.prompts.append(messages)
        if self.fail and not constraint:
            raise LLMError("The server went away.")
        text = self.verdict if constraint else self.answer
        if text is None:  # no verdict scripted: name the first passage's first sentence
            text = json.dumps({"sentences": ["1a"], "sufficient": self.sufficient})
        shown = ""
        for word in text.split(" "):
            shown += word + " "
            if on_token and not constraint:
                on_token(word + " ")
            if until and until(shown):
                break
        return Generation(shown.strip() if until else text, 0.01, 0.001, len(text.split()))

    def yes_probability(self, messages):
        self.calls.append("verdict")
        self.prompts.append(messages)
        return self.p_yes


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
        )
        for i, t in enumerate(texts, start=1)
    ]


EVIDENCE = make_evidence(
    "The residence time of water in the atmosphere is about 9 days. Rivers hold water for 2 to 6 months.",
    "Darcy's law says the flow Q equals minus K times A times the hydraulic gradient dh/dl.",
)


# -- the judge's reply: forced format, quotes that must occur ----------------------------------------


def test_judge_format_allows_only_the_sentences_shown():
    constraint = judge_constraint(["1a", "1b", "2a"])
    assert 'id ::= "\\"1a\\"" | "\\"1b\\"" | "\\"2a\\""' in constraint.gbnf
    assert constraint.schema["properties"]["sentences"]["items"]["enum"] == ["1a", "1b", "2a"]
    assert constraint.schema["properties"]["sentences"]["maxItems"] == 3
    ids = {"1a": (1, "Rivers hold water for 2 to 6 months."), "2a": (2, "Lakes hold it for decades.")}
    named = '{"sentences": ["2a", "7c"], "sufficient": true}'
    assert parse_verdict(named, [1, 2], ids) == (True, [(2, "Lakes hold it for decades.")], ["7c"])
    # The older shape, quoting text, from servers that ignore the schema: checked against the passage later.
    assert parse_verdict('{"quotes": [{"passage": 7, "text": "x"}], "sufficient": true}', [1, 2]) == (True, [], [])
    assert parse_verdict("The passages say 9 days.", [1]) is None
    assert parse_verdict('{"quotes": [], "sufficient": "yes"}', [1]) is None


def test_quotes_are_found_tolerating_whitespace_hyphenation_and_typography():
    passage = "Water in the atmo-\nsphere stays\n about 9 days \u2014 then it \u201cfalls\u201d as rain."
    assert occurs("water in the atmosphere stays about 9 days", passage)
    assert occurs('Then it "falls" as rain', passage)
    assert occurs("Water in the atmosphere ... falls", passage)
    assert not occurs("water in the atmosphere stays about 90 days", passage)
    assert not occurs("falls ... Water in the atmosphere", passage)  # pieces must come in order


def test_invented_quotes_are_rejected_and_misnumbered_ones_rehomed():
    passages = {e.key: e.hit.text for e in EVIDENCE}
    kept, rejected = check_quotes(
        [
            (1, "The residence time of water in the atmosphere is about 9 days."),
            (1, "Darcy's law says the flow Q equals minus K times A"),  # it is passage 2's
            (2, "Groundwater flows at ten metres a day."),  # in no passage
        ],
        passages,
    )
    assert kept == {
        1: ["The residence time of water in the atmosphere is about 9 days."],
        2: ["Darcy's law says the flow Q equals minus K times A"],
    }
    assert rejected == [(2, "Groundwater flows at ten metres a day.")]


def test_a_nearly_exact_quote_snaps_to_the_passage_own_words():
    passage = EVIDENCE[0].hit.text
    assert snap("The residence time of water in the atmosphere is around 9 days.", passage) == (
        "The residence time of water in the atmosphere is about 9 days."
    )
    assert snap("The residence time of water in the ocean is 3,200 years.", passage) is None
    # A sentence cut short, its article changed (seen from the real model): the whole sentence stands.
    gauge = (
        "The most common instrument is the Met Office standard gauge. It has a copper or plastic body "
        "and a funnel with a sharp brass rim exactly 5 inches (127 mm) in diameter. Rain collects below."
    )
    assert snap("The funnel with a sharp brass rim exactly 5 inches (127 mm) in diameter.", gauge) == (
        "It has a copper or plastic body and a funnel with a sharp brass rim exactly 5 inches (127 mm) in diameter."
    )
    assert snap("A funnel made of glass.", gauge) is None


def test_a_second_passage_is_kept_only_for_words_of_the_question_the_first_lacks():
    question = "What is Earth's magnetic field called?"
    named = {
        1: ["Earth's magnetic field is called the magnetosphere.", "It is usually about 50 microtesla."],
        2: ["The next chapter explains how electric current and magnetism are related."],
    }
    # The first passage keeps both its sentences (the second holds none of the question's words).
    assert focus(question, named) == {1: named[1]}
    both = {1: ["Ice melts at 0 degrees C."], 2: ["Ethanol melts at -114 degrees C."], 3: ["Ice is water."]}
    assert focus("At what temperatures do ice and ethanol melt?", both) == {1: both[1], 2: both[2]}


def test_insufficient_or_unquoted_verdicts_do_not_suffice():
    passages = {1: EVIDENCE[0].hit.text}
    assert not verdict_from('{"quotes": [], "sufficient": true}', passages).sufficient
    assert not verdict_from(
        '{"quotes": [{"passage": 1, "text": "Rivers hold water for 2 to 6 months"}], "sufficient": false}', passages
    ).sufficient
    invented = verdict_from(
        '{"quotes": [{"passage": 1, "text": "Lakes hold water for a century"}], "sufficient": true}', passages
    )
    assert not invented.sufficient and invented.rejected
    garbage = verdict_from("{{{{ 1000000000000", passages)
    assert not garbage.sufficient and not garbage.parsed


# -- the answer's sentences -------------------------------------------------------------------------


def test_valid_citations_are_kept():
    answer = check_answer(
        "How long does water stay in the atmosphere?", "Water stays in the atmosphere for about 9 days [1].", EVIDENCE
    )
    assert answer.origin == "model" and not answer.abstained
    assert answer.text == "Water stays in the atmosphere for about 9 days [1]."
    assert [e.key for e in answer.cited] == [1]


def test_citation_after_the_full_stop_stays_with_its_sentence():
    raw = "Water stays in the atmosphere for about 9 days. [1] Rivers hold water for 2 to 6 months. [1]"
    assert citations_inside(raw) == (
        "Water stays in the atmosphere for about 9 days [1]. Rivers hold water for 2 to 6 months [1]."
    )
    answer = check_answer("How long does water stay in rivers and the air?", raw, EVIDENCE)
    assert answer.text == citations_inside(raw)


def test_a_citation_written_in_parentheses_counts_when_it_names_a_passage():
    # The real model wrote "(1)" for "[1]" once; the sentence was then dropped as unsupported.
    raw = "Water stays in the atmosphere for about 9 days (1). Rivers hold water for 2 to 6 months (1)."
    answer = check_answer("How long does water stay in rivers and the air?", raw, EVIDENCE)
    assert answer.origin == "model"
    assert answer.text == "Water stays in the atmosphere for about 9 days [1]. Rivers hold water for 2 to 6 months [1]."
    # A number that names no passage is the text's own, not a citation.
    assert bracket_citations("See equation (7) for the flow [1].", {1, 2}) == "See equation (7) for the flow [1]."


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
    assert answer.checks["dropped"]["unsupported"] == ["The Moon pulls the oceans into two tidal bulges every day."]


def test_a_paraphrase_stands_on_meaning_when_enough_words_match():
    evidence = make_evidence("The leeward side lies in a rain shadow: the descending air warms and dries.")
    raw = "The sheltered side is in a rain shadow, because sinking air gets warmer and drier [1]."

    def close(text, candidates):
        return [0.9 for _ in candidates]

    def far(text, candidates):
        return [0.2 for _ in candidates]

    assert check_answer("Why is one side drier?", raw, evidence, close).origin == "model"
    assert check_answer("Why is one side drier?", raw, evidence, far).origin == "extract"
    # Meaning never stands in for a figure the passage does not state.
    swapped = "The sheltered side gets 40 per cent less rain, because sinking air warms [1]."
    assert check_answer("Why is one side drier?", swapped, evidence, close).origin == "extract"


def test_garbage_falls_back_to_the_evidence_itself():
    for raw in ["", "{{{{ 1000000000000", "Reply with JSON please", "The the the the"]:
        answer = check_answer("How long does water stay in the atmosphere?", raw, EVIDENCE)
        assert answer.origin == "extract"
        assert "9 days" in answer.text and "[1]" in answer.text
        assert all(e.key in (1, 2) for e in answer.cited)


def test_fallback_prefers_the_checked_quotes():
    evidence = make_evidence(EVIDENCE[0].hit.text)
    evidence[0].quotes = ["Rivers hold water for 2 to 6 months."]
    answer = check_answer("How long do rivers hold water?", "Nonsense words here entirely.", evidence)
    assert answer.origin == "extract" and answer.text == "Rivers hold water for 2 to 6 months [1]."


def test_a_degenerate_loop_is_cut():
    raw = " ".join(
        f"Water stays in the atmosphere for about 9 days{tail} [1]." for tail in ("", " only", " at most", " or so")
    )
    answer = check_answer("How long does water stay in the atmosphere?", raw, EVIDENCE)
    assert answer.text == "Water stays in the atmosphere for about 9 days [1]."
    assert answer.checks["dropped"]["repeated"] and answer.checks["dropped"]["loop_cut"]
    assert looping("the rain falls on the hill " * 4) and not looping("the rain falls on the hill " * 2)
    assert enough("the rain falls on the hill " * 4)


def test_a_sentence_ending_on_a_colon_or_cut_off_is_dropped():
    raw = (
        "Water stays in the atmosphere for about 9 days [1]. Rivers hold water for months, for example: [1] "
        "Darcy's law says the flow Q equals"
    )
    answer = check_answer("How long does water stay in the atmosphere and rivers?", raw, EVIDENCE)
    assert answer.text == "Water stays in the atmosphere for about 9 days [1]."
    # The colon-ended sentence and the cut-off one after it are one unfinished unit.
    assert answer.checks["dropped"]["unfinished"] == [
        "Rivers hold water for months, for example: Darcy's law says the flow Q equals"
    ]


def test_the_frame_around_a_claim_goes_and_talk_about_the_quotes_is_no_claim():
    raw = (
        "The passage states that water stays in the atmosphere for about 9 days [1]. "
        'The quote "Darcy\'s law says the flow" is not relevant to the question [2]. '
        "1a: Rivers hold water for 2 to 6 months [1]."
    )
    answer = check_answer("How long does water stay in the atmosphere and rivers?", raw, EVIDENCE)
    assert answer.text == (
        "Water stays in the atmosphere for about 9 days [1]. Rivers hold water for 2 to 6 months [1]."
    )
    assert answer.checks["dropped"]["about_quotes"]
    # Seen from the default model: the frame opened on a stray quote mark, and quoted what followed.
    assert unframed('" The passage also states that "Vertebrata is named for the vertebral column.') == (
        "Vertebrata is named for the vertebral column."
    )
    assert unframed('"Quoted words" are kept.') == '"Quoted words" are kept.'
    # Two quotes joined by a frame inside one sentence are two claims; the one ending on a colon goes.
    evidence = make_evidence(
        "By the end of this section, you will be able to: explain transport. Active transport uses ATP energy."
    )
    joined = (
        'By the end of this section, you will be able to: " and the passage states that "'
        "Active transport uses ATP energy [1]."
    )
    assert (
        check_answer("What does active transport use?", joined, evidence).text
        == "Active transport uses ATP energy [1]."
    )


def test_a_quote_holding_the_question_words_the_answer_dropped_leads_it():
    evidence = make_evidence(
        "The water table is not flat: it follows the land surface. Where a lens of clay holds up water above "
        "the main saturated zone, a separate perched water table forms."
    )
    perched = "Where a lens of clay holds up water above the main saturated zone, a separate perched water table forms."
    evidence[0].quotes = [perched, "The water table is not flat: it follows the land surface."]
    # Written from the wrong quote: "perched" is in a quote and in no sentence of the answer.
    answer = check_answer("What is a perched water table?", "The water table follows the land surface [1].", evidence)
    assert answer.text == f"{perched[:-1]} [1]. The water table follows the land surface [1]."
    assert answer.checks["restored"] == perched
    # An answer that keeps the question's words is left as written; framing words ("called") do not count.
    written = "A perched water table forms above clay [1]."
    kept = check_answer("What is a perched water table called?", written, evidence)
    assert kept.text == written and "restored" not in kept.checks


def test_when_no_quote_holds_the_dropped_words_the_first_passages_shown_sentence_may():
    """The judge named only the splitting sentence; the point ("nuclear power") stood in the one before."""
    evidence = make_evidence(
        "Nuclear power plants use uranium concentrated in fuel rods. The uranium atoms are split apart when "
        "they are hit by tiny particles.",
        "Coal power stations burn coal.",
    )
    split = "The uranium atoms are split apart when they are hit by tiny particles."
    evidence[0].quotes = [split]
    evidence[0].units = ["Nuclear power plants use uranium concentrated in fuel rods.", split]
    evidence[1].units = ["Coal power stations burn coal."]
    question = "What type of power is generated by splitting uranium atoms?"
    answer = check_answer(question, "The uranium atoms are split apart [1].", evidence)
    assert (
        answer.text
        == "Nuclear power plants use uranium concentrated in fuel rods [1]. The uranium atoms are split apart [1]."
    )
    assert answer.checks["restored"] == evidence[0].units[0]
    # Only the first passage's own sentences: another passage's "power" is not the answer's point.
    evidence[0].units = [split]
    assert "restored" not in check_answer(question, "The uranium atoms are split apart [1].", evidence).checks


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
    assert not enough("One [1]. Two [2].")
    assert enough(" ".join(f"Claim {i} [1]." for i in range(MAX_ANSWER_SENTENCES)))


def test_short_evidence_still_gives_an_answer():
    evidence = make_evidence("Darcy's law: q = -K dh/dl")
    answer = check_answer("What is Darcy's law?", "I don't know.", evidence)
    assert answer.origin == "extract" and "q = -K dh/dl" in answer.text and answer.cited


# -- the engine on a real KB file --------------------------------------------------------------------


def never():
    raise AssertionError("the model must not be loaded to abstain")


def test_abstains_without_loading_the_model(course_db):
    with KB.open(course_db) as kb:
        engine = AnswerEngine(kb, never)
        answer = engine.ask("How do I bake sourdough bread?")
        assert answer.abstained and answer.origin == "none" and not answer.cited
        assert answer.nearest and "does not answer" in answer.text
        assert answer.checks == {"abstained_by": "retrieval"}
        row = kb.conn.execute("SELECT question, abstained, citations FROM answers").fetchone()
    assert row == ("How do I bake sourdough bread?", 1, "[]")


QUESTION = "How much rain does one tip of a tipping-bucket gauge record?"


def test_judged_answer_is_written_from_checked_quotes_and_logged(course_db):
    llm = ScriptedLLM("A tipping-bucket gauge tips when it holds about 0.2 mm of rain [1].")
    stages = []
    with KB.open(course_db) as kb:
        answer = AnswerEngine(kb, lambda: llm).ask(QUESTION, on_stage=stages.append)
        assert not answer.abstained and answer.origin == "model"
        assert llm.calls == ["verdict", "judge", "answer"] and stages == ["retrieving", "judging", "writing"]
        # The verdict and the judge read the same passages; the answer continues the judge's conversation.
        verdict, judge, write = llm.prompts
        assert verdict[1]["content"].split("Question:")[0] == judge[1]["content"].split("Question:")[0]
        assert write[:2] == judge and "Quotes that occur" in write[-1]["content"]
        assert all(q in write[-1]["content"] for e in answer.evidence for q in e.quotes)
        ids = {r[0] for r in kb.conn.execute("SELECT id FROM chunks")}
        assert all(e.hit.chunk_id in ids for e in answer.cited)
        row = kb.conn.execute("SELECT answer, citations, model, settings, timings FROM answers").fetchone()
    assert row[0] == answer.text
    assert [c["chunk_id"] for c in json.loads(row[1])] == [e.hit.chunk_id for e in answer.cited]
    assert json.loads(row[2])["backend"] == "scripted"
    settings = json.loads(row[3])
    assert settings["checks"]["mode"] == "judge" and settings["checks"]["judge"]["sufficient"] is True
    assert {"retrieval_s", "evidence_s", "answer_s", "first_token_s", "total_s"} <= set(json.loads(row[4]))


def test_insufficient_evidence_abstains_with_the_nearest_sources(course_db):
    llm = ScriptedLLM("never written", verdict='{"quotes": [], "sufficient": false}')
    with KB.open(course_db) as kb:
        answer = AnswerEngine(kb, lambda: llm).ask(QUESTION)
    assert answer.abstained and answer.origin == "none" and answer.nearest and not answer.cited
    assert llm.calls == ["verdict", "judge"] and answer.checks["abstained_by"] == "judge"


def test_the_judge_probability_decides_not_its_word(course_db):
    with KB.open(course_db) as kb:
        doubtful = ScriptedLLM("Each tip records about 0.2 mm [1].", p_yes=0.2)  # its JSON says sufficient
        answer = AnswerEngine(kb, lambda: doubtful).ask(QUESTION)
        assert answer.abstained and answer.checks["judge"]["p_yes"] == 0.2
        assert doubtful.calls == ["verdict"]  # abstained before generating anything
        sure = ScriptedLLM("Each tip records about 0.2 mm [1].", p_yes=0.9)
        assert not AnswerEngine(kb, lambda: sure, AskSettings(min_support=0.6)).ask(QUESTION).abstained
        # Without a probability (a server without logprobs), the JSON's own verdict decides.
        unsure = ScriptedLLM("Each tip records about 0.2 mm [1].", sufficient=False)
        answer = AnswerEngine(kb, lambda: unsure).ask(QUESTION)
        assert answer.abstained and answer.checks["judge"]["quotes"] == 1 and not answer.checks["judge"]["sufficient"]


def test_retrieval_speaks_against_a_confident_yes(course_db):
    """The same P(yes) stands for a question the course's words cover and falls for one whose own
    words (a swamp, a marsh) no passage holds: the support score subtracts what retrieval knows."""
    with KB.open(course_db) as kb:
        llm = ScriptedLLM("Each tip records about 0.2 mm [1].", p_yes=0.6)
        covered = AnswerEngine(kb, lambda: llm).ask(QUESTION)
        near = AnswerEngine(kb, lambda: llm).ask("What is the residence time of water in a swamp or marsh?")
    assert not covered.abstained and covered.checks["judge"]["support"] >= AskSettings().min_support
    assert near.abstained and near.checks["abstained_by"] == "judge"
    grounds = near.checks["judge"]
    assert grounds["p_yes"] == 0.6 and grounds["covered"] < 1.0 and grounds["support"] < AskSettings().min_support
    expected = support(0.6, grounds["relevance"], grounds["covered"], grounds["best_covered"])
    assert grounds["support"] == pytest.approx(expected, abs=1e-3)


def test_the_judge_names_labelled_sentences_and_they_are_the_quotes(course_db):
    with KB.open(course_db) as kb:
        shown = AnswerEngine(kb, never)
        evidence = shown._gate(QUESTION, shown.searcher.search(QUESTION, k=8))
        first = [u for u in evidence[0].units if u != "\u2026"]
        named = '{"sentences": ["1b"], "sufficient": true}'
        llm = ScriptedLLM("A tip records about 0.2 mm of rain [1].", verdict=named)
        answer = AnswerEngine(kb, lambda: llm).ask(QUESTION, log=False)
    verdict, judge, write = llm.prompts
    # Both calls read the passages with their sentences labelled; the named one is the quote, verbatim.
    assert f"(a) {first[0]}" in judge[1]["content"] and f"(b) {first[1]}" in verdict[1]["content"]
    lead = answer.evidence[0]
    assert first[1] in lead.quotes and f'[1] "{first[1]}"' in write[-1]["content"]
    # The passage's sentence nearest the question joins the named one, in reading order.
    assert lead.nearest in lead.quotes and len(lead.quotes) == len(set(lead.quotes)) <= 3
    assert lead.quotes == sorted(lead.quotes, key=lead.units.index)


def test_a_sure_verdict_whose_judge_names_nothing_writes_from_the_passages(course_db):
    """P(yes) said the passages answer, but the judge named no sentence: the model writes from the
    passages (as --fast does) under the same checks, instead of abstaining on an answerable question."""
    llm = ScriptedLLM("A tip records about 0.2 mm [1].", verdict='{"sentences": [], "sufficient": false}', p_yes=0.9)
    with KB.open(course_db) as kb:
        answer = AnswerEngine(kb, lambda: llm).ask(QUESTION, log=False)
    assert not answer.abstained and llm.calls == ["verdict", "judge", "answer"]
    assert answer.checks["judge"]["fallback"] == "direct" and answer.checks["mode"] == "judge"
    assert "(a)" not in llm.prompts[-1][1]["content"]  # the direct prompt shows the passages plain


def test_a_judge_that_invents_its_quotes_is_not_believed(course_db):
    invented = json.dumps(
        {"quotes": [{"passage": 1, "text": "Each tip records exactly 5 litres."}], "sufficient": True}
    )
    llm = ScriptedLLM("Each tip records 5 litres [1].", verdict=invented)
    with KB.open(course_db) as kb:
        answer = AnswerEngine(kb, lambda: llm).ask(QUESTION)
    assert answer.abstained and answer.checks["judge"]["rejected_quotes"] == ["Each tip records exactly 5 litres."]


def test_models_that_cannot_judge_and_fast_mode_write_in_one_call(course_db):
    for llm, settings in [
        (ScriptedLLM("Baseflow is the part of river flow fed by groundwater [1].", judges=False), AskSettings()),
        (ScriptedLLM("Baseflow is the part of river flow fed by groundwater [1]."), AskSettings(fast=True)),
    ]:
        with KB.open(course_db) as kb:
            answer = AnswerEngine(kb, lambda llm=llm: llm, settings).ask(QUESTION)
        assert llm.calls == ["answer"] and answer.checks["mode"] == "direct" and not answer.abstained


def test_a_capable_model_declining_in_fast_mode_abstains_but_a_small_one_is_not_believed(course_db):
    declined = "The passages do not say."
    with KB.open(course_db) as kb:
        capable = AnswerEngine(kb, lambda: ScriptedLLM(declined), AskSettings(fast=True)).ask(QUESTION)
        small = AnswerEngine(kb, lambda: ScriptedLLM(declined, judges=False)).ask(QUESTION)
    assert capable.abstained and capable.checks["abstained_by"] == "model declined"
    assert not small.abstained and small.origin == "extract"


def test_without_a_judge_retrieval_abstains_when_no_sentence_holds_the_question(course_db):
    """The low-memory tier, --fast and extraction have no P(yes): a question on the course's subject
    whose words no sentence of the evidence holds is abstained on by retrieval's own figures."""
    grounds = grounding("Do rivers hold water for months?", EVIDENCE)
    assert grounds["sentence_covered"] == 1.0 and grounds["grounding"] == pytest.approx(0.75 * 0.6 + 0.25)
    assert grounding("How long do glaciers hold ice?", EVIDENCE)["sentence_covered"] == 0.25
    for settings, llm in [(AskSettings(extract_only=True), None), (AskSettings(), ScriptedLLM("x [1].", judges=False))]:
        with KB.open(course_db) as kb:
            engine = AnswerEngine(kb, (lambda llm=llm: llm) if llm else never, settings)
            # With the test's hash embedder the best passage found holds no "baseflow".
            thin = engine.ask("What is baseflow?", log=False)
            held = engine.ask(QUESTION, log=False)
        assert thin.abstained and thin.checks["abstained_by"] == "grounding"
        assert thin.checks["grounding"]["grounding"] < settings.min_grounding
        assert not held.abstained and held.checks["grounding"]["grounding"] >= settings.min_grounding
        assert llm is None or llm.calls == ["answer"]  # the model wrote only the answer it was let give


def test_extraction_alone_needs_no_model(course_db):
    with KB.open(course_db) as kb:
        answer = AnswerEngine(kb, never, AskSettings(extract_only=True)).ask(QUESTION)
    assert answer.origin == "extract" and answer.cited and "[1]" in answer.text


def test_model_failure_leaves_no_log_row(course_db):
    with KB.open(course_db) as kb:
        engine = AnswerEngine(kb, lambda: ScriptedLLM("", fail=True))
        with pytest.raises(LLMError):
            engine.ask(QUESTION)
        assert kb.conn.execute("SELECT count(*) FROM answers").fetchone()[0] == 0


def test_passages_are_trimmed_to_the_budget(course_db):
    llm = ScriptedLLM("Baseflow is fed by groundwater [1].")
    with KB.open(course_db) as kb:
        engine = AnswerEngine(kb, lambda: llm, AskSettings(excerpt_chars=600))
        answer = engine.ask("What is baseflow?")
    assert answer.evidence and all(len(e.excerpt) <= 600 // len(answer.evidence) + 400 for e in answer.evidence)
    shown = llm.prompts[1][-1]["content"]
    assert "<passages>" in shown and "Question: What is baseflow?" in shown


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
        assert not engine.ask(QUESTION).warnings


def test_a_model_too_large_for_memory_is_refused_before_loading(tmp_path, monkeypatch):
    import kb.llm

    model = tmp_path / "big.gguf"
    with model.open("wb") as handle:
        handle.write(b"GGUF")
        handle.truncate(64 * 2**20)  # sparse: 64 MB on paper
    monkeypatch.setattr(kb.llm, "_available_memory", lambda: 16 * 2**20)
    with pytest.raises(LLMError, match="needs about .* GB of memory"):
        kb.llm.LlamaCppLLM(model_path=model)


def test_a_bare_yes_opening_the_answer_is_kept_with_the_checked_sentences():
    raw = "Yes. Water stays in the atmosphere for about 9 days [1]. The Moon makes tides [2]."
    answer = check_answer("Does water stay in the atmosphere for days?", raw, EVIDENCE)
    assert answer.text == "Yes. Water stays in the atmosphere for about 9 days [1]."
    unsupported = check_answer("Does the Moon make tides?", "Yes. The Moon makes tides [2].", EVIDENCE)
    assert unsupported.origin == "extract" and not unsupported.text.startswith("Yes")


def test_a_yes_no_answer_that_says_the_question_back_is_a_claim():
    # Seen on BoolQ: "Yes, <the question as a statement> [1]." was skipped as the question said back,
    # and the learner got extracted sentences with no yes or no.
    question = "Does water stay in the atmosphere for about 9 days?"
    answer = check_answer(question, "Yes, water stays in the atmosphere for about 9 days [1].", EVIDENCE)
    assert answer.origin == "model" and answer.text == "Yes, water stays in the atmosphere for about 9 days [1]."
    # The words after the "Yes" must still be backed by the passage cited.
    moon = check_answer("Does the Moon make two tides a day?", "Yes, the Moon makes two tides a day [1].", EVIDENCE)
    assert moon.origin == "extract"
    # To a question that is not yes/no, saying it back is still no answer.
    said_back = check_answer(
        "How long does water stay in the atmosphere?", "Water stays in the atmosphere [1].", EVIDENCE
    )
    assert said_back.origin == "extract"


def test_a_reply_that_is_only_yes_keeps_its_yes_before_the_passages_words():
    question = "Does water stay in the atmosphere for about 9 days?"
    bare = check_answer(question, "Yes.", EVIDENCE)
    assert bare.origin == "extract" and bare.text.startswith("Yes. ") and "[1]" in bare.text
    # A "Yes" whose own sentence failed its check is not the model's last word.
    failed = check_answer(question, "Yes. The Moon pulls the oceans into two tidal bulges [2].", EVIDENCE)
    assert failed.origin == "extract" and not failed.text.startswith("Yes")


# -- what open textbooks interleave with their prose ---------------------------------------------------


def test_picture_credits_never_reach_the_engine_and_the_prose_around_them_stays():
    """CK-12 and OpenStax pages carry picture credits between their sentences; an extractive answer
    quoted one ("Flickr: EvelynGiggles, modified by CK-12 Foundation [1]. Antifreeze raises ...")."""
    from kb.injection import as_evidence
    from kb.text import without_credits

    text = (
        "Antifreeze raises the boiling point of the coolant.\nFlickr: EvelynGiggles, modified by CK-12 Foundation.\n"
        "Salt lowers the freezing point of water (credit: modification of work by Kerry Ceszyk). Public Domain. "
        "(credit a: Kevin MacKenzie). A courtesy call is not a credit."
    )
    assert without_credits(text) == (
        "Antifreeze raises the boiling point of the coolant.\n\n"
        "Salt lowers the freezing point of water. A courtesy call is not a credit."
    )
    plain = "Photosynthesis makes sugar. Credit unions are banks. Public domain works are free to copy."
    assert without_credits(plain) == plain  # a credit is a parenthesis or a whole credit line, not a word
    hit = make_evidence(text)[0].hit
    (cleaned,) = as_evidence([hit])
    assert cleaned.text == without_credits(text)
    chosen = [s for _, s in extract("What does antifreeze do?", [Evidence(key=1, hit=cleaned, score=6.0)])]
    assert chosen and not any("CK-12" in s for s in chosen)


def test_a_bullet_inside_a_line_starts_a_sentence():
    """Text from a PDF or a collapsed web page keeps its bullets inline: a learning-objectives list must
    not make one 300-character "sentence" that an extractive answer quotes whole."""
    found = sentences(
        "3.6 Active Transport. You will be able to: \u2022 Explain gradients \u2022 Describe endocytosis "
        "Active transport uses ATP. Next."
    )
    assert found == [
        "3.6 Active Transport.",
        "You will be able to:",
        "\u2022 Explain gradients",
        "\u2022 Describe endocytosis Active transport uses ATP.",
        "Next.",
    ]
