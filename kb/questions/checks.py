"""The checks a study question must pass before it is kept, cheapest first; each failure has a reason.

Trust rests on code, as for answers (kb/checks.py, kb/evidence.py): the quote must occur in the
question's chunk and back its answer by the same word-overlap test answers pass; kb's own answer
engine, asked the question over the whole KB, must answer it from that chunk or from one that says
the same. Multiple choice follows auto-rag-eval's exam rules (four distinct options, one correct,
the correct one not given away by its length or position).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..evidence import normalise, occurs
from ..grounding import CITED_SUPPORT, PARAPHRASE_MEANING, PARAPHRASE_WORDS, Passage, Similarity, content_words
from .types import Question

LEANING = re.compile(
    r"\b(according to (the|this) (passage|text|section|excerpt|document|lecture|article|author|course)"
    r"|(in|from) (the|this) (passage|text|section|excerpt|document|above)"
    r"|the (text|excerpt|author|writer)\b"
    r"|\bthis (handout|passage|text|section|chapter|lecture|document|page|guide|excerpt|article|slide)\b"
    r"|(mentioned|stated|described|given) (above|here|earlier)"
    r"|as (stated|mentioned|described))",
    re.I,
)
"""Phrases that make a question lean on a passage the learner does not see."""

LONGEST_MARGIN = 1.3
"""The correct option is guessable when it is longer than every wrong one by more than this factor."""
DUPLICATE_SIMILARITY = 0.9
"""Cosine similarity (all-MiniLM-L6-v2, question and answer together) at which a question repeats another."""
BLANKS = re.compile(r"_{3,}")


def leans_on_text(question: Question) -> bool:
    return bool(LEANING.search(question.question) or LEANING.search(" ".join(question.options)))


def supported(claim: str, quote: str, similarity: Similarity | None = None) -> float:
    """How well `quote` backs `claim`: the share of its words in the quote (answers' test), or the
    paraphrase threshold when the embedding model finds the two close in meaning."""
    lexical = Passage(quote).support(claim)
    if lexical >= CITED_SUPPORT or similarity is None or lexical < PARAPHRASE_WORDS:
        return lexical
    return CITED_SUPPORT if max(similarity(claim, [quote]), default=0.0) >= PARAPHRASE_MEANING else lexical


def _words(text: str) -> set[str]:
    return set(content_words(text))


def grounding(question: Question, chunk: str, similarity: Similarity | None = None) -> str | None:
    """The quote occurs in the chunk and backs the answer; the form fits the kind. A reason, or None."""
    q = question
    if not q.question.strip() or not q.quote.strip() or (q.kind != "truefalse" and not q.answer.strip()):
        return "malformed"
    if leans_on_text(q):
        return "leans_on_text"
    if q.kind == "cloze":
        blanks = len(BLANKS.findall(q.question))
        q.checks["blanks"] = blanks
        if blanks != 1:
            return "cloze_blanks"
    if not occurs(q.quote, chunk):
        q.checks["quote_in_chunk"] = False
        return "quote_not_in_chunk"
    q.checks["quote_in_chunk"] = True
    if q.kind == "mcq":
        reason = multiple_choice(q)
        if reason:
            return reason
    if q.kind == "truefalse":
        if q.answer not in ("true", "false"):
            return "malformed"
        support = Passage(q.quote).support(q.question)
        q.checks["statement_support"] = round(support, 3)
        shared = len(_words(q.question) & _words(chunk)) / max(1, len(_words(q.question)))
        # True: the quote says it. False: it is about the passage's fact (its words are the passage's),
        # and the quote does not back all of it.
        if q.answer == "true" and supported(q.question, q.quote, similarity) < CITED_SUPPORT:
            return "answer_not_in_quote"
        if q.answer == "false" and (support >= 1.0 or shared < 0.5):
            return "answer_not_in_quote"
        return None
    if q.kind == "cloze":
        filled = BLANKS.sub(lambda m: q.answer, q.question, count=1)
        if not occurs(filled, chunk) or normalise(q.answer) not in normalise(q.quote):
            return "answer_not_in_quote"
        return None
    support = supported(q.correct_text, q.quote, similarity)
    q.checks["answer_support"] = round(support, 3)
    if support < CITED_SUPPORT:
        return "answer_not_in_quote"
    answer_words = _words(q.correct_text)
    if answer_words and answer_words <= _words(q.question):
        return "answer_in_question"
    return None


def multiple_choice(q: Question) -> str | None:
    """Four distinct options, exactly one backed by the quote, the correct one not the longest by a margin."""
    options = [" ".join(o.split()) for o in q.options]
    if len(options) != 4 or len({normalise(o).strip(" .") for o in options}) != 4 or not all(options):
        return "options"
    if q.correct is None or not 0 <= q.correct < 4 or normalise(options[q.correct]) != normalise(q.answer):
        return "not_one_correct"
    quote = Passage(q.quote)
    # A wrong option whose every word the quote holds is a second right answer ("127 mm" beside "5 inches").
    also = [o for i, o in enumerate(options) if i != q.correct and content_words(o) and quote.support(o) >= 1.0]
    also += [o for i, o in enumerate(options) if i != q.correct and normalise(q.answer) in normalise(o)]
    if also:
        q.checks["also_correct"] = also
        return "not_one_correct"
    wrong = max(len(o) for i, o in enumerate(options) if i != q.correct)
    q.checks["length_ratio"] = round(len(options[q.correct]) / max(1, wrong), 2)
    if len(options[q.correct]) > LONGEST_MARGIN * wrong:
        return "longest_correct"
    return None


def asked_text(q: Question) -> str:
    """What the answer engine is asked: the question as a learner would put it to the course."""
    if q.kind == "truefalse":
        return f"True or false: {q.question}"
    if q.kind == "cloze":
        return f"Fill in the blank: {BLANKS.sub('what', q.question, count=1)}"
    return q.question


def answered_by_engine(q: Question, ask: Callable[[str], Any]) -> str | None:
    """kb's answer engine, asked the question over the whole KB, cites its chunk or one that agrees."""
    answer = ask(asked_text(q))
    cited = [e.hit for e in answer.cited]
    q.checks["engine"] = {
        "answer": answer.text,
        "abstained": answer.abstained,
        "cited": [h.chunk_id for h in cited],
        "origin": answer.origin,
    }
    if answer.abstained or not cited:
        return "kb_abstained"
    if q.chunk_id in q.checks["engine"]["cited"]:
        q.checks["engine"]["agrees"] = "its own passage"
        return None
    for hit in cited:
        # Another passage answers it the same way: it holds the quote (chunks overlap), or backs the answer.
        if occurs(q.quote, hit.text) or (
            q.kind != "truefalse" and Passage(hit.text).support(q.correct_text) >= CITED_SUPPORT
        ):
            q.checks["engine"]["agrees"] = f"passage {hit.chunk_id}"
            return None
    return "answered_elsewhere"


class Duplicates:
    """Kept questions' embeddings: a new one too close to any of them is a near-duplicate."""

    def __init__(self, embed: Callable[[str], Any]):
        self.embed = embed
        self.kept: list[tuple[Question, Any]] = []

    @staticmethod
    def text(q: Question) -> str:
        return f"{q.question} {q.correct_text}"

    def add(self, q: Question) -> None:
        self.kept.append((q, self.embed(self.text(q))))  # the question itself: its id comes when it is saved

    def check(self, q: Question) -> str | None:
        import numpy as np

        if not self.kept:
            return None
        vector = np.asarray(self.embed(self.text(q)), dtype=np.float32)
        scores = [float(np.asarray(v, dtype=np.float32) @ vector) for _, v in self.kept]
        best = int(np.argmax(scores))
        q.checks["nearest_similarity"] = round(scores[best], 3)
        if scores[best] >= DUPLICATE_SIMILARITY:
            q.checks["duplicate_of"] = self.kept[best][0].id
            return "duplicate"
        return None
