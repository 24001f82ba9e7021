"""Checks on zip-based documents (.pptx, .docx, .xlsx, .epub, .odt) made before any parser sees them.

A hostile archive is refused here with one clear reason: a zip bomb (too many entries, too much
uncompressed data, an entry that expands implausibly), a damaged or truncated archive, a
password-protected Office file (an OLE container, not a zip), and XML that declares entities or a
DTD (external entities read local files; nested ones expand exponentially, "billion laughs").
Python's zipfile never returns more bytes than an entry's header declares, so the declared sizes
checked here bound what the parsers can later read.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from kb import SourceError

OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
"""Compound File Binary (OLE2): legacy .doc/.ppt, and the wrapper of every password-protected Office file."""

XML_SUFFIXES = (".xml", ".rels", ".xhtml", ".html", ".htm", ".opf", ".ncx", ".svg", ".smil", ".xsl")
_SCAN_BLOCK = 1 << 20


@dataclass(frozen=True)
class ZipLimits:
    """What a document archive may hold before it is refused unread."""

    max_entries: int = 50_000
    """A 5,000-slide deck has about 20,000 parts (slide, notes, and their relationships)."""
    max_uncompressed: int = 512 * 2**20
    """The parsers hold every part in memory at once: this bounds their memory."""
    max_ratio: int = 200
    """Office XML compresses 5-30 fold; a zip bomb's entries expand about 1,000 fold."""
    ratio_floor: int = 8 * 2**20
    """Entries smaller than this are never called bombs, whatever their ratio."""


DEFAULT_ZIP_LIMITS = ZipLimits()


def fallback_title(source: Any) -> str:
    """A title when the document names none: the file name's stem (a fetched source has no path)."""
    name = source.name or (source.path.name if source.path is not None else "") or source.uri.rstrip("/")
    return PurePosixPath(name.rsplit("/", 1)[-1]).stem or source.uri


def refuse_ole(data: bytes, label: str) -> None:
    """Raise SourceError when `data` is an OLE container: encrypted Office file or a legacy binary format."""
    if not data.startswith(OLE_SIGNATURE):
        return
    if _has_ole_stream(data, "EncryptedPackage"):
        raise SourceError(f"password-protected (encrypted) Office file: save an unprotected copy of the {label}")
    raise SourceError(
        f"an old binary Office file (Word 97-2003 .doc, Excel .xls or PowerPoint .ppt) named like a {label}: "
        "save it in the current format first"
    )


def _has_ole_stream(data: bytes, name: str) -> bool:
    """Whether the OLE container holds a stream `name`; any OLE file is taken as encrypted when olefile is missing."""
    try:
        import olefile  # installed with unstructured (python-oxmsg needs it)
    except ImportError:
        return True  # every OLE file named .docx/.pptx in practice is an encrypted one
    try:
        with olefile.OleFileIO(io.BytesIO(data)) as ole:
            return ole.exists(name)
    except Exception:  # a damaged container: the signature alone is all we know
        return True


def check_archive(
    data: bytes,
    label: str,
    *,
    required: tuple[str, ...] = (),
    forbid_doctype: bool = True,
    limits: ZipLimits = DEFAULT_ZIP_LIMITS,
) -> None:
    """Refuse `data` (a document that must be a zip archive) unless it is safe to hand to a parser.

    `label` names the format in messages (".docx"); `required` lists parts the format must have;
    `forbid_doctype` refuses any DOCTYPE (Office XML never has one; EPUB's XHTML does, so there
    only entity declarations are refused).
    """
    if not data.strip():
        raise SourceError("empty file")
    refuse_ole(data, label)
    if not data.startswith(b"PK"):
        raise SourceError(f"not {_a(label)} {label} file (not a zip archive)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise SourceError(f"damaged or truncated {label} file (its zip directory cannot be read: {exc})") from exc
    with archive:
        _check_entries(entries, label, limits)
        names = {entry.filename for entry in entries}
        missing = [name for name in required if name not in names]
        if missing:
            raise SourceError(f"not {_a(label)} {label} file (the archive has no {missing[0]})")
        for entry in entries:
            if entry.filename.lower().endswith(XML_SUFFIXES) and not entry.is_dir():
                _scan_xml(archive, entry, label, forbid_doctype)


def _a(label: str) -> str:
    """The article before a format's name: "a .docx", "an EPUB", "an OpenDocument"."""
    return "an" if label[:1] in "AEIOU" else "a"


def _check_entries(entries: list[zipfile.ZipInfo], label: str, limits: ZipLimits) -> None:
    if len(entries) > limits.max_entries:
        raise SourceError(
            f"refused as a likely zip bomb: the {label} archive has {len(entries):,} entries "
            f"(the limit is {limits.max_entries:,})"
        )
    total = sum(entry.file_size for entry in entries)
    if total > limits.max_uncompressed:
        raise SourceError(
            f"refused as a likely zip bomb: the {label} archive expands to {total / 2**20:,.0f} MB "
            f"(the limit is {limits.max_uncompressed / 2**20:,.0f} MB)"
        )
    for entry in entries:
        if entry.flag_bits & 0x1:
            raise SourceError(f"password-protected {label} file (its zip entries are encrypted)")
        ratio = entry.file_size / max(entry.compress_size, 1)
        if entry.file_size > limits.ratio_floor and ratio > limits.max_ratio:
            raise SourceError(
                f"refused as a likely zip bomb: {entry.filename} expands {ratio:,.0f}-fold to "
                f"{entry.file_size / 2**20:,.0f} MB (the limit is {limits.max_ratio}-fold)"
            )


def _scan_xml(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, label: str, forbid_doctype: bool) -> None:
    """Stream one XML part looking for entity or DTD declarations; also proves the entry decompresses."""
    # Inside XML text a literal "<" must be escaped, so these byte strings can only be markup.
    markers = (b"<!ENTITY", b"<!DOCTYPE") if forbid_doctype else (b"<!ENTITY",)
    keep = max(len(m) for m in markers) - 1
    tail = b""
    try:
        with archive.open(entry) as handle:
            while block := handle.read(_SCAN_BLOCK):
                window = tail + block
                for marker in markers:
                    if marker in window:
                        what = "entity declarations" if marker == b"<!ENTITY" else "a DOCTYPE declaration"
                        raise SourceError(
                            f"refused: {entry.filename} in the {label} file has {what} "
                            "(external entities read local files and nested ones expand without bound)"
                        )
                tail = window[-keep:]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise SourceError(f"damaged or truncated {label} file ({entry.filename}: {exc})") from exc
    except NotImplementedError as exc:
        raise SourceError(f"{label} file uses an unsupported zip compression method ({exc})") from exc
