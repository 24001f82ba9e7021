"""Structure-aware chunking.

A chunk never leaves its section, so it never spans two pages, slides or headings, and its
heading path travels with it. Inside a section, text is packed sentence by sentence up to
`max_chars`, and the next chunk repeats the last sentences (up to `overlap_chars`) so that a fact
cut at a boundary is still whole somewhere. Sizes are in characters: about 4 per token, so the
default 900 stays under all-MiniLM-L6-v2's 256-token window and a few chunks fit a small LLM's
context. Everything here is linear in the input, including a 10 MB line with no spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .text import PACKING_BREAK
from .types import Chunk, Document, Section

DEFAULT_MAX_CHARS = 900
DEFAULT_OVERLAP_CHARS = 150

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_CLAUSE_END = re.compile(r"(?<=[;:])\s+")
_CONTROLS = re.compile(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f\r\x80-\x9f]")
# pypdf decodes CMaps with surrogatepass: a lone surrogate cannot be encoded, stored or tokenised.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


@dataclass(frozen=True)
class ChunkingSettings:
    max_chars: int = DEFAULT_MAX_CHARS
    overlap_chars: int = DEFAULT_OVERLAP_CHARS

    def as_meta(self) -> dict[str, int]:
        return {"max_chars": self.max_chars, "overlap_chars": self.overlap_chars}


def clean_text(text: str) -> str:
    """Drop NULs and control characters, unify spaces, keep paragraph breaks."""
    text = _CONTROLS.sub(" ", text.replace("\x00", "").replace("\r\n", "\n"))
    text = _SURROGATES.sub("\ufffd", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(lines).strip()


def _units(text: str, max_chars: int) -> Iterator[tuple[str, bool]]:
    """Sentences (or hard-split pieces) no longer than max_chars; the flag marks a paragraph start."""
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = " ".join(paragraph.split("\n")).strip()
        if not paragraph:
            continue
        first = True
        for sentence in PACKING_BREAK.split(paragraph):
            # Whole sentences where they fit; an overlong one is cut at clauses, then at words.
            clauses = [sentence] if len(sentence) <= max_chars else _CLAUSE_END.split(sentence)
            for clause in clauses:
                for piece in _hard_split(clause, max_chars):
                    yield piece, first
                    first = False


def _hard_split(sentence: str, max_chars: int) -> Iterator[str]:
    if len(sentence) <= max_chars:
        if sentence:
            yield sentence
        return
    start = 0
    while start < len(sentence):
        end = min(start + max_chars, len(sentence))
        if end < len(sentence):
            space = sentence.rfind(" ", start + max_chars // 2, end)
            if space > start:
                end = space
        piece = sentence[start:end].strip()
        if piece:
            yield piece
        start = end


def clean_code(text: str) -> str:
    """Code as written: control characters out, trailing spaces trimmed, indentation and line breaks kept."""
    text = _CONTROLS.sub(" ", text.replace("\x00", "").replace("\r\n", "\n"))
    text = _SURROGATES.sub("\ufffd", text)
    lines = [line.rstrip().replace("\u00a0", " ") for line in text.split("\n")]
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines).rstrip()


def _code_units(text: str, max_chars: int) -> Iterator[tuple[str, str]]:
    """A code block's lines, each a unit joined by a line break (the first opens a paragraph); a line
    longer than max_chars alone is cut."""
    first = True
    for line in text.split("\n"):
        pieces = [line] if len(line) <= max_chars else [line[i : i + max_chars] for i in range(0, len(line), max_chars)]
        for piece in pieces:
            yield piece, "\n\n" if first else "\n"
            first = False


def _section_units(section: Section, max_chars: int) -> Iterator[tuple[str, str]]:
    """(unit, the separator that joins it to the one before): sentences for prose, whole lines for code."""
    if section.code:
        yield from _code_units(clean_code(section.text), max_chars)
        return
    for unit, new_paragraph in _units(clean_text(section.text), max_chars):
        yield unit, "\n\n" if new_paragraph else " "


def chunk_section(section: Section, settings: ChunkingSettings) -> Iterator[str]:
    """The chunk texts of one section."""
    yield from _pack(_section_units(section, settings.max_chars), settings)


def _pack(units: Iterable[tuple[str, str]], settings: ChunkingSettings) -> Iterator[str]:
    """Units packed up to max_chars, each chunk repeating the last units of the one before (the overlap)."""
    current: list[tuple[str, str]] = []
    size = 0
    for unit, separator in units:
        extra = len(unit) + (1 if current else 0)
        if current and size + extra > settings.max_chars:
            yield _join(current)
            # Carry the trailing sentences that fit in the overlap into the next chunk.
            carried: list[tuple[str, str]] = []
            carried_size = 0
            for previous in reversed(current):
                if carried_size + len(previous[0]) + 1 > settings.overlap_chars:
                    break
                carried.insert(0, previous)
                carried_size += len(previous[0]) + 1
            if carried_size + len(unit) + 1 > settings.max_chars:
                carried, carried_size = [], 0
            current, size = carried, carried_size
            extra = len(unit) + (1 if current else 0)
        current.append((unit, separator))
        size += extra
    if current:
        text = _join(current)
        if text.strip():
            yield text


def _join(units: list[tuple[str, str]]) -> str:
    return "".join(separator + unit if i else unit for i, (unit, separator) in enumerate(units)).strip("\n")


def clean_line(text: str | None) -> str | None:
    """A title or heading on one line, without control characters (terminal escapes included)."""
    if text is None:
        return None
    return " ".join(clean_text(text).split()) or None


PERMALINK_MARKS = "\u00b6#\u00a7\U0001f517\u2693\ufe0f"
"""Marks that documentation generators put after a heading as its permalink: pilcrow (Sphinx, MkDocs),
"#" (VuePress, Docusaurus), section sign, link and anchor emoji."""
_TRAILING_MARK = re.compile(rf"\s+[{PERMALINK_MARKS}]+$|[\u00b6\U0001f517]+$")


def clean_heading(heading: str | None) -> str | None:
    """A heading path on one line, each part without a trailing permalink mark ("Quoting¶" -> "Quoting")."""
    line = clean_line(heading)
    if line is None:
        return None
    parts = [_TRAILING_MARK.sub("", part.strip()).strip() for part in line.split(" > ")]
    return " > ".join(p for p in parts if p) or None


def chunk_document(doc: Document, settings: ChunkingSettings | None = None) -> list[Chunk]:
    """Every chunk of a document, numbered in reading order."""
    settings = settings or ChunkingSettings()
    chunks: list[Chunk] = []
    for locator, group in _groups(doc.sections):
        if locator.heading is not None:
            locator = replace(locator, heading=clean_heading(locator.heading))
        units = (unit for section in group for unit in _section_units(section, settings.max_chars))
        for text in _pack(units, settings):
            chunks.append(Chunk(ordinal=len(chunks), text=text, locator=locator))
    return chunks


def _groups(sections: list[Section]) -> Iterator[tuple[Any, list[Section]]]:
    """Sections to chunk together: a code block joins the prose around it under the same locator (so an
    example travels with its explanation); every other section is chunked alone, as before."""
    group: list[Section] = []
    for section in sections:
        if group and section.locator == group[-1].locator and (section.code or group[-1].code):
            group.append(section)
            continue
        if group:
            yield group[0].locator, group
        group = [section]
    if group:
        yield group[0].locator, group
