"""The evidence step: passages trimmed to what bears on the question, one judged call, quotes checked.

PaperQA asks the model to score and summarise each candidate in its own call; on a 2-core CPU that
costs tens of seconds, so kb asks once: over the top candidates, each cut to its sentences nearest
the question and each sentence labelled ("1a", "1b", ...), the model names the sentences that answer
and whether they suffice, as JSON a grammar forces. A quote is then a sentence of the passage by
construction, and naming it costs a few tokens where copying it cost one per word (the judge's reply
was most of the wait for the first word: the model writes ~10 tokens/s on 2 cores). Replies that
quote text instead (servers that ignore the schema) are checked as before: a quote stands only if it
occurs in its passage. A passage with no standing quote is not evidence.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .grounding import content_words
from .llm import Constraint
from .text import sentences, sentences_and_pairs

SentenceScorer = Callable[[str, list[str]], list[float]]

MAX_QUOTES = 3
SNAP_RATIO = 0.9
"""A quote that is not found verbatim stands only if it is this close (difflib ratio, normalised
text) to a sentence of its passage, which then replaces it: kb keeps the passage's own words."""


@dataclass
class Verdict:
    """What the judge call returned, after the checks."""

    sufficient: bool
    quotes: dict[int, list[str]] = field(default_factory=dict)
    """Standing quotes by passage key, in the passage's own words."""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(key, quote) pairs the model gave that occur in no passage."""
    raw: str = ""
    parsed: bool = True
    """False when the reply was not the JSON asked for (only possible from servers that ignore the schema)."""
    p_yes: float | None = None
    """The model's probability that the passages answer the question, when the backend tells."""


ELLIPSIS = "\u2026"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _lettered(units: list[str]) -> list[tuple[str | None, str]]:
    """Each shown unit with its label letter (None for an ELLIPSIS, and past the 26th sentence):
    `labelled` shows these letters and `sentence_ids` resolves them, so the two cannot disagree."""
    out: list[tuple[str | None, str]] = []
    letters = iter(LETTERS)
    for unit in units:
        out.append((None if unit == ELLIPSIS else next(letters, None), unit))
    return out


def labelled(units: list[str]) -> str:
    """A passage's shown sentences as the judge reads them: "(a) First. (b) Second. … (c) Fifth."."""
    return " ".join(f"({letter}) {unit}" if letter else unit for letter, unit in _lettered(units))


def sentence_ids(shown: dict[int, list[str]]) -> dict[str, tuple[int, str]]:
    """{"1a": (1, sentence), ...} for the sentences `labelled` marked, by passage key."""
    return {
        f"{key}{letter}": (key, unit) for key, units in shown.items() for letter, unit in _lettered(units) if letter
    }


def judge_constraint(ids: list[str], verdict: bool = True) -> Constraint:
    """The judge's reply format: a grammar for llama.cpp and the matching JSON schema for servers.

    The sentence labels are an enumeration, so the model can name only sentences it was shown, at
    most MAX_QUOTES of them. `verdict`: the reply also says whether they suffice; not asked when the
    model's P(yes) has decided that already (six tokens fewer to generate). The reply's opening is
    fixed, so llama.cpp reads it with the prompt instead of writing it.
    """
    id_rule = " | ".join(f'"\\"{i}\\""' for i in ids)
    tail = r'"," ws "\"sufficient\":" ws bool ws ' if verdict else ""
    body = f'ws ids? ws "]" ws {tail}"}}"'
    rules = f"""
ids ::= id (ws "," ws id){{0,{MAX_QUOTES - 1}}}
id ::= {id_rule}
bool ::= "true" | "false"
ws ::= [ ]?
"""
    properties: dict[str, Any] = {
        "sentences": {"type": "array", "maxItems": MAX_QUOTES, "items": {"type": "string", "enum": ids}}
    }
    if verdict:
        properties["sufficient"] = {"type": "boolean"}
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return Constraint(
        gbnf=f'root ::= "{{" ws "\\"sentences\\":" ws "[" {body}{rules}',
        schema=schema,
        opening='{"sentences": [',
        continuation=f"root ::= {body}{rules}",
    )


