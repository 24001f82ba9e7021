"""Typed records that flow between kb's parts.

`Document`, `Section` and `Locator` are the whole contract between connectors and the engine:
a connector turns bytes into a `Document`; the engine never parses a format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Locator:
    """Where inside a source a piece of text lives, so a citation can point at it."""

    page: int | None = None
    """1-based PDF page."""
    slide: int | None = None
    """1-based slide number."""
    start_s: float | None = None
    """Start of a media segment, in seconds."""
    end_s: float | None = None
    """End of a media segment, in seconds."""
    heading: str | None = None
    """Heading path, outermost first: "Part > Section"."""
    anchor: str | None = None
    """HTML id of the nearest heading, for `#anchor` deep links."""


@dataclass
class Section:
    """A run of text that shares one locator (a page, a slide, the body under one heading)."""

    text: str
    locator: Locator = field(default_factory=Locator)
    code: bool = False
    """Code or preformatted text: its line breaks and indentation are kept, and chunks end at line ends."""


@dataclass
class Document:
    """What a connector extracted from one source."""

    uri: str
    """Stable identity of the source: a file:// URI or an http(s) URL."""
    kind: str
    """Connector kind: pdf, markdown, text, html, ..."""
    title: str
    sections: list[Section] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    """Author, page count, duration, licence: anything worth showing, JSON-serialisable."""
    empty_reason: str | None = None
    """Why a source that parsed fine yields no text (e.g. a scanned PDF)."""


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed and to hand to a small LLM."""

    ordinal: int
    text: str
    locator: Locator

    def embedding_text(self) -> str:
        """The text that is embedded: headings travel with their text."""
        if self.locator.heading:
            return f"{self.locator.heading}\n\n{self.text}"
        return self.text


@dataclass(frozen=True)
class SourceRef:
    """The source a hit or citation comes from."""

    uri: str
    title: str
    kind: str

    def to_dict(self) -> dict[str, str]:
        return {"uri": self.uri, "title": self.title, "kind": self.kind}


@dataclass
class Hit:
    """One search result: a chunk, where it comes from, and how well it matched."""

    rank: int
    chunk_id: int
    score: float
    """Fused score (kb.fusion, with the weights the KB records): higher is better."""
    text: str
    source: SourceRef
    locator: Locator
    link: str | None
    bm25_rank: int | None = None
    """1-based rank in the keyword list, None if the keyword search missed it."""
    vector_rank: int | None = None
    """1-based rank in the vector list, None if outside the vector candidates."""
    distance: float | None = None
    """Cosine distance of the chunk to the query, when the vector search found it."""

    def explain(self) -> dict[str, Any]:
        """How the hit was ranked (`kb search --explain`): its place in each list and its fused score."""
        return {
            "keyword_rank": self.bm25_rank,
            "vector_rank": self.vector_rank,
            "fused_score": self.score,
            "distance": None if self.distance is None else round(self.distance, 6),
        }

    def to_dict(self) -> dict[str, Any]:
        """The `kb search --json` record of DESIGN.md."""
        return {
            "rank": self.rank,
            "chunk_id": self.chunk_id,
            "score": round(self.score, 6),
            "text": self.text,
            "source": self.source.to_dict(),
            "page": self.locator.page,
            "slide": self.locator.slide,
            "start_s": self.locator.start_s,
            "end_s": self.locator.end_s,
            "heading": self.locator.heading,
            "link": self.link,
        }


@dataclass
class SourceReport:
    """What ingest did with one source, for the report and `--json`."""

    uri: str
    status: str
    """ok | unchanged | empty | error | skipped | excluded | missing | removed | duplicate | renamed | restored
    (README, "What the ingest report says")."""
    kind: str | None = None
    chunks: int = 0
    pages: int | None = None
    reason: str | None = None
    """Why it failed, or what happened: "duplicate of notes.pdf", "renamed from old.md"."""
    seconds: float = 0.0
    note: str | None = None
    """Worth knowing about a source read fine: "OCR on pages 1-3"."""
    size: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    """Chunks flagged at ingest, by flag: {"instructions": 2, "markup": 1} (kb/injection.py)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "status": self.status,
            "kind": self.kind,
            "chunks": self.chunks,
            "pages": self.pages,
            "reason": self.reason,
            "note": self.note,
            "flags": dict(self.flags),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one hostile or huge source from eating the run's time and memory."""

    max_bytes: int = 200 * 1024 * 1024
    """Largest file read at all."""
    max_pages: int = 5000
    """Most pages (or slides) read from one document."""
    max_chars: int = 5_000_000
    """Most extracted characters kept from one source (about a 2,500-page book)."""
    timeout_s: float = 300.0
    """Wall-clock budget for extracting one source."""


