"""Checks in code that text is backed by evidence: word overlap, sentence picking, citation keys.

These decide what an answer may claim, so that trust never rests on a small model's judgement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .search import STOPWORDS

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
CITATION = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")


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


def sentences(text: str) -> list[str]:
    out = []
    for paragraph in re.split(r"\n\s*\n|\n(?=[-*\u2022] )", text):
        paragraph = " ".join(paragraph.split())
        out.extend(s.strip() for s in _SENTENCE.split(paragraph) if s.strip())
    return out


def citation_keys(text: str) -> list[int]:
    keys: list[int] = []
    for group in CITATION.findall(text):
        keys.extend(int(k) for k in re.split(r"\s*[,;]\s*", group))
    return keys


_PAREN_CITATION = re.compile(r"\s*\((\d{1,3}(?:\s*,\s*\d{1,3})*)\)")


def bracket_citations(text: str, keys) -> str:
    """ "(1)" written for "[1]" (the instruct model does so now and then), as "[1]": only when every
    number in it is a passage key, so "equation (7)" in a reply over three passages stays as it is."""

    def bracketed(match: re.Match) -> str:
        numbers = [int(n) for n in re.split(r"\s*,\s*", match.group(1))]
        return f" [{', '.join(map(str, numbers))}]" if all(n in keys for n in numbers) else match.group(0)

    return _PAREN_CITATION.sub(bracketed, text)


def strip_citations(text: str) -> str:
    return " ".join(re.sub(r"\s*" + CITATION.pattern, "", text).split())


def with_citations(claim: str, keys: list[int]) -> str:
    """`claim` with its keys before the closing punctuation: "... 9 days [1]."."""
    marks = "".join(f"[{k}]" for k in keys)
    claim = claim.rstrip()
    if claim and claim[-1] in ".!?":
        return f"{claim[:-1]} {marks}{claim[-1]}"
    return f"{claim} {marks}"


def unique(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(values))


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


class Passage:
    """Evidence text prepared for checking claims against it, sentence by sentence."""

    def __init__(self, text: str):
        found = sentences(text)
        # Windows of two neighbouring sentences: a claim may join what two sentences say.
        units = found + [f"{a} {b}" for a, b in zip(found, found[1:])]
        self.units = [(set(content_words(u)), set(_NUMBER.findall(u))) for u in units]

    def support(self, claim: str) -> float:
        """Share of the claim's words found in the passage's best sentence (or sentence pair).

        A sentence that lacks a number the claim states does not back it: small models swap
        figures between neighbouring facts (the US gauge's 8 inches for the UK gauge's 5).
        """
        words = content_words(claim)
        if not words:
            return 0.0
        numbers = set(_NUMBER.findall(claim))
        best = 0.0
        for vocabulary, unit_numbers in self.units:
            if numbers - unit_numbers:
                continue
            best = max(best, sum(w in vocabulary for w in words) / len(words))
        return best


_TRAILING_MARKS = re.compile(r"([.!?])\s*((?:\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]\s*)+)")


def citations_inside(text: str) -> str:
    """Move citations written after a sentence's full stop ("... days. [1]") before it ("... days [1]."),
    so that each citation stays with the sentence it belongs to when the text is split."""
    return _TRAILING_MARKS.sub(lambda m: " " + " ".join(m.group(2).split()) + m.group(1) + " ", text).strip()


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
