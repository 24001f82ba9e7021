"""Other document formats through unstructured: EPUB, OpenDocument text, RTF, reStructuredText and Org.

unstructured partitions these by converting them to HTML with pandoc and partitioning that HTML.
kb runs the Debian pandoc itself (bounded in time and memory, `--sandbox` so an `include`
directive cannot read local files) and hands the HTML to unstructured's `partition_html`
(what unstructured's own partition_epub/odt/rtf/rst/org do, minus the pypandoc wrapper, which
is not installed and cannot bound pandoc's time or memory). E-mail (.eml) is left out: unstructured's
partition_email needs python-dateutil, which is not installed. Title elements become the heading
path; page numbers, where a format has them, become the page locator.

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
import os
import subprocess
import tempfile
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
    suffixes = tuple(PANDOC_FORMATS)

    def extract(self, source: SourceFile) -> Document:
        suffix = Path(source.name or (source.path.name if source.path else "")).suffix.lower()
        if not source.data.strip():
            raise SourceError("empty file")
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
    import io
    import zipfile

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
    import io
    import re
    import zipfile

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
    import io
    import zipfile

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


def _sections(elements: list[Any], max_chars: int) -> tuple[str | None, list[Section]]:
    """Group elements into sections: Title elements open headings, page numbers split sections."""
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
        if category == "Title":
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


@hookimpl
def register_connectors(register):
    register(UnstructuredConnector)
