"""Other document formats: EPUB, OpenDocument text, RTF, reStructuredText, Org and e-mail (.eml)
through unstructured, and Excel workbooks (.xlsx).

unstructured partitions the first five by converting them to HTML with pandoc and partitioning that
HTML. kb runs the Debian pandoc itself (bounded in time and memory, `--sandbox` so an `include`
directive cannot read local files) and hands the HTML to unstructured's `partition_html`
(what unstructured's own partition_epub/odt/rtf/rst/org do, minus the pypandoc wrapper, which
is not installed and cannot bound pandoc's time or memory). Title elements become the heading
path; page numbers, where a format has them, become the page locator.

Workbooks (.xlsx) are read with openpyxl directly, after the archive is checked like a .docx (zip
bomb, entities, DOCTYPE). unstructured's partition_xlsx reads the same cells through pandas, but it
parses every sheet four times and holds the whole workbook as data frames and HTML before kb can
count a character: `kb ingest` of a 100,000-row, 5-column sheet took 170 s and 660 MB through it,
26 s and 86 MB this way (same busy 2-core machine). openpyxl in read-only mode streams one sheet at
a time, and kb stops at the text limit. Each non-empty sheet is
one section whose heading is the sheet's name, its rows "cell | cell" paragraphs (trailing empty
cells dropped). Formula cells read as the value the spreadsheet program saved with them (Excel,
LibreOffice and Google Sheets all save one); kb never calculates formulas and never follows
external links, so a file written by a script library and never opened in a spreadsheet program
has empty cells there, and their count is recorded in the source's metadata
(`formulas_without_saved_values`). Hidden sheets are read and listed in `hidden_sheets`.

E-mail: unstructured's `partition_email` reads the HTML body (headings become the heading path) or,
when there is none, the plain-text body (no headings: a plain-text line is never a heading). The
title is the Subject; sender and date go to the metadata. Attachments are not ingested (ingest them
as files of their own). Outlook .msg files are not read: no .msg could be made here to test with.

Offline by construction (DESIGN.md): unstructured 0.27 imports spaCy and, at the first text it
classifies, downloads and installs `en_core_web_sm` (unstructured.nlp.tokenize._get_nlp ->
_load_spacy_model -> _install_spacy_model). kb replaces that loader with a blank English pipeline
with a rule-based sentencizer, which needs no model: sentence counts still work and POS tags come
back empty, which only changes whether unstructured labels a paragraph NarrativeText or Text,
a difference kb does not use. The download function itself is replaced by one that refuses, in
case another path reaches it. unstructured's telemetry ping (sent at import) and its usage notice
are switched off through their documented environment variables before it is imported.
unstructured (and the spaCy and torch it imports, ~5-8 s) is imported only when such a file is met.
"""

from __future__ import annotations

import functools
import io
import os
import re
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from kb.errors import SourceError
from kb.hookspecs import hookimpl
from kb.types import Document, Locator, Section, SourceFile

from .office_safety import check_archive, fallback_title

PANDOC_FORMATS = {".epub": "epub", ".odt": "odt", ".rtf": "rtf", ".rst": "rst", ".org": "org"}
ZIP_FORMATS = {
    # (label, a part the format must have, whether a DOCTYPE is refused: EPUB's XHTML has one)
    ".epub": ("EPUB", "META-INF/container.xml", False),
    ".odt": ("OpenDocument", "content.xml", True),
}
PANDOC_HEAP = "512m"
"""pandoc's heap cap (GHC runtime -M): a hostile document ends pandoc, not the machine."""
MAX_HTML_FACTOR = 4
"""pandoc's HTML may be this many times the text limit before it is refused unpartitioned."""


@functools.lru_cache(maxsize=1)
def load_unstructured() -> Any:
    """Import unstructured with telemetry off and its spaCy model download replaced; returns the module.

    Anything in kb that imports unstructured should import it through this function.
    """
    # Any non-empty value opts out (unstructured.utils._telemetry_opt_out); the notice has its own switch.
    os.environ["SCARF_NO_ANALYTICS"] = "1"
    os.environ["DO_NOT_TRACK"] = os.environ.get("DO_NOT_TRACK", "").strip() or "1"
    os.environ["UNSTRUCTURED_DISABLE_NOTICE"] = "1"
    import unstructured
    import unstructured.nlp.tokenize as tokenize

    for name in ("_get_nlp", "_install_spacy_model"):
        if not hasattr(tokenize, name):  # fail closed: never risk the download on an unknown version
            raise SourceError(
                f"unstructured {getattr(unstructured, '__version__', '?')} has no {name}: kb cannot keep "
                "it offline (kb is tested with unstructured 0.27.35)"
            )
    tokenize._get_nlp = _blank_pipeline
    tokenize._install_spacy_model = _refuse_download
    if hasattr(tokenize, "_process_cached"):
        tokenize._process_cached.cache_clear()
    return unstructured


