"""Stage 2 of ingest: what a found or fetched source is, before a byte of it is read.

A Candidate (a file kb/discover.py found) and a Fetched item (what a fetcher brought in) become the
same Planned record, so the rest of the pipeline has one path for both. Nothing here reads the KB:
what the KB already holds is the driver's to weigh (kb/ingest.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..discover import Candidate
from ..plugins import connector_for
from ..types import Fetched


@dataclass
class Planned:
    """One source about to be read: the name it is stored under, its connector, where its content is."""

    uri: str
    connector: Any
    """The connector class that reads it, or None when none does (the driver says what that means)."""
    name: str
    """The file name handed to the connector (a fetched source's may be empty)."""
    path: Path | None = None
    """The file on disk, or a fetcher's local copy (a downloaded video)."""
    data: bytes | None = None
    """Content a fetcher already holds in memory."""
    local: bool = False
    """A file kb found itself: its modification time is recorded, a rename is recognised, and a failure
    is recorded only while the file is there."""
    explicit: bool = True
    """Named by the user (a file of a type no connector reads is then an error, not skipped)."""
    size: int = 0
    title: str | None = None
    """A title better than the connector's (a video's, from its page)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The fetcher's metadata, stored with the source (etag, uploader, licence, ...)."""
    not_modified: bool = False
    """The server said the copy ingested before is current: nothing to read."""


def plan_file(candidate: Candidate) -> Planned:
    """A file found on disk (its problems, if any, already handled by the driver)."""
    path = candidate.path
    return Planned(
        uri=path.resolve().as_uri(),
        connector=connector_for(path.name),
        name=path.name,
        path=path,
        local=True,
        explicit=candidate.explicit,
        size=candidate.size,
    )


def plan_fetched(fetched: Fetched) -> Planned:
    """A source a fetcher brought in (its fetch error, if any, already handled by the driver)."""
    return Planned(
        uri=fetched.uri,
        connector=connector_for(fetched.name or fetched.uri),
        name=fetched.name,
        path=Path(fetched.path) if fetched.path is not None else None,
        data=fetched.data,
        title=fetched.title,
        metadata=dict(fetched.metadata),
        not_modified=fetched.not_modified,
    )


def unreadable(name: str) -> str:
    """One sentence for a file kb has no reader for, naming what it does read."""
    suffix = Path(name).suffix.lower()
    what = f"{suffix} files" if suffix else "files without a suffix"
    return f'kb does not read {what} (the README\'s "What kb reads" lists the formats it does)'


def crawlable(name: str) -> bool:
    """Whether a crawl should fetch a link of this name: some connector reads it, and it is not one that
    opts out (images: a site's logos and icons are not course text; ingest image files by name or folder)."""
    connector = connector_for(name)
    return connector is not None and getattr(connector, "crawled", True)
