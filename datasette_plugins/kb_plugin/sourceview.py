"""The source view (/-/kb/DB/source/ID?chunk=N): a source's stored text in order, the cited passage highlighted.

Built from the KB's chunks, so it works for every kind of source, with or without its original
file: consecutive passages under the same page, slide or heading make one section, and the overlap
the chunker repeats between neighbours is shown once. A recording gets a player that starts at the
passage's time; a PDF a link to its page in the stored file.
"""

from __future__ import annotations

from typing import Any

from datasette.utils import tilde_decode
from datasette.utils.asgi import Response

from kb import clock
from kb.originals import media_type

from .cells import locator_label, safe_url
from .status import SourceInfo
from .targets import file_url, is_web, view_url

WINDOW = 300
"""Passages shown at once: a 2,500-page book is paged around the cited passage, not sent whole."""
MIN_OVERLAP = 12


def overlap(previous: str, current: str, limit: int = 600) -> int:
    """Length of the longest end of `previous` that `current` starts with (the chunker's repeated text)."""
    longest = min(len(previous), len(current), limit)
    for size in range(longest, MIN_OVERLAP - 1, -1):
        if previous.endswith(current[:size]) and (size == len(current) or current[size].isspace()):
            return size
    return 0


def short_heading(heading: str | None, title: str) -> str:
    """A heading path without the source's own title in front ("Handout > Soil moisture" -> "Soil moisture")."""
    parts = (heading or "").split(" > ")
    if len(parts) > 1 and parts[0] == title:
        parts = parts[1:]
    return " > ".join(parts)


def sections(rows: list[dict[str, Any]], cited: int | None, title: str = "") -> list[dict[str, Any]]:
    """Passages grouped by locator, in order, each passage's text without what the previous one repeats."""
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for row in rows:
        key = (row["page"], row["slide"], row["heading"])
        if not out or out[-1]["key"] != key:
            out.append(
                {
                    "key": key,
                    "label": " · ".join(
                        p for p in (locator_label(row["page"], row["slide"]), short_heading(row["heading"], title)) if p
                    ),
                    "page": row["page"],
                    "anchor": row["anchor"],
                    "passages": [],
                }
            )
            previous = None
        text = row["text"]
        lead = overlap(previous["full"], text) if previous is not None else 0
        if lead and previous is not None and row["id"] == cited:
            # The repeated words belong to the cited passage too: highlight them where they are shown.
            shown = previous["text"]
            cut = max(len(shown) - lead, 0)
            previous["text"], previous["tail"] = shown[:cut], shown[cut:]
        passage = {
            "id": row["id"],
            "full": text,
            "text": text[lead:].lstrip(),
            "tail": "",
            "cited": row["id"] == cited,
            "start_s": row["start_s"],
            "time": clock(row["start_s"]) if isinstance(row["start_s"], int | float) else "",
        }
        out[-1]["passages"].append(passage)
        previous = passage
    return out


async def source_page(datasette: Any, request: Any) -> Response:
    """The source view of one source of one KB."""
    from .pages import PageError, kb_database

    context: dict[str, Any] = {}
    code = 200
    try:
        name, status = await kb_database(datasette, request, tilde_decode(request.url_vars["database"]))
        source = status.sources.get(int(request.url_vars["source"]))
        if source is None:
            raise PageError("There is no such source in this KB.", 404)
        context = await _context(datasette, request, name, source)
    except PageError as exc:
        context["error"], code = str(exc), exc.status
    html = await datasette.render_template("kb_source.html", context, request=request)
    return Response.html(html, status=code)


async def _context(datasette: Any, request: Any, name: str, source: SourceInfo) -> dict[str, Any]:
    from .pages import PageError, ascii_int, ask_url

    raw = request.args.get("chunk") or ""
    cited = ascii_int(raw, 0, 2**63 - 1) if raw else None
    if raw and cited is None:
        raise PageError("chunk must be a passage number.")
    db = datasette.get_database(name)
    result = await db.execute(
        "SELECT id, ordinal, text, page, slide, start_s, end_s, heading, anchor, link FROM chunks "
        "WHERE source_id = ? ORDER BY ordinal",
        [source.id],
    )
    rows = [dict(r) for r in result.rows]
    position = next((i for i, r in enumerate(rows) if r["id"] == cited), None)
    offset = request.args.get("from") or ""
    if position is not None:
        start = max(0, position - WINDOW // 3)
    else:
        cited = None  # a passage of another source (or none): show this one from the start
        start = min(ascii_int(offset, 0, 2**63 - 1) or 0, max(len(rows) - 1, 0))
    shown = rows[start : start + WINDOW]
    here = view_url(datasette, name, source.id)
    cited_row = rows[position] if position is not None else None
    original = file_url(datasette, name, source)
    media = media_type(source.name)
    start_s = cited_row["start_s"] if cited_row and isinstance(cited_row["start_s"], int | float) else 0
    web = is_web(source)
    link = safe_url(cited_row["link"]) if cited_row and web else None
    return {
        "database": name,
        "ask_url": ask_url(datasette, name),
        "database_url": datasette.urls.database(name),
        "source": source,
        "sections": sections(shown, cited, source.title),
        "cited": cited,
        "where": (
            locator_label(cited_row["page"], cited_row["slide"], cited_row["start_s"], cited_row["heading"])
            if cited_row
            else ""
        ),
        "heading": cited_row["heading"] if cited_row else None,
        "original_url": original,
        "page_url": f"{original}#page={cited_row['page']}"
        if original and cited_row and isinstance(cited_row["page"], int)
        else None,
        "web_url": link or (safe_url(source.uri) if web else None),
        "youtube": web and bool(link) and "youtube.com/watch" in (link or ""),
        "player": ("video" if media.startswith("video/") else "audio")
        if original and media.startswith(("audio/", "video/"))
        else None,
        "start_s": round(float(start_s), 1),
        "passages_url": datasette.urls.table(name, "chunks") + f"?source_id={source.id}",
        "earlier_url": f"{here}?from={max(0, start - WINDOW)}" if start > 0 else None,
        "later_url": f"{here}?from={start + len(shown)}" if start + len(shown) < len(rows) else None,
        "count": len(rows),
    }
