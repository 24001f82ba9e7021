"""What a plugin promises: the Connector, Fetcher, Embedder and LLM contracts, as Protocols.

A plugin class need not inherit from these (kb checks nothing at run time that the old duck-typed
contract did not); they are what `kb/hookspecs.py`'s `register` callbacks are typed with, so a type
checker holds a plugin to the contract, as llm's `EmbeddingModel` and sqlite-utils' typed hooks do.
Members a plugin may leave out (kb reads them with a default) are listed in each docstring, not in
the Protocol: a Protocol cannot say "optional", and requiring them would call every plugin wrong.

Importing this module costs nothing: the records it names are imported for type checkers only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from .llm import Constraint, Generation, Messages, OnToken, Until
    from .types import Document, FetchContext, Fetched, SourceFile


@runtime_checkable
class Connector(Protocol):
    """Reads one kind of file into a `Document`; raises `kb.SourceError` with a one-line reason.

    Optional class attributes: `reads_path = True` (the engine hands `source.path`, not the bytes:
    media far larger than memory), `max_bytes` (its own size limit, with `reads_path`),
    `crawled = False` (a crawl does not download such links), `options` (a frozen dataclass of
    `kb.option` fields, one default each, which `kb ingest -o KEY VALUE` sets and the connector reads
    with `kb.read_options(Options, source.options)`) and a method `time_budget(source) -> float`
    (seconds it may take beyond the per-source limit, never less).
    """

    kind: ClassVar[str]
    """Short name stored as the source's kind ("pdf", "docx", ...) and shown in reports."""
    suffixes: ClassVar[tuple[str, ...]]
    """File-name endings it reads, lower case with the dot (".pdf", ".tar.gz")."""

    def extract(self, source: SourceFile) -> Document: ...


@runtime_checkable
class Fetcher(Protocol):
    """Turns a URL into sources (one page, a crawl, a playlist); raises `kb.SourceError` per URL.

    Optional: `options`, a dataclass of its options as for a `Connector`, read from `context.options`.
    """

    name: ClassVar[str]
    priority: ClassVar[int]
    """Higher is asked first: the generic web fetcher is 0, fetchers for video sites above it."""

    def claims(self, url: str) -> bool: ...

    def fetch(self, url: str, context: FetchContext) -> Iterator[Fetched]: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors; a KB records its model id and refuses any other.

    Optional: `aliases` (other names `--model` accepts) and `embed_query(text) -> vector` (a faster
    path for one query, which must give the same vector as `embed([text])[0]`).
    """

    model_id: ClassVar[str]
    dimension: ClassVar[int]
    normalized: ClassVar[bool]

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class LLM(Protocol):
    """A language model backend: `kb.llm.LLM` is the base class that implements `generate` over
    a backend's `stream`; constructed with the backend's own options (`get_llm(backend, **options)`)."""

    backend: ClassVar[str]
    """The name `--backend` chooses it by ("llama-cpp", "openai-compatible")."""
    name: str
    judges: bool
    """Whether the model can judge evidence (pick exact quotes, say when they do not suffice)."""

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        constraint: Constraint | None = None,
        on_token: OnToken | None = None,
        stop: list[str] | None = None,
        prefix: str = "",
        until: Until | None = None,
    ) -> Generation: ...

    def describe(self) -> dict[str, Any]: ...

    def yes_probability(self, messages: Messages) -> float | None: ...