@dataclass
class SourceFile:
    """What a connector is handed: one source, already read and hashed by the engine."""

    uri: str
    path: Any
    """pathlib.Path of the file (for a fetched source, the fetcher's local copy, or None)."""
    data: bytes
    """The file's bytes; empty for connectors with `reads_path = True`, which open `path` themselves."""
    limits: Limits = field(default_factory=Limits)
    options: dict[str, Any] = field(default_factory=dict)
    """Connector options from the command line (`kb ingest --transcriber ...`), by option name."""
    name: str = ""
    """File name whose suffix chose the connector (a fetched page's is made from its media type)."""
    content_hash: str = ""
    """SHA-256 of the content, which the engine has already computed (a cache key for connectors)."""
    progress: Callable[..., None] = field(default=lambda stage, fraction=None: None, repr=False)
    """progress(stage, fraction=None): a long step the person watching should see ("OCR page 3 of 9",
    "transcribing", 0.4). Cheap to call often; the display decides how often to redraw."""

    @property
    def stem(self) -> str:
        """The file name without its suffix: a title of last resort, for files and fetched sources alike."""
        if self.path is not None:
            return PurePosixPath(str(self.path)).stem
        return PurePosixPath(self.name or unquote(urlsplit(self.uri).path)).stem or self.uri


@dataclass
class Fetched:
    """One remote source a fetcher brought in (or could not), for the engine to hand to a connector."""

    uri: str
    """The source's identity: its URL, after redirects."""
    name: str = ""
    """A file name whose suffix picks the connector: "index.html", "notes.pdf", "dQw4w9WgXcQ.mp4"."""
    data: bytes | None = None
    """The content, when small enough to hold in memory."""
    path: Any = None
    """pathlib.Path of a local copy instead (a downloaded video), when `data` is None."""
    title: str | None = None
    """A better title than the connector can find (a video's title from its page)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Stored with the source: etag, last_modified, uploader, duration, licence, ..."""
    not_modified: bool = False
    """The server said the copy ingested before is current (HTTP 304): nothing to read."""
    error: str | None = None
    """Why this URL could not be fetched; the run goes on with the next one."""
    gone: bool = False
    """The server says the page no longer exists (404, 410): a copy ingested before is `missing`."""


@dataclass
class FetchContext:
    """What a fetcher is handed besides the URL."""

    limits: Limits
    options: dict[str, Any]
    """Fetcher options from the command line (crawl, max_depth, max_pages, allow_private, ...)."""
    previous: Any
    """previous(uri) -> the metadata dict stored with that source last time, or None (for ETag and
    Last-Modified revalidation)."""
    readable: Any
    """readable(name) -> True when some connector reads a file of that name (a crawl skips the rest)."""


@dataclass
class Evidence:
    """A retrieved chunk kept as evidence for an answer, with the key the answer cites it by."""

    key: int
    """1-based citation key: the answer writes [key]."""
    hit: Hit
    score: float
    """Relevance 0-10 decided in code from retrieval (cosine similarity and word coverage)."""
    excerpt: str = ""
    """The chunk cut to its sentences nearest the question: what the model was shown."""
    units: list[str] = field(default_factory=list)
    """The same cut as its sentences, "…" where some were skipped: what the judge names by label."""
    nearest: str = ""
    """The shown sentence nearest the question (embedding similarity plus shared words)."""
    quotes: list[str] = field(default_factory=list)
    """The model's supporting quotes that occur in this chunk, in the chunk's own words."""

    def citation(self) -> dict[str, Any]:
        """The `citations` record of `kb ask --json`."""
        record = self.hit.to_dict()
        return {
            "key": self.key,
            "chunk_id": self.hit.chunk_id,
            "source": record["source"],
            **{k: record[k] for k in ("page", "slide", "start_s", "end_s", "heading", "link")},
            "quotes": list(self.quotes),
        }


@dataclass
class Answer:
    """The result of `kb ask`: the checked answer, what it cites, and how it was made."""

    question: str
    text: str
    abstained: bool
    evidence: list[Evidence] = field(default_factory=list)
    cited: list[Evidence] = field(default_factory=list)
    nearest: list[Hit] = field(default_factory=list)
    """The closest chunks, listed when the KB does not answer."""
    origin: str = "model"
    """"model", "extract" (the model's text did not hold up: the cited sentences themselves) or "none"."""
    raw_text: str = ""
    """What the model wrote, before the citation and grounding checks."""
    raw_citations: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    """What the checks in code did: the path taken, quotes rejected, sentences dropped and why."""

    def to_dict(self) -> dict[str, Any]:
        """The `kb ask --json` object of DESIGN.md (plus a few fields scripts may use)."""
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            "citations": [e.citation() for e in self.cited],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "origin": self.origin,
            "model": self.model,
            "nearest": [h.to_dict() for h in self.nearest] if self.abstained else [],
            "warnings": self.warnings,
            "checks": self.checks,
        }
