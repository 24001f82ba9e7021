"""Deep links: what a citation opens (DESIGN.md, "Deep links")."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

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
