"""kb: course materials in one SQLite file, answered with citations by a local LLM."""

__version__ = "0.1.0"

from .answer import AnswerEngine, AskSettings  # noqa: E402
from .chunker import ChunkingSettings, chunk_document  # noqa: E402
from .errors import KBError, ModelMismatch, NotAKBFile, SchemaTooNew, SourceError  # noqa: E402
from .ingest import Ingester, IngestResult, ingest  # noqa: E402
from .search import Searcher, fts_query, search  # noqa: E402
from .store import KB  # noqa: E402
from .types import (  # noqa: E402
    Answer,
    Chunk,
    Document,
    Evidence,
    FetchContext,
    Fetched,
    Hit,
    Limits,
    Locator,
    Section,
    SourceFile,
    SourceRef,
    SourceReport,
)

__all__ = [
    "KB",
    "Answer",
    "AnswerEngine",
    "AskSettings",
    "Evidence",
    "FetchContext",
    "Fetched",
    "Chunk",
    "ChunkingSettings",
    "Document",
    "Hit",
    "IngestResult",
    "Ingester",
    "KBError",
    "Limits",
    "Locator",
    "ModelMismatch",
    "NotAKBFile",
    "SchemaTooNew",
    "Section",
    "Searcher",
    "SourceError",
    "SourceFile",
    "SourceRef",
    "SourceReport",
    "chunk_document",
    "fts_query",
    "ingest",
    "search",
    "__version__",
]
