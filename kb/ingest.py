"""Ingest: find sources, read each through its connector, chunk, embed, store one per transaction."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import fusion, sync
from .chunker import ChunkingSettings, chunk_document, clean_line
from .db import sqlite3
from .deadlines import SourceTimeout, deadline
from .discover import Candidate, discover
from .errors import KBError, SourceError
from .injection import flags as find_flags
from .plugins import connector_for, fetcher_for, get_embedder
from .progress import CallbackProgress, Progress
from .store import KB, utcnow
from .types import Document, FetchContext, Fetched, Limits, SourceFile, SourceReport

EMBED_BATCH = 32
"""Chunks embedded per call, so the display can show the embedding step move."""


@dataclass
class IngestResult:
    reports: list[SourceReport] = field(default_factory=list)
    seconds: float = 0.0
    """Wall-clock time of the whole run."""

    @property
    def failed(self) -> bool:
        return any(r.status == "error" for r in self.reports)

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for report in self.reports:
            totals[report.status] = totals.get(report.status, 0) + 1
        totals["chunks"] = sum(r.chunks for r in self.reports if r.status == "ok")
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [r.to_dict() for r in self.reports],
            "totals": self.totals(),
            "seconds": round(self.seconds, 3),
        }


class Ingester(sync.KeepInStep):
    """Brings sources into one KB, one transaction per source."""

    def __init__(
        self,
        kb: KB,
        *,
        embedder: str | None = None,
        vector_backend: str | None = None,
        limits: Limits | None = None,
        chunking: ChunkingSettings | None = None,
        checksum: bool = False,
        options: dict[str, Any] | None = None,
    ):
        self.kb = kb
        self.checksum = checksum
        self.limits = limits or Limits()
        # Connector and fetcher options by name (crawl, max_depth, transcriber, ...), from the command line.
        self.options = dict(options or {})
        meta = kb.meta()
        recorded = {k[len("chunk_") :]: int(v) for k, v in meta.items() if k.startswith("chunk_")}
        # A KB keeps the chunking it was created with, so old and new chunks stay comparable.
        self.chunking = ChunkingSettings(**recorded) if recorded else (chunking or ChunkingSettings())
        self.embedder = get_embedder(embedder or meta.get("embedding_model"))
        recorded_backend = meta.get("vector_backend")
        if (vector_backend or recorded_backend) == "vss" and hasattr(self.embedder, "load"):
            # Import torch before sqlite-vss loads: the reference BLAS that vss brings in, once
            # loaded globally, made torch's embedding ~25x slower (measured).
            self.embedder.load()
        if vector_backend and recorded_backend and vector_backend != recorded_backend:
            raise KBError(
                f"{kb.path} already uses the {recorded_backend} vector index; switch with "
                f"`kb reindex {kb.path} --vector-backend {vector_backend}`."
            )
        kb.bind_model(
            self.embedder.model_id,
            self.embedder.dimension,
            self.embedder.normalized,
            vector_backend or "vec",
            self.chunking.as_meta(),
            # A new KB searches with the fusion tuned on development data, and says how its model embeds.
            {**fusion.DEFAULT.as_meta(), **getattr(self.embedder, "meta", {})},
        )
        self._progress = Progress()
        self.settings_key = json.dumps({"model": self.embedder.model_id, **self.chunking.as_meta()}, sort_keys=True)

    def run(
        self,
        targets: list[str],
        progress: Progress | Callable[[SourceReport], None] | None = None,
        *,
        prune: bool = False,
    ) -> IngestResult:
        """Ingest `targets`; what vanished from a folder or site ingested again is reported `missing`
        (and with `prune` taken out). The targets are recorded as roots, for `kb sync`."""
        started = time.monotonic()
        if progress is None:
            progress = Progress()
        elif not isinstance(progress, Progress):
            progress = CallbackProgress(progress)
        self._progress = progress
        result = IngestResult()
        candidates = list(discover(targets, self.options.get("exclude") or ()))
        readable = [c for c in candidates if c.url or c.problem or c.explicit or connector_for(c.path.name)]
        counted = {id(c) for c in readable}  # by identity: a folder of 10,000 files is no quadratic scan
        urls = sum(1 for c in readable if c.url)
        files = [c for c in readable if not c.url and c.excluded is None]
        progress.found(len(files), sum(c.size for c in files), urls)
        total = len(files) + urls
        index = 0
        seen = {c.uri for c in candidates if c.excluded is None}
        for candidate in candidates:
            if candidate.excluded is not None:
                seen.add(candidate.uri)
                result.reports.append(self._excluded(candidate))
                continue
            if id(candidate) in counted:
                index += 1
                progress.start(index, total, candidate.path.name if not candidate.url else candidate.url)
            items = 0

            def next_item(uri: str) -> None:
                # A crawl or playlist yields more sources than the one URL counted: each one counts.
                nonlocal index, total, items
                items += 1
                if items > 1:
                    index += 1
                    total = max(total, index)
                    progress.start(index, total, uri)

            reports = self.ingest_url(candidate.url, seen, next_item) if candidate.url else [self.ingest_one(candidate)]
            for report in reports:
                if report is not None:
                    result.reports.append(report)
                    progress.done(report)
        result.reports.extend(self._vanished(targets, seen))
        if prune:
            for report in result.reports:
                if report.status == "missing":
                    self._prune(report)
        sync.record_roots(
            self.kb,
            [sync.root_target(t) for t in targets if sync.target_exists(t)],
            self.options,
        )
        result.seconds = time.monotonic() - started
        return result

    def ingest_url(
        self, url: str, seen: set[str] | None = None, on_item: Callable[[str], None] | None = None
    ) -> Iterator[SourceReport]:
        """Fetch a URL through the fetcher that claims it; one report per source it yields (a crawl yields many)."""
        fetcher_cls = fetcher_for(url)
        if fetcher_cls is None:
            yield SourceReport(uri=url, status="error", reason="no fetcher reads this kind of URL")
            return
        context = FetchContext(
            limits=self.limits,
            options=self.options,
            previous=self._previous_metadata,
            readable=_crawlable,
        )
        fetched_items = fetcher_cls().fetch(url, context)
        while True:
            started = time.monotonic()
            try:
                fetched = next(fetched_items)
            except StopIteration:
                return
            except (SourceError, SourceTimeout) as exc:
                report = SourceReport(uri=url, status="error", reason=str(exc))
                self._record_failure(report)
                yield report
                return
            except Exception as exc:  # a fetcher tripping over a hostile server must not end the run
                report = SourceReport(uri=url, status="error", reason=f"{type(exc).__name__}: {exc}")
                self._record_failure(report)
                yield report
                return
            if seen is not None:
                seen.add(fetched.uri)
            if on_item is not None:
                on_item(fetched.uri)
            report = self.ingest_fetched(fetched)
            # The fetch's own time counts too: ingest_fetched timed only the reading and storing.
            report.seconds = time.monotonic() - started
            yield report

    def _previous_metadata(self, uri: str) -> dict[str, Any] | None:
        stored = self.kb.get_source(uri)
        if stored is None or stored.status not in ("ok", "empty") or stored.settings_key != self.settings_key:
            return None
        return stored.metadata

    def ingest_fetched(self, fetched: Fetched) -> SourceReport:
        """Read one fetched source (or note why it could not be fetched)."""
        started = time.monotonic()
        report = SourceReport(uri=fetched.uri, status="error")
        try:
            stored = self.kb.get_source(fetched.uri)
            if fetched.error:
                if fetched.gone and stored is not None:
                    return self._missing(stored, f"the site no longer has it ({fetched.error})")
                raise SourceError(fetched.error)
            current = (
                stored is not None and stored.status in ("ok", "empty") and stored.settings_key == self.settings_key
            )
            connector_cls = connector_for(fetched.name or fetched.uri)
            if connector_cls is None:
                raise SourceError(unreadable(fetched.name or fetched.uri))
            report.kind = connector_cls.kind
            if fetched.not_modified and current:
                report.status, report.chunks = "unchanged", stored.chunks
                return report
            path = Path(fetched.path) if fetched.path is not None else None
            if fetched.data is not None:
                data = fetched.data
                content_hash, size = hashlib.sha256(data).hexdigest(), len(data)
            elif path is not None:
                data, content_hash, size, _ = self._read_for(connector_cls, path)
            else:
                raise SourceError("the fetcher returned no content")
            if current and stored.content_hash == content_hash:
                report.status, report.chunks = "unchanged", stored.chunks
                return report
            if self._stored_once(report, stored, content_hash, size, None, renames=False):
                return report
            source = SourceFile(
                uri=fetched.uri,
                path=path,
                data=data,
                limits=self.limits,
                options=self.options,
                name=fetched.name,
                content_hash=content_hash,
            )
            doc = self._extract(connector_cls, source)
            if fetched.title:
                # The page's title beats the connector's (a downloaded video is named by its id),
                # also where the connector used its own title as the heading.
                old_title, doc.title = doc.title, fetched.title
                for section in doc.sections:
                    if section.locator.heading == old_title:
                        section.locator = replace(section.locator, heading=fetched.title)
            doc.metadata = {**doc.metadata, **fetched.metadata}
            self._store_guarded(doc, report, content_hash, size, None, fetched_at=utcnow())
        except (SourceError, SourceTimeout) as exc:
            report.status = "error"
            report.reason = str(exc)
            self._record_failure(report)
        except (MemoryError, RecursionError) as exc:
            report.status = "error"
            report.reason = f"too large or too deeply nested to read ({type(exc).__name__})"
            self._record_failure(report)
        report.seconds = time.monotonic() - started
        return report

    def ingest_one(self, candidate: Candidate) -> SourceReport | None:
        started = time.monotonic()
        path = candidate.path
        uri = path.absolute().as_uri()
        report = SourceReport(uri=uri, status="error")
        try:
            if candidate.problem:
                stored = self.kb.get_source(uri) if candidate.explicit else None
                if stored is not None and not path.exists():
                    return self._missing(stored, candidate.problem)
                raise SourceError(candidate.problem)
            uri = path.resolve().as_uri()
            report.uri = uri
            report.size = candidate.size
            connector_cls = connector_for(path.name)
            if connector_cls is None:
                if not candidate.explicit:
                    return SourceReport(
                        uri=uri,
                        status="skipped",
                        reason=unreadable(path.name),
                    )
                raise SourceError(unreadable(path.name))
            report.kind = connector_cls.kind
            stored = self.kb.get_source(uri)
            current = stored is not None and stored.settings_key == self.settings_key and self._current(stored)
            if current and not self.checksum:
                # Same size and modification time as when ingested: unchanged without reading it
                # (make's and rsync's rule; --checksum compares content hashes instead).
                info = path.stat()
                if info.st_size == stored.size and info.st_mtime == stored.mtime:
                    return self._unchanged(report, stored)
            self._progress.stage("reading")
            data, content_hash, size, mtime = self._read_for(connector_cls, path)
            if current and stored.content_hash == content_hash:
                if stored.mtime != mtime:
                    self.kb.touch_source(stored.id, mtime)
                return self._unchanged(report, stored, mtime)
            if self._stored_once(report, stored, content_hash, size, mtime, renames=True):
                return report
            source = SourceFile(
                uri=uri,
                path=path,
                data=data,
                limits=self.limits,
                options=self.options,
                name=path.name,
                content_hash=content_hash,
            )
            doc = self._extract(connector_cls, source)
            self._store_guarded(doc, report, content_hash, size, mtime)
        except (SourceError, SourceTimeout) as exc:
            report.status = "error"
            report.reason = str(exc)
            self._record_failure(report, path)
        except (MemoryError, RecursionError) as exc:
            report.status = "error"
            report.reason = f"too large or too deeply nested to read ({type(exc).__name__})"
            self._record_failure(report, path)
        report.seconds = time.monotonic() - started
        return report

    def _extract(self, connector_cls: Any, source: SourceFile) -> Document:
        connector = connector_cls()
        seconds = self.limits.timeout_s
        budget = getattr(connector, "time_budget", None)
        if seconds > 0 and budget is not None:
            # A connector whose work grows with the source's length (transcribing an hour of
            # lecture) may claim more than the per-source limit; never less.
            seconds = max(seconds, budget(source))
            # The connector sees the limit it actually runs under (a transcriber paces itself by it).
            source.limits = replace(source.limits, timeout_s=seconds)
        source.progress = self._progress.stage
        try:
            with deadline(seconds):
                return connector.extract(source)
        except (SourceError, MemoryError, RecursionError):
            raise
        except Exception as exc:  # a connector tripping over hostile input must not end the run
            raise SourceError(f"{connector_cls.kind} connector failed ({type(exc).__name__}: {exc})") from exc

    def _store_guarded(
        self,
        doc: Document,
        report: SourceReport,
        content_hash: str,
        size: int,
        mtime: float | None,
        fetched_at: str | None = None,
    ) -> None:
        try:
            self._store(doc, report, content_hash, size, mtime, fetched_at)
        except sqlite3.OperationalError:
            raise  # the KB itself is busy or broken: not this source's fault, stop the run
        except (MemoryError, RecursionError):
            raise
        except Exception as exc:  # text that parsed but cannot be embedded or stored
            raise SourceError(f"could not be stored ({type(exc).__name__}: {exc})") from exc

    def _read_for(self, connector_cls: Any, path: Path) -> tuple[bytes, str, int, float]:
        """The file's bytes (empty for a connector that reads the path itself), SHA-256, size and
        the modification time seen before reading (so a write during the read shows up next run)."""
        if getattr(connector_cls, "reads_path", False):
            # Media files can be far larger than what is sensible to hold in memory: hash as a stream.
            limit = getattr(connector_cls, "max_bytes", None) or self.limits.max_bytes
            size, digest, mtime = self._hash_file(path, limit)
            return b"", digest, size, mtime
        data, info = self._read(path)
        return data, hashlib.sha256(data).hexdigest(), len(data), info.st_mtime

    def _hash_file(self, path: Path, limit: int) -> tuple[int, str, float]:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise SourceError("not a regular file")
            if info.st_size > limit:
                raise SourceError(
                    f"file too large ({info.st_size / 2**20:,.1f} MB; the limit is {limit / 2**20:,.0f} MB)"
                )
            digest = hashlib.sha256()
            size = 0
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    size += len(block)
                    digest.update(block)
        except PermissionError as exc:
            raise SourceError("permission denied") from exc
        except OSError as exc:
            raise SourceError(f"cannot read ({exc.strerror or exc})") from exc
        return size, digest.hexdigest(), info.st_mtime

    def _read(self, path: Path) -> tuple[bytes, os.stat_result]:
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode):
                raise SourceError("not a regular file")
            if info.st_size > self.limits.max_bytes:
                raise SourceError(
                    f"file too large ({info.st_size / 2**20:,.1f} MB; "
                    f"the limit is {self.limits.max_bytes / 2**20:,.0f} MB)"
                )
            with path.open("rb") as handle:
                data = handle.read(self.limits.max_bytes + 1)
        except PermissionError as exc:
            raise SourceError("permission denied") from exc
        except OSError as exc:
            raise SourceError(f"cannot read ({exc.strerror or exc})") from exc
        if len(data) > self.limits.max_bytes:
            raise SourceError("file grew past the size limit while being read")
        return data, info

    def _store(
        self,
        doc: Document,
        report: SourceReport,
        content_hash: str,
        size: int,
        mtime: float | None,
        fetched_at: str | None = None,
    ) -> None:
        doc.title = clean_line(doc.title) or Path(doc.uri).name
        doc.metadata = {k: clean_line(v) if isinstance(v, str) else v for k, v in doc.metadata.items()}
        self._progress.stage("chunking")
        chunks = chunk_document(doc, self.chunking)
        report.kind = doc.kind
        report.pages = doc.metadata.get("pages")
        report.note = doc.metadata.get("ocr_note")
        status, reason = ("ok", None) if chunks else ("empty", doc.empty_reason or "no text found")
        vectors = self._embed([c.embedding_text() for c in chunks]) if chunks else None
        flags = [find_flags(c.text, c.locator.heading) for c in chunks]
        self._progress.stage("storing")
        self.kb.write_source(
            doc,
            status=status,
            content_hash=content_hash,
            size=size,
            mtime=mtime,
            settings_key=self.settings_key,
            chunks=chunks,
            vectors=vectors,
            error=reason,
            fetched_at=fetched_at,
            flags=flags,
        )
        # Only once the source is committed does the report say so.
        report.status, report.reason, report.chunks = status, reason, len(chunks)
        report.flags = {}
        for found in filter(None, flags):
            for flag in found.split(","):
                report.flags[flag] = report.flags.get(flag, 0) + 1

    def _embed(self, texts: list[str]) -> Any:
        import numpy as np

        parts = []
        for start in range(0, len(texts), EMBED_BATCH):
            self._progress.stage("embedding", start / len(texts))
            parts.append(self.embedder.embed(texts[start : start + EMBED_BATCH]))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _record_failure(self, report: SourceReport, path: Path | None = None) -> None:
        if path is not None and not path.is_file():
            return  # a missing path or a broken link leaves nothing to record
        stored = self.kb.get_source(report.uri)
        if stored is not None and stored.status in ("ok", "empty"):
            # Keep what was ingested before; the report says why the new version was not taken.
            report.reason = f"{report.reason}; kept the version ingested before"
            return
        self.kb.record_failure(report.uri, report.kind, report.reason or "error", content_hash=None, size=None)


def _crawlable(name: str) -> bool:
    """Whether a crawl should fetch a link of this name: some connector reads it, and it is not one that
    opts out (images: a site's logos and icons are not course text; ingest image files by name or folder)."""
    connector = connector_for(name)
    return connector is not None and getattr(connector, "crawled", True)


def unreadable(name: str) -> str:
    """One sentence for a file kb has no reader for, naming what it does read."""
    suffix = Path(name).suffix.lower()
    what = f"{suffix} files" if suffix else "files without a suffix"
    return f'kb does not read {what} (the README\'s "What kb reads" lists the formats it does)'


def ingest(kb: KB, targets: list[str], **options: Any) -> IngestResult:
    """Ingest files and folders into `kb` (the library entry point behind `kb ingest`)."""
    return Ingester(kb, **options).run(targets)
