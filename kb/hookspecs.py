"""Plugin hooks: built-in connectors and embedders register through these too."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("kb")
hookimpl = pluggy.HookimplMarker("kb")


@hookspec
def register_connectors(register: Callable[[type], None]) -> None:
    """Register connector classes: register(PdfConnector)"""


@hookspec
def register_embedders(register: Callable[[type], None]) -> None:
    """Register embedder classes: register(SentenceTransformerEmbedder)"""


@hookspec
def register_llms(register: Callable[[type], None]) -> None:
    """Register LLM backend classes: register(LlamaCppLLM)"""


@hookspec
def register_fetchers(register: Callable[[type], None]) -> None:
    """Register fetcher classes for URLs: register(WebFetcher)

    A fetcher has `name`, `priority` (higher is asked first), `claims(url) -> bool` and
    `fetch(url, context: kb.FetchContext) -> Iterator[kb.Fetched]` (one URL may yield many
    sources: a crawl, a playlist).
    """
