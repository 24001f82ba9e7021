"""Table cells of a KB as links: deep links, source URIs, locators (page, slide, time) and chunk ids."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup

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


def clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour on."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


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


def render(row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any) -> Markup | str | None:
    """The cell's HTML for the columns kb knows, or None to let Datasette render it."""
    if table is not None and table not in LINKED_TABLES:
        return None
    if value is None:
        return None
    if column in ("link", "uri"):
        url = safe_url(value)
        return anchor(url, value) if url else None
    if column == "chunk_id" and isinstance(value, int) and table != "chunks":
        return anchor(datasette.urls.row(database, "chunks", str(value)), value)
    if column not in ("page", "slide", "start_s", "end_s"):
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    label = clock(value) if column in ("start_s", "end_s") else locator_label(**{column: value})
    link = _row_value(row, "link") if column != "end_s" else None
    url = safe_url(link)
    return anchor(url, label) if url else label


def _row_value(row: Any, key: str) -> Any:
    try:
        return row[key] if key in row.keys() else None
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
