"""PDF connector (pypdf): one section per page, headings from the PDF's outline."""

from __future__ import annotations

import io
import logging
from typing import Any

from kb.errors import SourceError
from kb.hookspecs import hookimpl
from kb.types import Document, Locator, Section, SourceFile


class PdfConnector:
    kind = "pdf"
    suffixes = (".pdf",)

    def extract(self, source: SourceFile) -> Document:
        import pypdf
        from pypdf.errors import DependencyError, PdfReadError, PyPdfError

        # pypdf warns on every malformed object; the ingest report carries what matters.
        logging.getLogger("pypdf").setLevel(logging.ERROR)
        if not source.data.strip():
            raise SourceError("empty file")
        if b"%PDF-" not in source.data[:1024]:
            raise SourceError("not a PDF file (no %PDF header)")
        try:
            reader = pypdf.PdfReader(io.BytesIO(source.data), strict=False)
            if reader.is_encrypted:
                try:
                    unlocked = reader.decrypt("")
                except DependencyError as exc:
                    raise SourceError(f"encrypted PDF that needs a missing library to open ({exc})") from exc
                if not unlocked:
                    raise SourceError("encrypted PDF: a password is needed to open it")
            count = len(reader.pages)
            if count > source.limits.max_pages:
                raise SourceError(f"too many pages ({count:,}; the limit is {source.limits.max_pages:,})")
            headings = _outline_headings(reader, count)
            sections = []
            empty_pages = 0
            chars = 0
            for number, page in enumerate(reader.pages, start=1):
                try:
                    text = page.extract_text() or ""
                except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise SourceError(f"page {number} cannot be read ({type(exc).__name__}: {exc})") from exc
                chars += len(text)
                if chars > source.limits.max_chars:
                    raise SourceError(
                        f"too much text (over {source.limits.max_chars:,} characters by page {number})"
                    )
                if not text.strip():
                    empty_pages += 1
                    continue
                sections.append(Section(text=text, locator=Locator(page=number, heading=headings.get(number))))
            metadata = _metadata(reader)
        except SourceError:
            raise
        except (PdfReadError, PyPdfError) as exc:
            raise SourceError(f"corrupt or truncated PDF ({exc})") from exc
        metadata.update({"pages": count, "pages_without_text": empty_pages})
        title = metadata.get("title") or source.path.stem
        doc = Document(uri=source.uri, kind=self.kind, title=title, sections=sections, metadata=metadata)
        if not sections:
            doc.empty_reason = "no text layer (scanned?)" if count else "the PDF has no pages"
        return doc


def _metadata(reader: Any) -> dict[str, Any]:
    try:
        info = reader.metadata or {}
    except Exception:  # a broken /Info dictionary must not cost the whole document
        return {}
    out = {}
    for key, name in (("/Title", "title"), ("/Author", "author"), ("/Subject", "subject")):
        value = info.get(key)
        if value and str(value).strip():
            out[name] = str(value).strip()
    return out


def _outline_headings(reader: Any, page_count: int) -> dict[int, str]:
    """Heading path in force on each page (1-based), from the PDF's bookmarks."""
    starts: list[tuple[int, int, str]] = []  # (page, order, path)

    def walk(items: list, parents: tuple[str, ...]) -> None:
        last: tuple[str, ...] = parents
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            title = str(getattr(item, "title", "") or "").strip()
            if not title:
                continue
            last = parents + (title,)
            try:
                page = reader.get_destination_page_number(item)
            except Exception:
                continue
            if page is not None and page >= 0:
                starts.append((page + 1, len(starts), " > ".join(last)))

    try:
        walk(reader.outline, ())
    except Exception:  # outlines are optional; a broken one only costs the headings
        return {}
    if not starts:
        return {}
    starts.sort()
    headings: dict[int, str] = {}
    current = None
    pointer = 0
    for page in range(1, page_count + 1):
        first_here = None
        while pointer < len(starts) and starts[pointer][0] <= page:
            if starts[pointer][0] == page and first_here is None:
                first_here = starts[pointer][2]
            current = starts[pointer][2]
            pointer += 1
        heading = first_here or current
        if heading:
            headings[page] = heading
    return headings


@hookimpl
def register_connectors(register):
    register(PdfConnector)
