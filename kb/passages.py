"""Read-only look-ups that MCP's tools and resources answer: a passage by id, the sources, a source's text.

Every query is written here with its parameters bound: nothing a client sends becomes SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import KBError
from .store import KB
from .text import clock

MAX_SOURCE_CHARS = 200_000
"""A source read as a resource is cut here (about a 100-page book): an agent's context is smaller."""


@dataclass(frozen=True)
class Passage:
    """One chunk and where it lives."""

    chunk_id: int
    source_id: int
    text: str
    uri: str
    title: str
    kind: str
    page: int | None
    slide: int | None
    heading: str | None
    start_s: float | None
    end_s: float | None
    link: str | None
    """The KB's own deep link (file:// with #page=, the web URL, a YouTube &t=)."""

    def record(self, url: str | None) -> dict[str, Any]:
        """The citation fields the API uses, with the passage's text."""
        return {
            "chunk_id": self.chunk_id,
            "source_id": self.source_id,
            "title": self.title or self.uri,
            "kind": self.kind,
            "page": self.page,
            "slide": self.slide,
            "heading": self.heading,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "url": url,
            "text": self.text,
        }


_PASSAGE = (
    "SELECT chunks.id, chunks.source_id, chunks.text, sources.uri, sources.title, sources.kind, chunks.page, "
    "chunks.slide, chunks.heading, chunks.start_s, chunks.end_s, chunks.link "
    "FROM chunks JOIN sources ON sources.id = chunks.source_id"
)


def passage(kb: KB, chunk_id: int) -> Passage:
    if not isinstance(chunk_id, int) or isinstance(chunk_id, bool) or not 1 <= chunk_id < 2**63:
        raise KBError("chunk_id must be a positive whole number.")
    row = kb.conn.execute(_PASSAGE + " WHERE chunks.id = ?", (chunk_id,)).fetchone()
    if row is None:
        raise KBError(f"There is no passage {chunk_id} in this course.")
    return Passage(*row)


def sources(kb: KB) -> list[dict[str, Any]]:
    """Every source that has text, with its passage count."""
    rows = kb.conn.execute(
        "SELECT sources.id, sources.uri, sources.title, sources.kind, count(chunks.id) FROM sources "
        "JOIN chunks ON chunks.source_id = sources.id GROUP BY sources.id ORDER BY sources.id"
    ).fetchall()
    return [{"source_id": i, "uri": u, "title": t or u, "kind": k, "passages": n} for i, u, t, k, n in rows]


def source_text(kb: KB, source_id: int) -> str:
    """A source's passages in order, each under where it is (page, slide, heading, time)."""
    rows = kb.conn.execute(_PASSAGE + " WHERE chunks.source_id = ? ORDER BY chunks.ordinal", (source_id,)).fetchall()
    if not rows:
        raise KBError(f"There is no source {source_id} in this course.")
    parts, size = [], 0
    for row in rows:
        piece = Passage(*row)
        where = [f"page {piece.page}" if piece.page else "", f"slide {piece.slide}" if piece.slide else ""]
        where += [f"at {clock(piece.start_s)}" if piece.start_s is not None else "", piece.heading or ""]
        label = ", ".join(w for w in where if w)
        text = f"[{label}]\n{piece.text}" if label else piece.text
        parts.append(text)
        size += len(text)
        if size > MAX_SOURCE_CHARS:
            parts.append("[… cut: the rest is in the source itself]")
            break
    return "\n\n".join(parts)


class Catalog:
    """Read-only KBs by path, for one thread's look-ups (a connection stays on the thread that opened it)."""

    def __init__(self) -> None:
        self._open: dict[str, KB] = {}

    def kb(self, path: str) -> KB:
        if path not in self._open:
            self._open[path] = KB.open(path, readonly=True)
        return self._open[path]

    def close(self) -> None:
        for kb in self._open.values():
            kb.close()
        self._open.clear()
