"""The stored originals of a KB over HTTP: /-/kb/DB/files/SOURCE_ID/NAME, read-only, with byte ranges.

Only files of KBs the plugin checked and trusts, only by a source id of that KB and its exact
safe name; anything else is a 404 that says nothing about other files. Ranges let a player seek
in a recording without downloading it. What a stored file may do in the browser is limited: its
type comes from kb's own table (never from the file), nosniff, and a sandbox for every type that
could run script on the plugin's origin (an HTML page someone put in a course).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any
from urllib.parse import quote, unquote

from datasette.utils import tilde_decode
from datasette.utils.asgi import Response

from kb.originals import ascii_file_name, block_map, media_type, read_block, spans

SEND_BYTES = 1 << 20
"""Most bytes read from the database per message sent: a 2 GB recording is streamed, never held."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
# Types the browser shows itself without running anything of the file's own on kb's origin.
UNSANDBOXED = ("application/pdf", "audio/", "video/", "image/png", "image/jpeg", "image/gif", "image/webp")


SANDBOX = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"
"""No script, no forms, an opaque origin: a stored web page shows its text and styles, and does nothing."""


class Unsatisfiable(Exception):
    """The Range asks for bytes past the end of the file."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last + 1) of a single byte range; None to send the whole file (no, or an unusable, Range).

    RFC 9110: a server may ignore a Range it does not support (several ranges, another unit, bad
    syntax) and send the whole file; a well-formed range wholly past the end is 416.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # "-N": the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            raise Unsatisfiable
        return max(size - count, 0), size
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored, as the RFC says
    if start >= size:
        raise Unsatisfiable
    end = min(int(last) + 1, size) if last else size
    return start, end


def content_disposition(name: str) -> str:
    """inline, with the safe name twice: plain ASCII for old clients, RFC 5987 UTF-8 for the rest."""
    return f"inline; filename=\"{ascii_file_name(name)}\"; filename*=UTF-8''{quote(name, safe='')}"


def security_headers(content_type: str) -> dict[str, str]:
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Referrer-Policy": "no-referrer",
    }
    # Chromium's PDF viewer does not open a PDF served in a CSP sandbox; PDFs, images and media run
    # no script of their own on this origin. Everything else (HTML, SVG, XML, unknown) is sandboxed.
    if not content_type.startswith(UNSANDBOXED):
        headers["Content-Security-Policy"] = SANDBOX
    return headers


class StoredFile:
    """An ASGI response that streams bytes first..end-1 of a stored file from the database."""

    def __init__(self, db: Any, sha256: str, blocks: list[tuple[int, int]], first: int, end: int, status: int,
                 headers: dict[str, str], head: bool):  # fmt: skip
        self.db, self.sha256, self.blocks = db, sha256, blocks
        self.first, self.end, self.status, self.headers, self.head = first, end, status, headers, head

    async def asgi_send(self, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [[k.lower().encode("latin-1"), v.encode("latin-1")] for k, v in self.headers.items()],
            }
        )
        if self.head or self.first >= self.end:
            await send({"type": "http.response.body", "body": b""})
            return
        pending = deque(spans(self.blocks, self.first, self.end))
        while pending:
            batch, size = [], 0
            while pending and (not batch or size + pending[0][2] - pending[0][1] <= SEND_BYTES):
                batch.append(pending.popleft())
                size += batch[-1][2] - batch[-1][1]
            body = await self.db.execute_fn(lambda conn, batch=batch: self._read(conn, batch))
            await send({"type": "http.response.body", "body": body, "more_body": bool(pending)})

    def _read(self, conn: Any, batch: list[tuple[int, int, int]]) -> bytes:
        return b"".join(read_block(conn, self.sha256, n, first, stop) for n, first, stop in batch)


def _text(message: str, status: int, **headers: str) -> Response:
    return Response.text(message, status=status, headers=headers)


async def not_found(request: Any) -> Response:
    return _text("There is nothing at this address.", 404)


async def serve_file(datasette: Any, request: Any) -> Any:
    """GET or HEAD one stored original, whole or by a single byte range."""
    from .pages import PageError, kb_database

    if request.method not in ("GET", "HEAD"):
        return _text("The stored files are read-only.", 405, Allow="GET, HEAD")
    try:
        name, status = await kb_database(datasette, request, tilde_decode(request.url_vars["database"]))
    except PageError as exc:
        return _text(str(exc), exc.status)
    source = status.sources.get(int(request.url_vars["source"]))
    # The name must be the source's own safe name: no other spelling (../, %2F, another file) is served.
    if source is None or not source.stored or unquote(request.url_vars["name"]) != source.name:
        return _text("There is no such stored file here.", 404)
    db = datasette.get_database(name)
    blocks = await db.execute_fn(lambda conn: block_map(conn, source.sha256))
    size = sum(length for _, length in blocks)
    content_type = media_type(source.name)
    etag = f'"{source.sha256}"'
    headers = {
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(source.name),
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, max-age=3600",
        **security_headers(content_type),
    }
    if request.headers.get("if-none-match") == etag:
        return StoredFile(db, source.sha256, blocks, 0, 0, 304, headers, head=True)
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range and if_range != etag:
        wanted = None  # the client holds another version: send this one whole
    try:
        byte_range = parse_range(wanted, size)
    except Unsatisfiable:
        return _text("The range asked for lies outside the file.", 416, **{"Content-Range": f"bytes */{size}"})
    first, end = byte_range or (0, size)
    headers["Content-Length"] = str(end - first)
    code = 200
    if byte_range is not None:
        code = 206
        headers["Content-Range"] = f"bytes {first}-{end - 1}/{size}"
    return StoredFile(db, source.sha256, blocks, first, end, code, headers, head=request.method == "HEAD")
