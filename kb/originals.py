"""Original files kept inside a KB file: stored by SHA-256 in blocks, read back by byte range.

`kb export` stores them in the learner copy (reading each file from where it was ingested); the
plugin serves them. Nothing here knows where the bytes came from, so storing them at ingest time
later needs only a call to `store` there.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

BLOCK_SIZE = 256 * 1024
"""Bytes per stored block. Small enough that a plain Datasette page of the blocks table (100 rows)
stays a few MB, large enough that a 1 GB recording is 4,000 rows."""

MEDIA_TYPES = {
    ".pdf": "application/pdf",
    ".html": "text/html",
    ".htm": "text/html",
    ".xhtml": "application/xhtml+xml",
    ".md": "text/plain; charset=utf-8",
    ".markdown": "text/plain; charset=utf-8",
    ".mdown": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".text": "text/plain; charset=utf-8",
    ".rst": "text/plain; charset=utf-8",
    ".org": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8",
    ".vtt": "text/vtt; charset=utf-8",
    ".srt": "text/plain; charset=utf-8",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".pptm": "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".epub": "application/epub+zip",
    ".rtf": "application/rtf",
    ".eml": "message/rfc822",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".wav": "audio/wav",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
    ".aac": "audio/aac",
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
}
"""Media types by file suffix: a fixed table, so the type does not depend on the machine's mime.types."""
OCTET_STREAM = "application/octet-stream"
RECORDING_KINDS = frozenset({"media"})


def media_type(name: str) -> str:
    """The media type of a file name, application/octet-stream when kb does not know it."""
    return MEDIA_TYPES.get(PurePosixPath(name.lower()).suffix, OCTET_STREAM)


def is_recording(kind: str | None, name: str) -> bool:
    """Audio or video: what `kb export --sources documents` leaves out."""
    return kind in RECORDING_KINDS or media_type(name).startswith(("audio/", "video/"))


def uri_name(uri: str) -> str:
    """The last path segment of a source's URI (file, relative or web), percent-decoded."""
    try:
        path = urlsplit(uri).path
    except ValueError:
        path = uri
    return unquote(path.rstrip("/").rsplit("/", 1)[-1])


_UNSAFE = re.compile(r'["\\/:*?<>|;%\x00-\x1f\x7f]')


def safe_file_name(name: str, fallback: str) -> str:
    """`name` as a file name a browser may show and save: one segment, no controls, quotes or path.

    A KB someone sent you may name a source anything (`../../x`, a newline, a quote that would
    end a Content-Disposition value): what is left of it is printable and cannot leave a folder.
    """
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # Control, format (bidi overrides), surrogate and unassigned characters go.
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub("_", name).strip().strip(".").strip()
    return name[:150] or fallback


def ascii_file_name(name: str) -> str:
    """The safe name in ASCII, for the plain `filename=` of a Content-Disposition header."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return "".join(ch if ch.isalnum() or ch in " ._-()[]+,=@!#$&'~" else "_" for ch in folded).strip() or "file"


def stored_hashes(conn: Any) -> set[str]:
    return {row[0] for row in conn.execute("SELECT sha256 FROM source_files")}


def store(conn: Any, sha256: str, blocks: Iterable[bytes], media: str) -> tuple[str, int]:
    """Write `blocks` as the file `sha256`; return the SHA-256 and size of what was written.

    The caller compares the digest with `sha256` and rolls back when they differ (a file changed
    since it was ingested); storing what was read keeps a single pass over large recordings.
    """
    digest = hashlib.sha256()
    size = 0
    conn.execute("INSERT INTO source_files(sha256, size, media_type) VALUES (?, 0, ?)", (sha256, media))
    for number, block in enumerate(blocks):
        digest.update(block)
        size += len(block)
        conn.execute("INSERT INTO source_file_blocks(sha256, block, data) VALUES (?, ?, ?)", (sha256, number, block))
    conn.execute("UPDATE source_files SET size = ? WHERE sha256 = ?", (size, sha256))
    return digest.hexdigest(), size


def read_file_blocks(path: Any, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            yield block


def block_map(conn: Any, sha256: str) -> list[tuple[int, int]]:
    """(block number, length) of every block of a stored file, in order (length() reads no content)."""
    return conn.execute(
        "SELECT block, length(data) FROM source_file_blocks WHERE sha256 = ? ORDER BY block", (sha256,)
    ).fetchall()


def spans(blocks: list[tuple[int, int]], start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(block number, first byte, last byte + 1) within each block that holds bytes start..end-1."""
    offset = 0
    for number, length in blocks:
        if offset >= end:
            return
        if offset + length > start:
            yield number, max(start - offset, 0), min(end - offset, length)
        offset += length


def read_block(conn: Any, sha256: str, number: int, first: int, stop: int) -> bytes:
    # substr() on a BLOB counts bytes from 1.
    row = conn.execute(
        "SELECT substr(data, ?, ?) FROM source_file_blocks WHERE sha256 = ? AND block = ?",
        (first + 1, stop - first, sha256, number),
    ).fetchone()
    return bytes(row[0]) if row and row[0] is not None else b""


def forget_unreferenced(conn: Any) -> int:
    """Delete stored files no source refers to any more (after sources were removed); return how many."""
    cursor = conn.execute(
        "DELETE FROM source_files WHERE sha256 NOT IN (SELECT content_hash FROM sources WHERE content_hash IS NOT NULL)"
    )
    return cursor.rowcount
