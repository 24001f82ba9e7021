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
