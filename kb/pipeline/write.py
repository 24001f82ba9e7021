"""Stage 7 of ingest: one source written in one transaction; only then does its report say so."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..db import sqlite3
from ..errors import SourceError
from ..store import KB
from ..types import SourceReport
from .chunk import Prepared
from .read import Content


@contextmanager
def storing_errors() -> Iterator[None]:
    """Text that parsed but cannot be chunked, embedded or stored fails its source, not the run;
    a busy or broken KB (and running out of memory) still ends the run."""
    try:
        yield
    except sqlite3.OperationalError:
        raise  # the KB itself is busy or broken: not this source's fault, stop the run
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:
        raise SourceError(f"could not be stored ({type(exc).__name__}: {exc})") from exc


def write(
    kb: KB,
    prepared: Prepared,
    content: Content,
    report: SourceReport,
    *,
    settings_key: str,
    fetched_at: str | None = None,
) -> None:
    """Replace what `kb` holds for the source with `prepared`, in one transaction, and say so in `report`."""
    doc = prepared.doc
    report.kind = doc.kind
    report.pages = doc.metadata.get("pages")
    report.note = doc.metadata.get("ocr_note")
    with storing_errors():
        kb.write_source(
            doc,
            status=prepared.status,
            content_hash=content.content_hash,
            size=content.size,
            mtime=content.mtime,
            settings_key=settings_key,
            chunks=prepared.chunks,
            vectors=prepared.vectors,
            error=prepared.reason,
            fetched_at=fetched_at,
            flags=prepared.flags,
        )
    # Only once the source is committed does the report say so.
    report.status, report.reason, report.chunks = prepared.status, prepared.reason, len(prepared.chunks)
    report.flags = dict(prepared.flag_counts)
