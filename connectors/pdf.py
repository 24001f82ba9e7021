"""PDF connector (pypdf): one section per page, headings from the PDF's outline."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any

from kb import Document, Locator, Section, SourceError, SourceFile, hookimpl, option, read_options

from .ocr import OcrOptions

OCR_SECONDS_PER_PAGE = 4.0
"""Time a page may take to render and OCR here (2.5 s measured for a full page of text, one thread)."""
MAX_OCR_BUDGET_S = 3600.0
"""The most a PDF may claim beyond --timeout for OCR, whatever its page count says."""


@dataclass(frozen=True)
class PdfOptions(OcrOptions):
    """The PDF connector's options: OCR's, and the passwords it tries on a protected file."""

    pdf_passwords: tuple[str, ...] = option((), "Password to open protected PDFs (repeatable).", flag="--pdf-password")


class PdfConnector:
    kind = "pdf"
    suffixes = (".pdf",)
    options = PdfOptions

    def time_budget(self, source: SourceFile) -> float:
        """A scanned book needs more than the per-source limit: a few seconds a page, when OCR may run."""
        from . import ocr

        if read_options(PdfOptions, source.options).ocr == "never" or not ocr.available():
            return 0.0
        import pypdf

        try:
            pages = len(pypdf.PdfReader(io.BytesIO(source.data), strict=False).pages)
        except Exception:  # unreadable here means unreadable in extract too, which says why
            return 0.0
        return min(min(pages, source.limits.max_pages) * OCR_SECONDS_PER_PAGE, MAX_OCR_BUDGET_S)

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
                _unlock(reader, list(read_options(PdfOptions, source.options).pdf_passwords), DependencyError)
            count = len(reader.pages)
            if count > source.limits.max_pages:
                raise SourceError(f"too many pages ({count:,}; the limit is {source.limits.max_pages:,})")
            headings = _outline_headings(reader, count)
            pages: list[str] = []
            drawn: list[bool] = []  # pages worth OCR: a scan is an image; a blank page has nothing to read
            mode = read_options(PdfOptions, source.options).ocr
            chars = 0
            for number, page in enumerate(reader.pages, start=1):
                try:
                    text = page.extract_text() or ""
                except (PyPdfError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise SourceError(f"page {number} cannot be read ({type(exc).__name__}: {exc})") from exc
                drawn.append(_has_images(page) or (mode == "always" and "/Contents" in page))
                chars += len(text)
                if chars > source.limits.max_chars:
                    raise SourceError(f"too much text (over {source.limits.max_chars:,} characters by page {number})")
                pages.append(text)
            pages = strip_running_lines(pages)
            metadata = _metadata(reader)
        except SourceError:
            raise
        except (PdfReadError, PyPdfError) as exc:
            raise SourceError(f"corrupt or truncated PDF ({exc})") from exc
        ocr_note = _read_scanned_pages(pages, drawn, source, metadata)
        sections = []
        empty_pages = 0
        for number, text in enumerate(pages, start=1):
            if not text.strip():
                empty_pages += 1
                continue
            sections.append(Section(text=text, locator=Locator(page=number, heading=headings.get(number))))
        metadata.update({"pages": count, "pages_without_text": empty_pages})
        title = metadata.get("title") or source.stem
        doc = Document(uri=source.uri, kind=self.kind, title=title, sections=sections, metadata=metadata)
        if not sections:
            doc.empty_reason = "no text layer (scanned?)" + (f"; {ocr_note}" if ocr_note else "")
            if not count:
                doc.empty_reason = "the PDF has no pages"
        return doc


def _unlock(reader: Any, passwords: list[str], dependency_error: type) -> None:
    """Open a protected PDF with the empty password (owner-password-only PDFs) or one of those given."""
    for password in ["", *passwords]:
        try:
            if reader.decrypt(password):
                return
        except dependency_error as exc:
            raise SourceError(f"encrypted PDF that needs a missing library to open ({exc})") from exc
    if passwords:
        raise SourceError(
            f"encrypted PDF: {'the password' if len(passwords) == 1 else f'none of the {len(passwords)} passwords'} "
            "given does not open it"
        )
    raise SourceError(
        "encrypted PDF: a password is needed to open it; give it with --pdf-password "
        "(or a file of passwords with --pdf-passwords)"
    )


def _has_images(page: Any) -> bool:
    """Whether the page draws an image (a scan does): read from its resources, nothing decoded."""
    try:
        resources = page.get("/Resources") or {}
        xobjects = resources.get_object().get("/XObject") if hasattr(resources, "get_object") else None
        return bool(xobjects and len(xobjects.get_object()))
    except Exception:  # a damaged resource dictionary: no OCR for this page, the text layer still counts
        return False


def _read_scanned_pages(pages: list[str], drawn: list[bool], source: SourceFile, metadata: dict[str, Any]) -> str:
    """OCR the pages without a text layer that draw an image (every drawn page with --ocr always), in place;
    returns what was done, or the next step when OCR could not run."""
    from . import ocr

    options = read_options(PdfOptions, source.options)
    mode = options.ocr
    wanted = [
        n
        for n, (text, image) in enumerate(zip(pages, drawn), start=1)
        if image and (mode == "always" or (mode == "auto" and not text.strip()))
    ]
    if not wanted:
        return "OCR is off (--ocr never)" if mode == "never" else ""
    if not ocr.available():
        metadata["pages_needing_ocr"] = ocr.page_ranges(wanted)
        return ocr.INSTALL_HINT
    lang = options.ocr_lang
    ocr.check_language(lang)
    texts, failures = ocr.ocr_pdf_pages(source.data, source.path, wanted, lang, source.progress)
    for number, text in texts.items():
        if text.strip():
            pages[number - 1] = text
    read = [n for n, text in texts.items() if text.strip()]
    metadata["ocr_pages"] = read
    note = f"OCR ({lang}) on {'page' if len(read) == 1 else 'pages'} {ocr.page_ranges(read)}" if read else ""
    if failures:
        metadata["ocr_failed_pages"] = {str(k): v for k, v in failures.items()}
        first = next(iter(failures.items()))
        note += f"{'; ' if note else ''}OCR failed on page {ocr.page_ranges(failures)} (page {first[0]}: {first[1]})"
    if note:
        metadata["ocr_note"] = note
    return note or "OCR found no text"


_DIGITS = re.compile(r"\d+")
PAGE_NUMBER = re.compile(
    r"^(?:(?:page|p\.|seite|página|pagina)\s*)?[-\u2013\u2014(\[]?\s*(?:\d{1,5}|[ivxlcdm]{1,8})\s*[-\u2013\u2014)\]]?"
    r"(?:\s*(?:of|/|von|de)\s*\d{1,5})?$",
    re.IGNORECASE,
)
"""A line that is only a page number: "12", "- 12 -", "Page 3 of 10", "xiv"."""
MIN_DENSITY = 0.4
"""A line repeated at the edge of pages is a running header when it stands on at least this share of the
pages from its first appearance to its last: a chapter's header repeats on every page (or every other
page, two-sided) of that chapter only, so counting over the whole book misses it."""


_END_NUMBERS = re.compile(r"\b(\d{1,5})\s*$")


def _end_numbers(line: str) -> set[int]:
    """The number that closes a line: where a running header or footer carries its page number (a number
    opening the line is not used: "5 Shell Variables" is as likely a chapter's own heading)."""
    return {int(n) for match in _END_NUMBERS.finditer(line) for n in match.groups() if n}


def _folio_offset(split: list[list[str]], edge: int) -> int | None:
    """printed page number minus page index, when most pages print it at their top or bottom line.

    A header that carries the page number ("Chapter 1: Introduction 2") is then known on a chapter of
    two pages too, where repetition alone proves nothing."""
    votes: dict[int, int] = {}
    for number, lines in enumerate(split):
        stripped = [line for line in lines if line.strip()]
        if not stripped:
            continue
        for offset in {n - number for line in (stripped[0], stripped[-1]) for n in _end_numbers(line)}:
            votes[offset] = votes.get(offset, 0) + 1
    if not votes:
        return None
    offset, count = max(votes.items(), key=lambda item: item[1])
    return offset if count >= max(3, 0.5 * len(split)) else None


def _mask(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()))


