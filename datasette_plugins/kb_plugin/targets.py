"""Where a citation leads in the browser: the stored PDF at its page, the source view, or the web page.

Browsers refuse file:// links from an http page, and a learner copy's links are relative to the
copy, so every link the plugin shows points at something it serves, or at the source's own URL.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from datasette.utils import tilde_encode

from .cells import safe_url
from .status import SourceInfo, Status


def kb_path(datasette: Any, database: str, *parts: str) -> str:
    return datasette.urls.path("/".join(["/-/kb", tilde_encode(database), *parts]))


def view_url(datasette: Any, database: str, source_id: int, chunk_id: int | None = None) -> str:
    """The source view, scrolled to (and highlighting) `chunk_id` when given."""
    url = kb_path(datasette, database, "source", str(source_id))
    return f"{url}?chunk={chunk_id}#chunk-{chunk_id}" if chunk_id is not None else url


def file_url(datasette: Any, database: str, source: SourceInfo | None) -> str | None:
    """The stored original, when the KB holds it."""
    if source is None or not source.stored:
        return None
    return kb_path(datasette, database, "files", str(source.id), quote(source.name, safe=""))


def is_web(source: SourceInfo) -> bool:
    try:
        return urlsplit(source.uri).scheme in ("http", "https")
    except ValueError:
        return False


def open_url(
    datasette: Any,
    database: str,
    source: SourceInfo | None,
    chunk_id: int | None,
    page: Any = None,
    link: Any = None,
) -> str | None:
    """What "open the source there" opens for a passage.

    A stored PDF opens in the browser's own viewer at its page; a web source at its URL (with the
    heading's anchor, or a YouTube link at the time); everything else in the source view, which
    plays a recording from the passage's time and highlights the passage in the text.
    """
    if source is None:
        return None
    if is_web(source):
        return safe_url(link) or safe_url(source.uri)
    stored = file_url(datasette, database, source)
    if stored and source.kind == "pdf" and isinstance(page, int):
        return f"{stored}#page={page}"
    return view_url(datasette, database, source.id, chunk_id)


def source_of(status: Status | None, source_id: Any) -> SourceInfo | None:
    if status is None or not isinstance(source_id, int) or isinstance(source_id, bool):
        return None
    return status.sources.get(source_id)
