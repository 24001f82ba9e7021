"""Stages 4 to 6 of ingest as one call: the seam where a parallel executor hands sources to workers.

`prepare()` takes what the driver planned and read and returns the record the writer stores. It
touches no KB: a Ray executor (say) can run it on workers, given the same PrepareSettings once, and
send the Prepared records back to the driver's single writer (kb/pipeline/write.py). The per-source
deadline uses SIGALRM, so a worker runs `prepare()` on its main thread, as Ray's workers do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..chunker import ChunkingSettings
from ..types import Limits
from . import silent
from .chunk import Prepared, chunk
from .embed import embed
from .plan import Planned
from .read import Content, extract
from .write import storing_errors


@dataclass
class PrepareSettings:
    """Everything `prepare()` needs besides the source: the same for every source of a run."""

    embedder: Any
    chunking: ChunkingSettings = field(default_factory=ChunkingSettings)
    limits: Limits = field(default_factory=Limits)
    options: dict[str, Any] = field(default_factory=dict)
    """Connector options by name (crawl, transcriber, ...)."""


@dataclass
class Failed:
    """A source a worker could not prepare, as the one sentence its report gives (exceptions stay on the worker)."""

    reason: str


def prepare(
    planned: Planned,
    content: Content,
    settings: PrepareSettings,
    progress: Callable[..., None] = silent,
) -> Prepared:
    """Extract, chunk and embed one source. Raises SourceError (or SourceTimeout) for this source's failure."""
    prepared = chunked(planned, content, settings, progress)
    with storing_errors():
        return embed(prepared, settings.embedder, progress)


def chunked(
    planned: Planned,
    content: Content,
    settings: PrepareSettings,
    progress: Callable[..., None] = silent,
) -> Prepared:
    """Stages 4 and 5 only (no vectors yet): where the Ray executor's embedder is another process."""
    doc = extract(planned, content, settings.limits, settings.options, progress)
    with storing_errors():
        progress("chunking")
        return chunk(doc, settings.chunking)
