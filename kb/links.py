"""Deep links: what a citation opens (DESIGN.md, "Deep links")."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

from .types import Locator


def youtube_id(uri: str) -> str | None:
    parsed = urlparse(uri)
    host = (parsed.hostname or "").lower()
    if host in ("youtu.be",):
        return parsed.path.lstrip("/") or None
    if host.endswith("youtube.com"):
        return (parse_qs(parsed.query).get("v") or [None])[0]
    return None


def deep_link(uri: str, kind: str, locator: Locator) -> str:
    """The URL that opens `uri` at `locator`: a PDF page, a slide, a heading anchor or a media time."""
    base = uri.split("#", 1)[0]
    if locator.page is not None:
        return f"{base}#page={locator.page}"
    if locator.slide is not None:
        return f"{base}#slide={locator.slide}"
    if locator.start_s is not None:
        seconds = int(locator.start_s)
        video = youtube_id(uri)
        if video:
            return f"https://www.youtube.com/watch?v={video}&t={seconds}s"
        return f"{base}#t={seconds}"
    if locator.anchor:
        return f"{base}#{locator.anchor}"
    return uri


def is_relative(link: str) -> bool:
    """True for a link relative to the KB file (a learner copy's), False for a URL or an absolute path."""
    try:
        return not urlsplit(link).scheme and not link.startswith(("/", "\\"))
    except ValueError:
        return False


def local_link(kb_path: Path, link: str | None) -> str | None:
    """A learner copy's relative link as a file:// URL when the original sits beside the copy, else unchanged.

    Only files inside the copy's own folder count: a link in a file someone sent you cannot point
    the reader at `../../` anything.
    """
    if not link or not is_relative(link):
        return link
    path, _, fragment = link.partition("#")
    folder = kb_path.resolve().parent
    candidate = (folder / unquote(path)).resolve()
    if folder not in candidate.parents or not candidate.is_file():
        return link
    return candidate.as_uri() + (f"#{fragment}" if fragment else "")
