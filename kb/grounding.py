"""Checks in code that an answer is backed by its evidence, sentence by sentence.

These decide what an answer may claim, so that trust never rests on a small model's judgement. A
sentence stands when the passage it cites backs it: most of its words are in one sentence (or a
pair of neighbouring sentences) of that passage, or, for a sentence in the model's own words, enough
of them are and the embedding model finds the two close in meaning. A number the passage does not
state never stands. Uncited sentences that a passage backs strongly are given that citation;
repetitions, loops and sentences cut off mid-thought are removed. When nothing stands, the answer is
the evidence's own words: the learner never gets a claim the sources do not make.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from .prompts import POLAR
from .search import STOPWORDS
from .text import (
    bracket_citations,
    citation_keys,
    citations_inside,
    numbers,
    sentences,
    sentences_and_pairs,
    strip_citations,
    with_citations,
)
from .types import Answer, Evidence

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def stem(word: str) -> str:
    """A crude stem, enough to match 'gauges' with 'gauge' and 'infiltrates' with 'infiltration'."""
    word = word.lower()
    return word[:6] if len(word) > 6 else word.rstrip("s") or word


def content_words(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text) if w.lower() not in STOPWORDS and (len(w) > 2 or w.isdigit())]


def coverage(text: str, source: str) -> float:
    """Share of `text`'s content words that occur in `source` (0.0 for text with no content words)."""
    words = content_words(text)
    if not words:
        return 0.0
    vocabulary = set(content_words(source))
    return sum(1 for w in words if w in vocabulary) / len(words)


def unique(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(values))


class Passage:
    """Evidence text prepared for checking claims against it, sentence by sentence."""

    def __init__(self, text: str):
        self.units = [(set(content_words(u)), numbers(u)) for u in sentences_and_pairs(text)]

    def support(self, claim: str) -> float:
        """Share of the claim's words found in the passage's best sentence (or sentence pair).

        A sentence that lacks a number the claim states does not back it: small models swap
        figures between neighbouring facts (the US gauge's 8 inches for the UK gauge's 5).
        """
        words = content_words(claim)
        if not words:
            return 0.0
        stated = numbers(claim)
        best = 0.0
        for vocabulary, unit_numbers in self.units:
            if stated - unit_numbers:
                continue
            best = max(best, sum(w in vocabulary for w in words) / len(words))
        return best


def unfinished(sentence: str) -> bool:
    """A sentence cut off or ending on a colon that introduced what it does not carry ("... like this:")."""
    claim = strip_citations(sentence).rstrip()
    return not claim or claim[-1] not in ".!?\"')\u201d" or claim.endswith((":", ",", ";"))


def same_claim(a: str, b: str) -> bool:
    """Whether two sentences say nearly the same (content words' Jaccard >= 0.6): a repetition."""
    wa, wb = set(content_words(a)), set(content_words(b))
    if not wa or not wb:
        return a.strip().lower() == b.strip().lower()
    return len(wa & wb) / len(wa | wb) >= 0.6


def looping(text: str, n: int = 6, times: int = 3) -> bool:
    """True when the text's last `n` words have already occurred `times` times: a degenerate loop.

    Used while streaming, so a model stuck repeating itself is stopped instead of running to its
    token limit.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < n * times:
        return False
    tail = words[-n:]
    seen = sum(1 for i in range(len(words) - n + 1) if words[i : i + n] == tail)
    return seen >= times


_DECLINE = re.compile(
    r"\b(does not|doesn't|do not|don't|cannot|can't|no)\b.{0,40}\b(answer|say|mention|contain|provide)", re.I
)


def declines(text: str) -> bool:
    """Whether a model's reply says the passages do not answer ("The passages do not say.")."""
    return bool(_DECLINE.search(text))


