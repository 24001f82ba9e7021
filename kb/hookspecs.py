"""Plugin hooks: built-in connectors and embedders register through these too.

Each register_* hook hands the plugin a `register` callback for its classes; the classes' contracts
are the Protocols in `kb.contracts`. Every hook is documented in docs/plugins.md (a test checks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

from .contracts import LLM, Connector, Embedder, Fetcher

if TYPE_CHECKING:
    import click

hookspec = pluggy.HookspecMarker("kb")
hookimpl = pluggy.HookimplMarker("kb")


@hookspec
def register_connectors(register: Callable[[type[Connector]], None]) -> None:
    """Register connector classes: register(PdfConnector)"""


@hookspec
def register_embedders(register: Callable[[type[Embedder]], None]) -> None:
    """Register embedder classes: register(SentenceTransformerEmbedder)"""


@hookspec
def register_llms(register: Callable[[type[LLM]], None]) -> None:
    """Register LLM backend classes: register(LlamaCppLLM)"""


@hookspec
def register_fetchers(register: Callable[[type[Fetcher]], None]) -> None:
    """Register fetcher classes for URLs: register(WebFetcher)

    One URL may yield many sources (a crawl, a playlist); see `kb.contracts.Fetcher`.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `kb` command group: @cli.command() def hello(): ..."""
