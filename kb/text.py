"""Text as kb reads and writes it: sentences, citation markers, numbers, and times as people say them.

One definition of each, so that what the checks split, the engine counts, the API renders and the
reports print agree. Nothing here knows about models, KBs or evidence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# -- sentences -----------------------------------------------------------------------------------

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
"""Between two sentences: after a full stop, ! or ?, before what can begin one ("e.g. rain" stays whole)."""
PACKING_BREAK = re.compile(r"(?<=[.!?])\s+")
"""Every space after a full stop, ! or ?: the chunker packs text in these pieces (a chunk boundary there
never cuts a sentence; a piece may end on an abbreviation, which costs nothing)."""
SENTENCE_END = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])?\s")
"""The end of a sentence as a model writes it, citation markers included ("... days [1]. ")."""
_ANY_SCRIPT_SENTENCE = re.compile(r"[^\n.!?。！？]*(?:[.!?。！？]+(?=\s|$|[\"'\)\]])|[。！？]+|\n|$)")
"""A sentence in the scripts kb's injection patterns know (Latin, Cyrillic, CJK full stops), or a line."""


def sentences(text: str) -> list[str]:
    """The sentences of `text`, paragraphs and bulleted lines never joined, whitespace collapsed.

    A bullet mark inside a line ("... you will be able to: \u2022 Understand ... \u2022 Describe ...", as text
    extracted from a PDF or a collapsed web page has it) also starts a new sentence."""
    out = []
    for paragraph in re.split(r"\n\s*\n|\n(?=[-*\u2022] )|\s(?=\u2022\s)", text):
        paragraph = " ".join(paragraph.split())
        out.extend(s.strip() for s in SENTENCE_BREAK.split(paragraph) if s.strip())
    return out


def sentences_and_pairs(text: str) -> list[str]:
    """The sentences of `text` and each two neighbours joined: a claim may join what two sentences say."""
    found = sentences(text)
    return found + [f"{a} {b}" for a, b in zip(found, found[1:])]


def sentence_ends(text: str) -> int:
    """How many sentences a model's text has finished so far."""
    return len(SENTENCE_END.findall(text + " "))


def sentence_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each sentence of `text`, covering it whole (separators belong to the sentence before)."""
    position = 0
    for match in _ANY_SCRIPT_SENTENCE.finditer(text):
        if match.end() == position and match.start() == position:
            if position >= len(text):
                break
            continue
        end = match.end()
        # The spaces after a sentence belong to it, so removing it leaves the text readable.
        while end < len(text) and text[end] in " \t":
            end += 1
        if end > position:
            yield position, end
            position = end
    if position < len(text):
        yield position, len(text)


# -- picture credits ------------------------------------------------------------------------------

_CREDIT_PAREN = re.compile(
    r"\s*\((?:image\s+|photo\s+)?credits?\b[^()\n]{0,600}(?:\([^()\n]{0,200}\)[^()\n]{0,600}){0,5}\)", re.I
)
"""An OpenStax-style credit in parentheses: "(credit: modification of work by Kerry Ceszyk)"."""
_CREDIT_LINE = re.compile(
    r"^(?:public domain\.?$|(?:image |photo )?courtesy of\b|flickr:|photo(?:graph)? by\b"
    r"|.{0,200}\bmodified by ck-12 foundation)[^.!?]{0,200}[.!?]?$",
    re.I,
)
"""A sentence that only credits a picture: "Flickr: EvelynGiggles, modified by CK-12 Foundation." """
_CREDIT_HINT = re.compile(r"credit|public domain|courtesy of|flickr:|photo|ck-12", re.I)
"""A cheap pre-filter: most passages hold none of these words and are returned untouched."""


def without_credits(text: str) -> str:
    """`text` without its picture credits, which open-textbook pages (CK-12, OpenStax) interleave with
    the prose they illustrate: not a claim anything can be cited for, and a sentence an extractive
    answer would otherwise quote ("Flickr: EvelynGiggles, modified by CK-12 Foundation [1].").
    Everything else is left exactly as written."""
    if not _CREDIT_HINT.search(text):
        return text
    kept = []
    for start, end in sentence_spans(text):
        piece = _CREDIT_PAREN.sub("", text[start:end])
        if not any(ch.isalnum() for ch in piece) or _CREDIT_LINE.match(piece.strip()):
            # The line break a dropped sentence ended with still separates what stood around it.
            kept.append("\n" if "\n" in text[start:end] else "")
            continue
        kept.append(piece)
    return "".join(kept)


# -- citation markers ----------------------------------------------------------------------------

CITATION = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")
"""A citation as models write it: "[1]", "[1, 2]", "[1; 3]"."""
_PAREN_CITATION = re.compile(r"\s*\((\d{1,3}(?:\s*,\s*\d{1,3})*)\)")
_TRAILING_MARKS = re.compile(r"([.!?])\s*((?:\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]\s*)+)")
MARKER = re.compile(r"\[(\d+)\]")
"""One citation marker as kb writes it in the API's answers, one key each."""
_MARKER_GROUP = re.compile(r"\[(\d+(?:\s*,\s*\d+)+)\]")


def citation_keys(text: str) -> list[int]:
    """Every key cited in `text`, in order, repeats kept."""
    keys: list[int] = []
    for group in CITATION.findall(text):
        keys.extend(int(k) for k in re.split(r"\s*[,;]\s*", group))
    return keys


def bracket_citations(text: str, keys: Iterable[int]) -> str:
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


def citations_inside(text: str) -> str:
    """Move citations written after a sentence's full stop ("... days. [1]") before it ("... days [1]."),
    so that each citation stays with the sentence it belongs to when the text is split."""
    return _TRAILING_MARKS.sub(lambda m: " " + " ".join(m.group(2).split()) + m.group(1) + " ", text).strip()


def one_key_per_marker(text: str) -> str:
    """ "[1, 2]" as "[1][2]", so that each marker spans one citation."""
    return _MARKER_GROUP.sub(lambda m: "".join(f"[{k}]" for k in re.findall(r"\d+", m.group(1))), text)


# -- numbers -------------------------------------------------------------------------------------

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
"""A figure as a claim states it ("8", "1,435", "9.5"): a claim may not state one its passage lacks."""


def numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text))


# -- times ---------------------------------------------------------------------------------------


def clock(seconds: float) -> str:
    """A moment in a recording (or the time a run took) as m:ss, or h:mm:ss from an hour on."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def duration(seconds: float) -> str:
    """How long something took, as a report says it: "4.2 s", "3 min 05 s", "1 h 02 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
