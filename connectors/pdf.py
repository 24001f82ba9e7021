"""PDF connector (pypdf): one section per page, headings from the PDF's outline."""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
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
            pages: list[str] = []
            chars = 0
            for number, page in enumerate(reader.pages, start=1):
                try:
                    text = page.extract_text() or ""
                except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise SourceError(f"page {number} cannot be read ({type(exc).__name__}: {exc})") from exc
                chars += len(text)
                if chars > source.limits.max_chars:
                    raise SourceError(f"too much text (over {source.limits.max_chars:,} characters by page {number})")
                pages.append(text)
            pages = strip_running_lines(pages)
            sections = []
            empty_pages = 0
            for number, text in enumerate(pages, start=1):
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
        title = metadata.get("title") or source.stem
        doc = Document(uri=source.uri, kind=self.kind, title=title, sections=sections, metadata=metadata)
        if not sections:
            doc.empty_reason = "no text layer (scanned?)" if count else "the PDF has no pages"
        return doc


_DIGITS = re.compile(r"\d+")


def strip_running_lines(pages: list[str], edge: int = 2) -> list[str]:
    """Drop running headers and footers: lines at a page's top or bottom that recur on most pages.

    "Course title - page 3" on every page would otherwise sit in every chunk, match every query
    and be echoed by a small model as if it were an answer. Digits are ignored when comparing.
    """
    if len(pages) < 3:
        return pages
    counts: Counter[str] = Counter()
    split = [page.splitlines() for page in pages]
    for lines in split:
        stripped = [line.strip() for line in lines if line.strip()]
        if len(stripped) >= 2 * edge:  # a page of a few lines has no header and footer to tell apart
            counts.update({_DIGITS.sub("#", line) for line in stripped[:edge] + stripped[-edge:]})
    running = {line for line, n in counts.items() if n >= max(3, 0.6 * len(pages))}
    if not running:
        return pages
    out = []
    for lines in split:
        content = [i for i, line in enumerate(lines) if line.strip()]
        edges = set(content[:edge] + content[-edge:]) if len(content) >= 2 * edge else set()
        out.append(
            "\n".join(
                line for i, line in enumerate(lines) if not (i in edges and _DIGITS.sub("#", line.strip()) in running)
            )
        )
    return out


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