@functools.lru_cache(maxsize=1)
def _blank_pipeline() -> Any:
    """English tokenizer and rule-based sentence splitter: ships inside spaCy, needs no model."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def _refuse_download() -> None:
    raise RuntimeError("kb never downloads models at run time (unstructured asked for a spaCy model)")


class UnstructuredConnector:
    kind = "unstructured"
    suffixes = (*PANDOC_FORMATS, ".xlsx", ".eml")

    def extract(self, source: SourceFile) -> Document:
        suffix = Path(source.name or (source.path.name if source.path else "")).suffix.lower()
        if not source.data.strip():
            raise SourceError("empty file")
        if suffix == ".xlsx":
            return _read_workbook(source)
        if suffix == ".eml":
            return _read_email(source)
        if suffix in ZIP_FORMATS:
            label, required, forbid_doctype = ZIP_FORMATS[suffix]
            check_archive(source.data, label, required=(required,), forbid_doctype=forbid_doctype)
            if suffix == ".odt":
                _refuse_encrypted_odf(source.data)
            else:
                _refuse_drm_epub(source.data)
        fmt = PANDOC_FORMATS[suffix]
        html = _pandoc_html(source.data, fmt, source.limits)
        if len(html) > MAX_HTML_FACTOR * source.limits.max_chars:
            raise SourceError(f"too much text (pandoc made {len(html):,} characters of HTML)")
        title, sections = _sections(_partition_html(html), source.limits.max_chars)
        metadata = _epub_metadata(source.data) if suffix == ".epub" else {}
        doc = Document(
            uri=source.uri,
            kind=fmt,
            title=metadata.pop("title", None) or title or fallback_title(source),
            sections=sections,
            metadata=metadata,
        )
        if not sections:
            doc.empty_reason = "no text found"
        return doc


def _refuse_encrypted_odf(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        try:
            manifest = archive.read("META-INF/manifest.xml")
        except KeyError:
            return
    if b"encryption-data" in manifest:
        raise SourceError("password-protected (encrypted) OpenDocument file: save an unprotected copy")


FONT_OBFUSCATION = (b"http://www.idpf.org/2008/embedding", b"http://ns.adobe.com/pdf/enc#RC")
"""Algorithms that only scramble embedded fonts: the text of such a book is readable."""


def _refuse_drm_epub(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        try:
            listing = archive.read("META-INF/encryption.xml")
        except KeyError:
            return
    algorithms = re.findall(rb'Algorithm\s*=\s*["\']([^"\']+)["\']', listing)
    if any(a not in FONT_OBFUSCATION for a in algorithms if b"xmldsig" not in a):
        raise SourceError("DRM-protected (encrypted) EPUB: its text cannot be read")


def _epub_metadata(data: bytes) -> dict[str, str]:
    """Title and author from the EPUB's package document (the archive was checked before)."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    out: dict[str, str] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            container = etree.fromstring(archive.read("META-INF/container.xml"), parser)
            rootfile = container.find(".//{*}rootfile")
            if rootfile is None or not rootfile.get("full-path"):
                return out
            package = etree.fromstring(archive.read(rootfile.get("full-path")), parser)
    except (KeyError, zipfile.BadZipFile, etree.XMLSyntaxError):
        return out  # pandoc read the book; only its title and author are missing
    for field, name in (("title", "title"), ("creator", "author")):
        found = package.find(f".//{{http://purl.org/dc/elements/1.1/}}{field}")
        if found is not None and (found.text or "").strip():
            out[name] = " ".join(found.text.split())
    return out


