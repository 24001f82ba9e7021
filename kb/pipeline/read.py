"""Stages 3 and 4 of ingest: a source's bytes within the size limit, then its Document through its
connector within the time limit. Only files are touched here, never the KB."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..deadlines import deadline
from ..errors import SourceError
from ..types import Document, Limits, SourceFile
from . import silent
from .plan import Planned


@dataclass
class Content:
    """What was read of a source: its bytes, their SHA-256 and size, and the file's modification time."""

    data: bytes
    """Empty for a connector that reads the path itself (`reads_path`: media far larger than memory)."""
    content_hash: str
    size: int
    mtime: float | None = None
    """Seen before reading, so a write during the read shows up next run; None for a fetched source."""


def read(planned: Planned, limits: Limits, *, keep_bytes: bool = True) -> Content:
    """The content of `planned`, from memory or from its file, refused past the size limit.

    `keep_bytes=False` (a driver whose workers re-read the file by path): the file is only hashed,
    as a stream, and the content carries no bytes."""
    if planned.data is not None:
        return Content(planned.data, hashlib.sha256(planned.data).hexdigest(), len(planned.data))
    if planned.path is None:
        raise SourceError("the fetcher returned no content")
    content = _read_file(planned.connector, planned.path, limits, keep_bytes=keep_bytes)
    return content if planned.local else replace(content, mtime=None)


def _read_file(connector_cls: Any, path: Path, limits: Limits, *, keep_bytes: bool = True) -> Content:
    """The file's bytes (none for a connector that reads the path itself), hash, size and mtime."""
    if not keep_bytes or getattr(connector_cls, "reads_path", False):
        # Media files can be far larger than what is sensible to hold in memory: hash as a stream.
        limit = getattr(connector_cls, "max_bytes", None) or limits.max_bytes
        size, digest, mtime = _hash_file(path, limit)
        return Content(b"", digest, size, mtime)
    data, info = _read(path, limits.max_bytes)
    return Content(data, hashlib.sha256(data).hexdigest(), len(data), info.st_mtime)


@contextmanager
def _reading(path: Path, limit: int) -> Iterator[os.stat_result]:
    """The file's stat, refused unless it is a regular file within `limit`; its OS errors as one sentence."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SourceError("not a regular file")
        if info.st_size > limit:
            raise SourceError(f"file too large ({info.st_size / 2**20:,.1f} MB; the limit is {limit / 2**20:,.0f} MB)")
        yield info
    except PermissionError as exc:
        raise SourceError("permission denied") from exc
    except OSError as exc:
        raise SourceError(f"cannot read ({exc.strerror or exc})") from exc


def _hash_file(path: Path, limit: int) -> tuple[int, str, float]:
    digest = hashlib.sha256()
    size = 0
    with _reading(path, limit) as info, path.open("rb") as handle:
        while block := handle.read(1 << 20):
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest(), info.st_mtime


def _read(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    with _reading(path, limit) as info, path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise SourceError("file grew past the size limit while being read")
    return data, info


def extract(
    planned: Planned,
    content: Content,
    limits: Limits,
    options: dict[str, Any],
    progress: Callable[..., None] = silent,
) -> Document:
    """The Document the connector reads from `content`, under the per-source deadline.

    A failure of the connector on hostile input becomes this source's SourceError, never the run's end.
    """
    source = SourceFile(
        uri=planned.uri,
        path=planned.path,
        data=content.data,
        limits=limits,
        options=options,
        name=planned.name,
        content_hash=content.content_hash,
        progress=progress,
    )
    connector = planned.connector()
    seconds = limits.timeout_s
    budget = getattr(connector, "time_budget", None)
    if seconds > 0 and budget is not None:
        # A connector whose work grows with the source's length (transcribing an hour of
        # lecture) may claim more than the per-source limit; never less.
        seconds = max(seconds, budget(source))
        # The connector sees the limit it actually runs under (a transcriber paces itself by it).
        source.limits = replace(source.limits, timeout_s=seconds)
    try:
        with deadline(seconds):
            doc = connector.extract(source)
    except (SourceError, MemoryError, RecursionError):
        raise
    except Exception as exc:  # a connector tripping over hostile input must not end the run
        raise SourceError(f"{planned.connector.kind} connector failed ({type(exc).__name__}: {exc})") from exc
    if planned.title:
        # The page's title beats the connector's (a downloaded video is named by its id),
        # also where the connector used its own title as the heading.
        old_title, doc.title = doc.title, planned.title
        for section in doc.sections:
            if section.locator.heading == old_title:
                section.locator = replace(section.locator, heading=planned.title)
    doc.metadata = {**doc.metadata, **planned.metadata}
    return doc
