"""EPUB, OpenDocument text, RTF, reStructuredText and Org, converted to HTML by pandoc and
partitioned by unstructured.

unstructured partitions these formats by converting them to HTML with pandoc and partitioning that
HTML. kb runs the Debian pandoc itself (bounded in time and memory, `--sandbox` so an `include`
directive cannot read local files) and hands the HTML to unstructured's `partition_html`
(what unstructured's own partition_epub/odt/rtf/rst/org do, minus the pypandoc wrapper, which
is not installed and cannot bound pandoc's time or memory). Title elements become the heading
path; page numbers, where a format has them, become the page locator.
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
import zipfile
from pathlib import Path

from kb import Document, Limits, SourceError, SourceFile

from .._office_safety import check_archive, fallback_title
from ._unstructured import element_sections, partition_html

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
FONT_OBFUSCATION = (b"http://www.idpf.org/2008/embedding", b"http://ns.adobe.com/pdf/enc#RC")
"""Algorithms that only scramble embedded fonts: the text of such a book is readable."""


class PandocConnector:
    kind = "pandoc"
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
        title, sections = element_sections(partition_html(html), source.limits.max_chars)
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


def _pandoc_html(data: bytes, fmt: str, limits: Limits) -> str:
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
