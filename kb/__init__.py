"""kb: course materials in one SQLite file, answered with citations by a local LLM.

The public surface is this package: `from kb import KB, Ingester, hookimpl, SectionBuilder, ...`.
Connectors and other plugins import from here only (a test holds them to it). Names are loaded
when first used (PEP 562), so `import kb.errors` or a connector's `from kb import SourceError`
does not import the answer engine, the vector store and NumPy.
"""

import importlib as _importlib
import sys as _sys
import types as _types
import typing as _typing

from .version import __version__

# Public name -> the submodule that defines it.
_PUBLIC = {
    "AnswerEngine": "answer",
    "AskSettings": "answer",
    "ChunkingSettings": "chunker",
    "chunk_document": "chunker",
    "Connector": "contracts",
    "Embedder": "contracts",
    "Fetcher": "contracts",
    "LLM": "contracts",
    "SourceTimeout": "deadlines",
    "deadline": "deadlines",
    "KBError": "errors",
    "ModelMismatch": "errors",
    "NotAKBFile": "errors",
    "SchemaTooNew": "errors",
    "SourceError": "errors",
    "hookimpl": "hookspecs",
    "Ingester": "ingest",
    "IngestResult": "ingest",
    "ingest": "ingest",
    "LLMOptions": "options",
    "option": "options",
    "read_options": "options",
    "connector_for": "plugins",
    "SectionBuilder": "sections",
    "Searcher": "search",
    "fts_query": "search",
    "search": "search",
    "KB": "store",
    "Answer": "types",
    "Chunk": "types",
    "Document": "types",
    "Evidence": "types",
    "FetchContext": "types",
    "Fetched": "types",
    "Hit": "types",
    "Limits": "types",
    "Locator": "types",
    "Section": "types",
    "SourceFile": "types",
    "SourceRef": "types",
    "SourceReport": "types",
    "CITATION": "text",
    "Fusion": "fusion",
    "clock": "text",
}

__all__ = [
    "Answer",
    "AnswerEngine",
    "AskSettings",
    "Chunk",
    "chunk_document",
    "ChunkingSettings",
    "CITATION",
    "clock",
    "Connector",
    "connector_for",
    "deadline",
    "Document",
    "Embedder",
    "Evidence",
    "FetchContext",
    "Fetched",
    "Fetcher",
    "fts_query",
    "Fusion",
    "Hit",
    "hookimpl",
    "ingest",
    "Ingester",
    "IngestResult",
    "KB",
    "KBError",
    "Limits",
    "LLM",
    "LLMOptions",
    "Locator",
    "ModelMismatch",
    "NotAKBFile",
    "option",
    "read_options",
    "SchemaTooNew",
    "search",
    "Searcher",
    "Section",
    "SectionBuilder",
    "SourceError",
    "SourceFile",
    "SourceRef",
    "SourceReport",
    "SourceTimeout",
    "__version__",
]

if _typing.TYPE_CHECKING:
    from .answer import AnswerEngine, AskSettings
    from .chunker import ChunkingSettings, chunk_document
    from .contracts import LLM, Connector, Embedder, Fetcher
    from .deadlines import SourceTimeout, deadline
    from .errors import KBError, ModelMismatch, NotAKBFile, SchemaTooNew, SourceError
    from .hookspecs import hookimpl
    from .ingest import Ingester, IngestResult, ingest
    from .options import LLMOptions, option, read_options
    from .plugins import connector_for
    from .search import Searcher, fts_query, search
    from .sections import SectionBuilder
    from .store import KB
    from .types import (
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


def __getattr__(name: str) -> object:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'kb' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # asked once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return __all__


class _Package(_types.ModuleType):
    """Keeps `kb.search` and `kb.ingest` the functions: importing the submodules of the same name
    would otherwise rebind the package attribute to the module (as the eager imports once undid)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, _types.ModuleType) and _PUBLIC.get(name) == name:
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