_SOURCE = r"(?:the\s+|this\s+)?(?:passages?|quotes?|sentences?|text|course)(?:\s*\[?\d+[a-z]?\]?)?"
_SAYS = r"(?:also\s+)?(?:states?|says?|explains?|mentions?|notes?|shows?|indicates?|describes?|tells us)"
_FRAME = re.compile(
    r"^[\s\"\u201c]*(?:\(?\d{1,2}[a-z]\)?\s*:\s*"  # a judge's label said back ("1b: ...")
    rf"|{_SOURCE}\s+{_SAYS}"
    r"\s+(?:that\s+)?"
    rf"|(?:according\s+to|as\s+stated\s+in)\s+{_SOURCE}\s*,\s*)",
    re.I,
)
_ABOUT_QUOTES = re.compile(r"^\s*(?:the\s+)?quotes?\b", re.I)
_JOINT = re.compile(
    rf"[\"\u201d]?\s*,?\s+and\s+{_SOURCE}\s+{_SAYS}\s+(?:that\s+)?"
    r"[\"\u201c]",  # the quote it opens: "and the text says that" in a course's own words is prose
    re.I,
)
"""Two quotes joined by a frame inside one sentence ('X:" and the passage states that "Y [1].'): two claims."""


def unframed(claim: str) -> str:
    """A claim without the frame a model puts around it ("The passage states that X" -> "X"): the
    learner asked about X, and "the passage" is not something they were shown."""
    found = _FRAME.match(claim)
    if not found or found.end() >= len(claim):
        return claim
    rest = claim[found.end() :].lstrip(' "\u201c')  # and the quote mark it opened on ('states that "X')
    return rest[:1].upper() + rest[1:] if rest else claim


# -- an answer's sentences against what they cite ---------------------------------------------

Similarity = Callable[[str, list[str]], list[float]]
"""similarity(text, candidates) -> the cosine similarity of `text` to each candidate."""

MAX_ANSWER_SENTENCES = 4
CITED_SUPPORT = 0.7
"""A sentence stands on words alone when this share of its words is in one sentence (or pair) it cites."""
UNCITED_SUPPORT = 0.8
"""An uncited sentence needs stronger support to be given a citation by kb."""
PARAPHRASE_WORDS = 0.4
PARAPHRASE_MEANING = 0.72
"""A sentence in the model's own words stands when at least PARAPHRASE_WORDS of its words are in the
passage and its embedding is at least this close (cosine, all-MiniLM-L6-v2) to one sentence (or
pair) of it. Measured on the sample course and SciQ: supported paraphrases score 0.75-0.95,
a true sentence about something else 0.3-0.6."""
REPEATS_BEFORE_CUT = 2
"""This many repeated sentences mean the model is looping: everything after is cut."""

_POLAR_START = re.compile(r"\s*(yes|no)\s*[.!]", re.I)
_POLAR_WORD = re.compile(r"^\s*(?:yes|no)\b[,.!;:]?\s*", re.I)


class Support:
    """Checks claims against the kept evidence, by words and (when given) by meaning."""

    def __init__(self, evidence: list[Evidence], similarity: Similarity | None = None):
        self.by_key = {e.key: e for e in evidence}
        self.passages = {e.key: Passage(e.hit.text) for e in evidence}
        self.units = {e.key: sentences_and_pairs(e.hit.text) for e in evidence}
        self.similarity = similarity

    def words(self, key: int, claim: str) -> float:
        return self.passages[key].support(claim)

    def stands(self, key: int, claim: str, words_needed: float = CITED_SUPPORT) -> bool:
        """Whether passage `key` backs `claim`."""
        lexical = self.words(key, claim)
        if lexical >= words_needed:
            return True
        if self.similarity is None or lexical < PARAPHRASE_WORDS:
            return False
        # Meaning may stand in for words, never for figures: every number must be in the passage.
        text = self.by_key[key].hit.text
        if numbers(claim) - numbers(text):
            return False
        units = self.units[key]
        return bool(units) and max(self.similarity(claim, units)) >= PARAPHRASE_MEANING

    def best(self, claim: str) -> int | None:
        """The passage that backs an uncited claim strongly, if one does."""
        key = max(self.by_key, key=lambda k: self.words(k, claim))
        return key if self.stands(key, claim, UNCITED_SUPPORT) else None