def strip_running_lines(pages: list[str], edge: int = 2) -> list[str]:
    """Drop running headers and footers: page numbers, and lines at a page's top or bottom that recur on
    the pages around them ("Chapter 4: Shell Builtin Commands 41"). Digits are ignored when comparing.

    "Course title - page 3" on every page would otherwise sit in every chunk, match every query
    and be echoed by a small model as if it were an answer.
    """
    if len(pages) < 3:
        return pages
    split = [page.splitlines() for page in pages]
    seen_on: dict[str, list[int]] = {}
    for number, lines in enumerate(split):
        stripped = [line.strip() for line in lines if line.strip()]
        if len(stripped) < 2 * edge:  # a page of a few lines has no header and footer to tell apart
            continue
        for key in {_mask(line) for line in stripped[:edge] + stripped[-edge:]}:
            seen_on.setdefault(key, []).append(number)
    folio = _folio_offset(split, edge)
    running = set()
    for key, where in seen_on.items():
        span = where[-1] - where[0] + 1
        if len(where) >= max(3, 0.6 * len(pages)) or (len(where) >= 3 and len(where) / span >= MIN_DENSITY):
            running.add(key)
    out = []
    for number, lines in enumerate(split):
        content = [i for i, line in enumerate(lines) if line.strip()]
        edges = set(content[:edge] + content[-edge:]) if len(content) >= 2 * edge else set()
        # A lone page number at the very top or bottom goes even on a short page.
        outer = {content[0], content[-1]} if content else set()
        out.append(
            "\n".join(
                line
                for i, line in enumerate(lines)
                if not (
                    (i in edges and _mask(line.strip()) in running)
                    or (i in outer and PAGE_NUMBER.match(line.strip()))
                    or (i in outer and i in edges and folio is not None and number + folio in _end_numbers(line))
                )
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