def _pandoc_html(data: bytes, fmt: str, limits: Any) -> str:
    """The document as HTML, by the system pandoc, killed past the time limit or its heap cap."""
    with tempfile.TemporaryDirectory(prefix="kb-pandoc-") as folder:
        path = Path(folder) / f"source.{fmt}"
        path.write_bytes(data)
        command = ["pandoc", "+RTS", f"-M{PANDOC_HEAP}", "-RTS", "--sandbox", "-f", fmt, "-t", "html5", str(path)]
        try:
            # subprocess.run kills pandoc on any exception, the engine's deadline included.
            proc = subprocess.run(command, capture_output=True, timeout=limits.timeout_s, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise SourceError(
                "pandoc is not installed (Debian: apt-get install pandoc); it converts this format"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise SourceError(f"pandoc took longer than {limits.timeout_s:g} s") from exc
    if proc.returncode != 0:
        message = " ".join(line for line in proc.stderr.decode(errors="replace").splitlines() if line.strip())
        if "heap overflow" in message.lower():
            raise SourceError(f"too large to convert (pandoc ran out of its {PANDOC_HEAP}B of memory)")
        raise SourceError(f"pandoc cannot read this {fmt} file ({message[-300:] or f'exit {proc.returncode}'})")
    return proc.stdout.decode("utf-8", errors="replace")


def _partition_html(html: str) -> list[Any]:
    load_unstructured()
    from unstructured.partition.html import partition_html

    if not html.strip():
        return []
    return partition_html(text=html)


def _sections(elements: list[Any], max_chars: int, headings: bool = True) -> tuple[str | None, list[Section]]:
    """Group elements into sections: Title elements open headings, page numbers split sections.

    With `headings` False a Title element is kept as text: unstructured guesses titles in plain text
    from a line's shape, and without a spaCy model (see load_unstructured) it guesses most lines.
    """
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buffer: list[str] = []
    page: int | None = None
    first_title: str | None = None
    chars = 0

    def flush() -> None:
        if buffer:
            heading = " > ".join(text for _, text in stack) or None
            sections.append(Section(text="\n\n".join(buffer), locator=Locator(page=page, heading=heading)))
            buffer.clear()

    for element in elements:
        meta = element.metadata
        element_page = getattr(meta, "page_number", None)
        if element_page != page:
            flush()
            page = element_page
        text = (element.text or "").strip()
        category = getattr(element, "category", "")
        if category == "Title" and headings:
            heading = " ".join(text.split())
            if heading:
                flush()
                level = getattr(meta, "category_depth", None) or 0
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, heading))
                first_title = first_title or heading
            continue
        if category == "Table" and getattr(meta, "text_as_html", None):
            text = _table_rows(meta.text_as_html) or text
        elif category == "ListItem":
            text = f"- {text}"
        if not text:
            continue
        chars += len(text)
        if chars > max_chars:
            raise SourceError(f"too much text (over {max_chars:,} characters)")
        buffer.append(text)
    flush()
    return first_title, sections


def _table_rows(html: str) -> str:
    """An HTML table (unstructured's text_as_html) as "cell | cell" rows."""
    import lxml.html

    try:
        table = lxml.html.fragment_fromstring(html, create_parent="div")
    except Exception:  # unstructured's own HTML; if it does not parse, its flat text is used
        return ""
    rows = []
    for tr in table.iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in tr if cell.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n\n".join(rows)