def claims_of(question: str, raw: str, support: Support) -> tuple[list[tuple[str, list[int]]], dict[str, list[str]]]:
    """The sentences of `raw` that stand, with the keys that back each; and why the others went."""
    asked = set(content_words(question))
    # To a yes/no question the answer is the question said back as a statement ("Yes, anacondas
    # live in the Amazon rainforest"): a claim there, to be checked like any other.
    polar = bool(POLAR.match(question.strip()))
    dropped: dict[str, list[str]] = {}
    claims: list[tuple[str, list[int]]] = []
    repeats = 0
    found = sentences(_JOINT.sub("\n\n", citations_inside(bracket_citations(raw, support.by_key))))
    for index, sentence in enumerate(found):
        claim = unframed(strip_citations(sentence))
        if _ABOUT_QUOTES.match(claim):
            dropped.setdefault("about_quotes", []).append(claim)  # "The quote ... is not relevant"
            continue
        # The leading "Yes," is the model's word on the question; the passage backs what follows.
        body = _POLAR_WORD.sub("", claim, count=1)
        words = content_words(body)
        if claim.endswith("?") or len(words) < 3 or (not polar and not [w for w in words if w not in asked]):
            continue  # not a claim: a question, a fragment, or the question said back
        if claim.count("(") != claim.count(")") or unfinished(sentence):
            # Cut off by the token limit, or ending on a colon that introduced what it does not carry.
            dropped.setdefault("unfinished", []).append(claim)
            continue
        if any(same_claim(claim, kept) for kept, _ in claims):
            repeats += 1
            dropped.setdefault("repeated", []).append(claim)
            if repeats >= REPEATS_BEFORE_CUT:
                dropped.setdefault("loop_cut", []).extend(strip_citations(s) for s in found[index + 1 :])
                break
            continue
        keys = [k for k in unique(citation_keys(sentence)) if k in support.by_key]
        backed = [k for k in keys if support.stands(k, body)]
        if not backed:
            best = support.best(body)
            backed = [best] if best is not None else []
        if not backed:
            dropped.setdefault("unsupported", []).append(claim)
            continue
        claims.append((claim, backed))
    return claims[:MAX_ANSWER_SENTENCES], dropped


def extract(
    question: str, evidence: list[Evidence], similarity: Similarity | None = None, limit: int = 2
) -> list[tuple[int, str]]:
    """The evidence sentences that best answer the question, as (key, sentence), in reading order.

    The model's checked quotes come first when there are any; otherwise sentences are scored by the
    embedding model's similarity to the question plus the words they share with it. A sentence
    repeated by overlapping chunks is taken once.
    """
    quoted = [(e.key, q) for e in evidence for q in e.quotes]
    if quoted:
        return quoted[: limit + 1]
    candidates: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for piece in evidence:
        for position, sentence in enumerate(sentences(piece.hit.text)):
            if sentence not in seen and len(content_words(sentence)) >= 3:
                seen.add(sentence)
                candidates.append((piece.key, position, sentence))
    if not candidates:
        # Only short lines (a formula, a slide title): take the best piece's text as it is.
        first = evidence[0] if evidence else None
        text = " ".join(first.hit.text.split())[:400] if first else ""
        return [(first.key, text)] if text else []
    asked = set(content_words(question))
    overlap = [len(asked & set(content_words(c[2]))) / max(1, len(asked)) for c in candidates]
    scores = similarity(question, [c[2] for c in candidates]) if similarity else [0.0] * len(candidates)
    order = sorted(range(len(candidates)), key=lambda i: -(scores[i] + 0.5 * overlap[i]))[:limit]
    return [(candidates[i][0], candidates[i][2]) for i in sorted(order, key=lambda i: candidates[i][:2])]