def parse_verdict(
    raw: str, keys: list[int], ids: dict[str, tuple[int, str]] | None = None
) -> tuple[bool, list[tuple[int, str]], list[str]] | None:
    """(sufficient, [(key, quote)], [unknown ids]) from the judge's JSON, or None when it is not that shape.

    The asked-for shape names sentences by label, which map to (key, sentence) through `ids`; the
    older shape ({"quotes": [{"passage", "text"}]}, still given by servers that ignore the schema)
    carries the quote's text, which check_quotes then looks for in its passage.
    """
    try:
        data = json.loads(raw)
        # Not asked when the model's P(yes) decided it (see judge_constraint): the names are the reply.
        sufficient = data.get("sufficient", True) if "sentences" in data else data["sufficient"]
        if not isinstance(sufficient, bool):
            return None
        if "sentences" in data:
            named = data["sentences"]
            if not isinstance(named, list):
                return None
            named = [str(n).strip() for n in named[:MAX_QUOTES]]
            known = ids or {}
            return sufficient, [known[n] for n in named if n in known], [n for n in named if n not in known]
        items = data["quotes"]
        if not isinstance(items, list):
            return None
        quotes = [(int(q["passage"]), str(q["text"])) for q in items[:MAX_QUOTES]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return sufficient, [(k, q) for k, q in quotes if k in keys], []


# -- quotes occur in their passage -------------------------------------------------------------------

_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2212"), "-")
_QUOTES = {ord("\u2018"): "'", ord("\u2019"): "'", ord("\u201c"): '"', ord("\u201d"): '"'}


def normalise(text: str) -> str:
    """Text as compared for quoting: NFKC, one kind of dash and quote, words joined across a
    line-break hyphen ("infil-\\ntration"), soft hyphens gone, whitespace collapsed, lower case."""
    text = unicodedata.normalize("NFKC", text).replace("\u00ad", "")
    text = text.translate(_DASHES).translate(_QUOTES)
    text = re.sub(r"(\w)-\s*\n\s*(\w)", r"\1\2", text)
    return " ".join(text.split()).lower()


def _pieces(quote: str) -> list[str]:
    """A quote split at the ellipses the model may use to skip words, each piece trimmed."""
    parts = re.split(r"\s*(?:\.\.\.|\u2026)\s*", normalise(quote))
    return [p.strip(" .,;:\"'") for p in parts if len(p.strip(" .,;:\"'")) >= 3]


def occurs(quote: str, passage: str) -> bool:
    """Whether every piece of `quote` occurs in `passage`, in order (normalised)."""
    pieces = _pieces(quote)
    if not pieces:
        return False
    text = normalise(passage)
    # Also with line-break hyphens dropped on both sides: "infil- tration" in a PDF's text layer.
    return _in_order(pieces, text) or _in_order([p.replace("- ", "") for p in pieces], text.replace("- ", ""))


def _in_order(pieces: list[str], text: str) -> bool:
    position = 0
    for piece in pieces:
        found = text.find(piece, position)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def snap(quote: str, passage: str) -> str | None:
    """The passage's sentence (or pair of sentences) that `quote` nearly copies, or None.

    Nearly copies: the two are close as wholes (difflib ratio), or the quote is a passage sentence
    cut short with a word or two changed ("The funnel with a sharp brass rim exactly 5 inches…" for
    "It has … a funnel with a sharp brass rim exactly 5 inches…"): runs of five or more characters
    shared with the sentence cover nine tenths of the quote. Either way the passage's words stand.
    """
    target = normalise(quote).strip(" .")
    if len(target) < 10:
        return None
    units = sentences_and_pairs(passage)
    best, best_key = None, (0.0, 0.0)
    for unit in units:
        matcher = difflib.SequenceMatcher(None, target, normalise(unit).strip(" ."), autojunk=False)
        covered = sum(block.size for block in matcher.get_matching_blocks() if block.size >= 5) / len(target)
        key = (max(matcher.ratio() >= SNAP_RATIO, covered >= SNAP_RATIO), matcher.ratio())
        if key > best_key:
            best, best_key = unit, key
    return best if best_key[0] else None


def check_quotes(quotes: list[tuple[int, str]], passages: dict[int, str]) -> tuple[dict[int, list[str]], list]:
    """Keep the quotes that occur in their passage (or, misnumbered, in another one).

    Returns ({key: [quote in the passage's words]}, [(key, rejected quote)]).
    """
    kept: dict[int, list[str]] = {}
    rejected = []
    for key, quote in quotes:
        quote = " ".join(quote.split())
        order = [key] + [k for k in passages if k != key]
        home = next((k for k in order if occurs(quote, passages[k])), None)
        text = quote
        if home is None:
            for k in order:
                snapped = snap(quote, passages[k])
                if snapped:
                    home, text = k, snapped
                    break
        if home is None or len(content_words(text)) < 2:
            rejected.append((key, quote))
            continue
        if text not in kept.setdefault(home, []):
            kept[home].append(text)
    return kept, rejected


def verdict_from(raw: str, passages: dict[int, str], ids: dict[str, tuple[int, str]] | None = None) -> Verdict:
    """The checked verdict of the judge's reply `raw` over `passages` ({key: full chunk text}), whose
    shown sentences `ids` labels."""
    parsed = parse_verdict(raw, list(passages), ids)
    if parsed is None:
        return Verdict(sufficient=False, raw=raw, parsed=False)
    sufficient, quotes, unknown = parsed
    # A named sentence is in its passage by construction; check_quotes still drops one too short to
    # say anything, and a text quote must be found in its passage.
    kept, rejected = check_quotes(quotes, passages)
    rejected += [(0, label) for label in unknown]
    return Verdict(sufficient=sufficient and bool(kept), quotes=kept, rejected=rejected, raw=raw)


def focus(question: str, quotes: dict[int, list[str]]) -> dict[int, list[str]]:
    """The quotes of the passage named first, and another passage's only when they hold a word of the
    question that none kept before them holds.

    Told to name a second sentence "only if the answer needs it", the model names one from another
    passage anyway, and the answer then carries it: "Earth's magnetic field is called the
    magnetosphere [1]. The next chapter explains how electric current and magnetism are related
    [2]." Most of the default model's citations that named a passage without the answer on SciQ
    were that second passage. A question with two subjects ("compare X and Y") still gets both: each
    passage brings a word of it the other lacks. The first passage keeps all its quotes, since an
    answer's second sentence may hold none of the question's words ("It is usually equivalent to
    0.2 mm.").
    """
    asked = set(content_words(question))
    held: set[str] = set()
    kept: dict[int, list[str]] = {}
    for key, found in quotes.items():
        words = asked & {w for quote in found for w in content_words(quote)}
        if kept and not words - held:
            continue
        kept[key] = found
        held |= words
    return kept


# -- passages trimmed to the question ----------------------------------------------------------------


LONG_SENTENCE = 220
"""Sentences longer than this are cut at their semicolons for trimming: a list such as "atmosphere,
about 9 days; rivers, 2 to 6 months; ..." would otherwise be kept or dropped whole."""


def units_of(text: str) -> list[str]:
    """The sentences of `text`, long ones split into their semicolon-separated clauses."""
    out = []
    for sentence in sentences(text):
        if len(sentence) > LONG_SENTENCE and "; " in sentence:
            clauses = sentence.split("; ")
            out.extend(c + ";" for c in clauses[:-1])
            out.append(clauses[-1])
        else:
            out.append(sentence)
    return out


def excerpt_units(
    question: str, text: str, budget: int, score: SentenceScorer | None, shown: set[str] | None = None
) -> tuple[list[str], str]:
    """`text` cut to its sentences nearest the question, in reading order, within `budget` characters,
    and the nearest of them.

    Skipped stretches are marked by an ELLIPSIS element. Scored by the embedding similarity (when given) plus the share
    of the question's words each sentence holds, so a sentence that answers in other words than the
    question's ("rain shadow" for "drier") is kept. Sentences in `shown` (already in an earlier
    passage: chunks overlap) are left out, and the ones kept are added to it.
    """
    shown = shown if shown is not None else set()
    found = [u for u in units_of(text) if u not in shown]
    if not found:
        return [], ""
    asked = set(content_words(question))
    overlap = [len(asked & set(content_words(s))) / max(1, len(asked)) for s in found]
    similarity = score(question, found) if score else [0.0] * len(found)
    order = sorted(range(len(found)), key=lambda i: -(similarity[i] + 0.5 * overlap[i]))
    chosen: set[int] = set()
    used = 0
    for i in order:
        cost = len(found[i]) + 1
        if used + cost > budget and chosen:
            continue
        chosen.add(i)
        used += cost
        if used >= budget:
            break
    out: list[str] = []
    for i in sorted(chosen):
        if out and i - 1 not in chosen:
            out.append(ELLIPSIS)
        out.append(found[i][:budget])
        shown.add(found[i])
    if min(chosen) > 0:
        out.insert(0, ELLIPSIS)
    return out, found[order[0]][:budget]


def where(hit: Any) -> str:
    """A passage's origin as the judge sees it: title and heading, which help it tell topics apart."""
    heading = hit.locator.heading or ""
    title = hit.source.title or ""
    if heading and title and heading.split(" > ")[0] != title:
        return f"{title} > {heading}"
    return heading or title
