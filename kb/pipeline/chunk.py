"""Stage 5 of ingest: a Document cleaned and cut into chunks, each with its injection flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..chunker import ChunkingSettings, chunk_document, clean_line
from ..injection import flags as find_flags
from ..types import Chunk, Document


@dataclass
class Prepared:
    """One source ready to write: its Document, chunks, their flags and (after stage 6) vectors."""

    doc: Document
    chunks: list[Chunk]
    flags: list[str | None]
    """Each chunk's kb.injection.flags() (None for a clean chunk)."""
    status: str
    """"ok", or "empty" when no text was found."""
    reason: str | None = None
    """Why it is empty."""
    vectors: Any = None
    """The chunks' embeddings (a NumPy matrix, row per chunk), or None for an empty source."""
    flag_counts: dict[str, int] = field(default_factory=dict)
    """Chunks flagged, by flag, for the report."""


def chunk(doc: Document, settings: ChunkingSettings) -> Prepared:
    """The Document's title and metadata cleaned, its chunks, and what the injection checks flag."""
    doc.title = clean_line(doc.title) or Path(doc.uri).name
    doc.metadata = {k: clean_line(v) if isinstance(v, str) else v for k, v in doc.metadata.items()}
    chunks = chunk_document(doc, settings)
    flags = [find_flags(c.text, c.locator.heading) for c in chunks]
    counts: dict[str, int] = {}
    for found in filter(None, flags):
        for flag in found.split(","):
            counts[flag] = counts.get(flag, 0) + 1
    if chunks:
        return Prepared(doc, chunks, flags, "ok", flag_counts=counts)
    return Prepared(doc, chunks, flags, "empty", doc.empty_reason or "no text found", flag_counts=counts)