def check_answer(question: str, raw: str, evidence: list[Evidence], similarity: Similarity | None = None) -> Answer:
    """Keep the sentences of `raw` that the evidence they cite backs; else answer with the evidence's words.

    A citation to a key that names no evidence is dropped; a sentence with no valid key is matched to
    the evidence that backs it strongly, if any; a sentence backed by none is dropped.
    """
    support = Support(evidence, similarity)
    claims, dropped = claims_of(question, raw, support)
    origin = "model"
    restored = _restore_point(question, claims, evidence) if claims else None
    if restored:
        claims = [restored, *claims][:MAX_ANSWER_SENTENCES]
    if claims:
        text = " ".join(with_citations(claim, keys) for claim, keys in claims)
        cited = [k for _, keys in claims for k in keys]
    else:
        origin = "extract"
        chosen = extract(question, evidence, similarity)
        text = " ".join(with_citations(sentence, [key]) for key, sentence in chosen)
        cited = [key for key, _ in chosen]
    text = _with_polar_word(raw, text, extracted=not claims, dropped=bool(dropped))
    answer = Answer(
        question=question,
        text=text,
        abstained=False,
        evidence=evidence,
        cited=[support.by_key[k] for k in unique(cited)],
        origin=origin,
        raw_text=raw,
        raw_citations=citation_keys(raw),
    )
    answer.checks = {"dropped": dropped} if dropped else {}
    if restored:
        answer.checks["restored"] = restored[0]
    return answer


QUESTION_FRAME = frozenset(
    stem(w)
    for w in (
        "type kind term called known name named process example describe used form part word mean "
        "roughly approximately long much many often usually typically generally"
    ).split()
)
"""Words that frame a question rather than name its subject ("what type of ...", "is known as", "roughly how long")."""


def _restore_point(question: str, claims: list[tuple[str, list[int]]], evidence: list[Evidence]):
    """The checked quote that holds words of the question the answer dropped, to lead the answer.

    The model, writing from the quotes, sometimes paraphrases the wrong one and loses the point:
    given "a separate perched water table forms..." and "The water table is not flat...", it wrote
    only the second for "What is a perched water table?"; on SciQ, "What is the members of the
    clade vertebrata known as?" got a sentence about the vertebral column. When the quotes hold a
    word of the question (framing words aside) that no sentence of the answer holds, the quote that
    holds most of them leads the answer, in the passage's own words. When no quote does, the first
    passage's other shown sentences may: the judge named "The uranium atoms are split apart..." for
    "What type of power is generated by splitting uranium atoms?", passing over "Nuclear power plants
    use uranium...", the sentence before it. None when nothing is missing.
    """
    asked = set(content_words(question)) - QUESTION_FRAME
    written = {w for claim, _ in claims for w in content_words(claim)}
    quoted = [(quote, piece.key) for piece in evidence for quote in piece.quotes]
    # The passage's own sentences, as shown; its skipped-stretch marks hold no word and never win.
    shown = [(unit, evidence[0].key) for unit in evidence[0].units] if evidence else []
    for candidates in (quoted, shown):
        best, best_missing = None, 0
        for sentence, key in candidates:
            missing = len((asked & set(content_words(sentence))) - written)
            if missing > best_missing:
                best, best_missing = (sentence, [key]), missing
        if best is not None:
            return None if any(same_claim(best[0], claim) for claim, _ in claims) else best
    return None


def _with_polar_word(raw: str, text: str, extracted: bool, dropped: bool) -> str:
    """A bare "Yes." or "No." opening the reply is no claim of its own, but it is the answer to a
    yes/no question: it leads the checked sentences. Before the passages' own words (the fallback)
    only when the reply was that word alone (seen on BoolQ): a "Yes" whose own sentences failed their
    checks is not kept."""
    polar = _POLAR_START.match(raw)
    if not polar or text.lower().startswith(polar.group(1).lower()):
        return text
    if extracted and (dropped or strip_citations(raw[polar.end() :]).strip()):
        return text
    return f"{polar.group(1).capitalize()}. {text}"
