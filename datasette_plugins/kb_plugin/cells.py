"""Table cells of a KB as links: deep links, source URIs, locators (page, slide, time) and chunk ids."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup

from kb import clock

SAFE_SCHEMES = frozenset({"http", "https", "file"})
"""The only link schemes rendered as links: never javascript:, data: or anything a browser would run."""
LINKED_TABLES = frozenset({"chunks", "chunk_sources", "sources"})


def safe_url(value: Any) -> str | None:
    """`value` if it is an http(s) or file URL with no spaces or control characters, else None."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    # Browsers drop tabs and newlines inside URLs ("java\tscript:"): refuse any such character.
    if not url or any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        return None
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return None
    return url if scheme in SAFE_SCHEMES else None


def locator_label(page: Any = None, slide: Any = None, start_s: Any = None, heading: Any = None) -> str:
    """Where a passage is, as a reader says it: "p. 5", "slide 3", "02:05" or the last heading."""
    if isinstance(page, int):
        return f"p. {page}"
    if isinstance(slide, int):
        return f"slide {slide}"
    if isinstance(start_s, int | float):
        return clock(start_s)
    if isinstance(heading, str) and heading:
        return heading.rsplit(" > ", 1)[-1]
    return ""


def anchor(href: str, text: Any) -> Markup:
    # Markup.format escapes both arguments.
    return Markup('<a href="{}">{}</a>').format(href, text)


def render(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any, status: Any = None
) -> Markup | str | None:
    """The cell's HTML for the columns kb knows, or None to let Datasette render it.

    Links lead where a browser can follow them (targets.open_url): never to file://, which an
    http page may not open, nor to a learner copy's relative link, which means nothing on the server.
    """
    from .targets import file_url, open_url, source_of, view_url

    if table is not None and table not in LINKED_TABLES:
        return None
    if value is None:
        return None
    source = _row_source(row, table, status, source_of)
    chunk_id = _row_value(row, "id") if table == "chunks" else _row_value(row, "chunk_id")
    if column == "source_id" and table == "chunks":
        title = value.get("label") if isinstance(value, dict) else None
        source = source_of(status, value.get("value") if isinstance(value, dict) else value)
        if source is None:
            return None
        return anchor(view_url(datasette, database, source.id, chunk_id), title or source.title)
    if column == "title" and table == "sources" and source is not None:
        return anchor(view_url(datasette, database, source.id), value)
    if column == "content_hash" and table == "sources":
        stored = file_url(datasette, database, source)
        return anchor(stored, value) if stored else None
    if column == "uri":
        if source is not None and table in ("sources", "chunk_sources", None):
            target = safe_url(value) if value.startswith(("http:", "https:")) else None
            return anchor(target or view_url(datasette, database, source.id), value)
        url = safe_url(value)
        return anchor(url, value) if url and not url.startswith("file:") else None
    if column == "link":
        url = open_url(datasette, database, source, chunk_id, _row_value(row, "page"), value)
        if url is None:
            url = safe_url(value)
            url = url if url and not url.startswith("file:") else None
        return anchor(url, value) if url else None
    if column == "chunk_id" and isinstance(value, int) and table != "chunks":
        return anchor(datasette.urls.row(database, "chunks", str(value)), value)
    if column not in ("page", "slide", "start_s", "end_s"):
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    label = clock(value) if column in ("start_s", "end_s") else locator_label(**{column: value})
    if column == "end_s":
        return label
    url = open_url(datasette, database, source, chunk_id, _row_value(row, "page"), _row_value(row, "link"))
    return anchor(url, label) if url else label


def _row_source(row: Any, table: str | None, status: Any, source_of: Any) -> Any:
    """The SourceInfo of the row's source: by source_id (chunks), id (sources) or uri (views, queries)."""
    if status is None:
        return None
    if table == "chunks":
        value = _row_value(row, "source_id")
        return source_of(status, value.get("value") if isinstance(value, dict) else value)
    if table == "sources":
        return source_of(status, _row_value(row, "id"))
    uri = _row_value(row, "uri")
    return source_of(status, status.uris.get(uri)) if isinstance(uri, str) else None


def _row_value(row: Any, key: str) -> Any:
    try:
        return row[key] if key in row.keys() else None
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