XLSX_PARTS = ("[Content_Types].xml", "xl/workbook.xml")
SPREADSHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def _read_workbook(source: SourceFile) -> Document:
    """An Excel workbook: one section per non-empty sheet, headed by the sheet's name."""
    check_archive(source.data, ".xlsx", required=XLSX_PARTS)
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        # read_only streams each sheet's XML; data_only gives the values saved with formulas;
        # keep_links=False drops external-link caches (nothing is ever fetched either way).
        book = openpyxl.load_workbook(io.BytesIO(source.data), read_only=True, data_only=True, keep_links=False)
    except (InvalidFileException, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise SourceError(f"not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from exc
    sections: list[Section] = []
    hidden: list[str] = []
    chars = 0
    limit = source.limits.max_chars
    try:
        for sheet in book.worksheets:  # chart sheets hold no cells
            name = " ".join(sheet.title.split())
            # Writers that declare a wrong used range would cut rows off; a hostile one would pad
            # every row to column XFD. Reading the cells that are there avoids both.
            sheet.reset_dimensions()
            rows = []
            for values in sheet.iter_rows(values_only=True):
                cells = [_cell_text(value) for value in values]
                while cells and not cells[-1]:
                    cells.pop()
                if not cells:
                    continue
                rows.append(" | ".join(cells))
                chars += len(rows[-1]) + 2
                if chars > limit:
                    raise SourceError(f"too much text (over {limit:,} characters)")
            if rows:
                sections.append(Section(text="\n\n".join(rows), locator=Locator(heading=name or None)))
                if sheet.sheet_state != "visible":
                    hidden.append(name)
    finally:
        book.close()
    metadata: dict[str, Any] = _core_properties(source.data)
    title = metadata.pop("title", None) or fallback_title(source)
    metadata["sheets"] = len(sections)
    if hidden:
        metadata["hidden_sheets"] = hidden
    unsaved = _formulas_without_values(source.data)
    if unsaved:
        metadata["formulas_without_saved_values"] = unsaved
    doc = Document(uri=source.uri, kind="xlsx", title=title, sections=sections, metadata=metadata)
    if not sections:
        doc.empty_reason = "every sheet is empty"
    return doc


def _cell_text(value: Any) -> str:
    """A cell as text: whole numbers without ".0", a date without a midnight time, text on one line."""
    import datetime

    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return f"{value:.15g}"  # Excel's own precision: 0.1+0.2 reads 0.3
    if isinstance(value, datetime.datetime):
        return value.date().isoformat() if value.time() == datetime.time() else value.isoformat(sep=" ")
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return " ".join(str(value).split())


def _core_properties(data: bytes) -> dict[str, str]:
    """Title and author from an Office file's docProps/core.xml (the archive was checked before)."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            core = etree.fromstring(archive.read("docProps/core.xml"), parser)
    except (KeyError, zipfile.BadZipFile, etree.XMLSyntaxError):
        return {}
    out = {}
    for field, name in (("title", "title"), ("creator", "author")):
        found = core.find(f"{{http://purl.org/dc/elements/1.1/}}{field}")
        if found is not None and (found.text or "").strip():
            out[name] = " ".join(found.text.split())
    return out


def _formulas_without_values(data: bytes) -> int:
    """How many formula cells carry no saved value (kb does not calculate them: they read as empty)."""
    from lxml import etree

    cell, formula, value = (f"{{{SPREADSHEET_NS}}}{tag}" for tag in ("c", "f", "v"))
    count = 0
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in archive.namelist():
            if not (name.startswith("xl/worksheets/") and name.endswith(".xml")) or not _has_formula(archive, name):
                continue
            with archive.open(name) as handle:
                # Streamed, each cell dropped once seen: memory stays flat on a large sheet.
                for _, element in etree.iterparse(handle, tag=cell, resolve_entities=False, no_network=True):
                    if element.find(formula) is not None and not (element.findtext(value) or "").strip():
                        count += 1
                    element.clear(keep_tail=False)
                    while element.getprevious() is not None:
                        del element.getparent()[0]
    return count


_FORMULA_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?f[\s>/]")


def _has_formula(archive: zipfile.ZipFile, name: str) -> bool:
    """Whether a sheet's XML has a formula element: a byte scan, so sheets of plain data skip the parse."""
    tail = b""
    with archive.open(name) as handle:
        while block := handle.read(1 << 20):
            if _FORMULA_TAG.search(tail + block):
                return True
            tail = block[-64:]
    return False


MAX_EMAIL_BODY_FACTOR = MAX_HTML_FACTOR
"""The body unstructured partitions may be this many times the text limit before it is refused."""


def _read_email(source: SourceFile) -> Document:
    """An e-mail message (.eml): its body, titled by its Subject; attachments are left out."""
    import email
    import email.policy

    message = email.message_from_bytes(source.data, policy=email.policy.default)
    subject, sender, date = (_header(message, name) for name in ("Subject", "From", "Date"))
    if not (subject or sender or date or _header(message, "Message-ID")):
        raise SourceError("not an e-mail message (it has no Subject, From, Date or Message-ID header)")
    body = message.get_body(preferencelist=("html", "plain"))
    html = body is not None and body.get_content_type() == "text/html"
    # Attachments are never decoded; the body is, once here and once by unstructured.
    cap = MAX_EMAIL_BODY_FACTOR * source.limits.max_chars
    if body is not None and len(body.get_payload(decode=True) or b"") > cap:
        raise SourceError(f"too much text (the message body is over {cap:,} bytes)")
    load_unstructured()
    from unstructured.partition.email import partition_email

    elements = []
    if body is not None:
        elements = partition_email(
            file=io.BytesIO(source.data),
            content_source="text/html" if html else "text/plain",
            process_attachments=False,
        )
    _, sections = _sections(elements, source.limits.max_chars, headings=html)
    metadata = {"sender": sender, "date": _iso_date(date)}
    doc = Document(
        uri=source.uri,
        kind="eml",
        title=subject or fallback_title(source),
        sections=sections,
        metadata={k: v for k, v in metadata.items() if v},
    )
    if not sections:
        doc.empty_reason = "the message has no text body"
    return doc


def _header(message: Any, name: str) -> str:
    """One header as plain text, "" when absent or too malformed for the stdlib's parser."""
    try:
        value = message.get(name)
    except Exception:  # the stdlib's header parser still has rare crashes on hostile headers
        return ""
    return " ".join(str(value or "").split())


def _iso_date(value: str) -> str:
    """An RFC 5322 date as ISO 8601 (kept as written when it does not parse)."""
    import email.utils

    try:
        return email.utils.parsedate_to_datetime(value).isoformat() if value else ""
    except (TypeError, ValueError):
        return value


@hookimpl
def register_connectors(register):
    register(UnstructuredConnector)
