"""Ingest, the driver: each source found or fetched goes through the stages of kb/pipeline in order.

    discover (kb/discover.py) -> plan -> read -> [extract -> chunk -> embed] -> write

`Ingester.ingest_one` is that one path, for a file and a fetched source alike; the bracketed stages
are `kb.pipeline.prepare`, which touches no KB (the seam for running them on workers). What keeps
the KB in step with its folders (missing, renamed, duplicate sources) is kb/sync.py's.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import fusion, sync
from .chunker import ChunkingSettings
from .deadlines import SourceTimeout
from .discover import Candidate, discover
from .errors import KBError, SourceError, exhausted
from .pipeline.chunk import Prepared
from .pipeline.plan import Planned, crawlable, plan_fetched, plan_file, unreadable
from .pipeline.prepare import Failed, PrepareSettings, prepare
from .pipeline.read import Content, read
from .pipeline.write import write
from .plugins import connector_for, fetcher_for, get_embedder
from .progress import CallbackProgress, Progress
from .store import KB, StoredSource, utcnow
from .types import FetchContext, Fetched, Limits, SourceReport

__all__ = ["IngestResult", "Ingester", "ingest", "unreadable"]


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
        executor: Any = "local",
        ray_address: str | None = None,
        ray_gpus: float = 0.0,
    ):
        self.kb = kb
        if executor not in ("local", "ray") and not hasattr(executor, "bind"):
            raise KBError(f"Unknown executor {executor!r}: choose local or ray.")
        # Where stages 4-6 run: in this process, or on a Ray cluster's workers (kb/pipeline/ray_executor.py);
        # a RayExecutor given here is the caller's to close, one named "ray" is the run's.
        self.executor, self.ray_address, self.ray_gpus = executor, ray_address, ray_gpus
        self._executor: Any = None
        self._on_workers: Counter[str] = Counter()  # content hashes being prepared on workers
        self._arrived: list[SourceReport] = []
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

    @property
    def _prepare_settings(self) -> PrepareSettings:
        # Built per source: `kb sync` changes the options root by root.
        return PrepareSettings(self.embedder, self.chunking, self.limits, self.options)

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
        self._executor = self._open_executor()
        try:
            self._run(targets, progress, result)
        finally:
            if self._executor is not None and self._executor is not self.executor:
                self._executor.close()
            self._executor = None
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

    def _run(self, targets: list[str], progress: Progress, result: IngestResult) -> None:
        """Every source of `targets` into the KB, its report into `result`; then what vanished."""
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

            if candidate.url:
                reports: Any = self.ingest_url(candidate.url, seen, next_item)
            else:
                reports = [self._ingest_or_send(candidate)]
            for report in reports:
                if report is not None:
                    result.reports.append(report)
                    progress.done(report)
            self._report_arrived(result, progress)
        while self._executor is not None and self._executor.running:
            self._collect(wait=True)
            self._report_arrived(result, progress)
        result.reports.extend(self._vanished(targets, seen))

    def _open_executor(self) -> Any:
        """The Ray executor for this run, or None to prepare every source in this process."""
        if self.executor == "local":
            return None
        from .pipeline.ray_executor import RayExecutor, WorkerSettings

        executor = self.executor
        if executor == "ray":
            executor = RayExecutor(address=self.ray_address, gpus=self.ray_gpus)
        executor.bind(WorkerSettings(self.embedder.model_id, self.chunking, self.limits, self.options))
        return executor

    def _ingest_or_send(self, origin: Candidate | Fetched, started: float | None = None) -> SourceReport | None:
        """A found file or a fetched page, prepared here or sent to a worker; None while a worker has it
        (its report comes later). A fetched page travels with its bytes (a page, within the size limit);
        a fetcher's download on the driver's disk (yt-dlp's video, deleted when the next one comes) is
        prepared here."""
        if self._executor is None or (isinstance(origin, Fetched) and origin.data is None):
            return self.ingest_one(origin)
        started = time.monotonic() if started is None else started
        report = SourceReport(uri=_first_uri(origin), status="error")
        with self._failing(report, origin):
            step = self._start(origin, report, keep_bytes=False)  # the worker reads a file again (paths travel)
            if isinstance(step, SourceReport):
                return _timed(step, started)
            planned, content = step
            while self._executor.running >= self._executor.window:
                self._collect(wait=True)  # bounded: what is planned is prepared and written before more
            # The driver keeps the hash, size and mtime it writes; a page's bytes go with the row only.
            job = _OnWorker(origin, replace(planned, data=None), replace(content, data=b""), report, started)
            self._executor.submit(planned, content, job)
            self._on_workers[content.content_hash] += 1
            return None
        return _timed(report, started)

    def _collect(self, *, wait: bool) -> None:
        """Write each source the workers have finished, in the order they finish."""
        for job, result in self._executor.finished(wait=wait):
            self._on_workers[job.content.content_hash] -= 1
            if not self._on_workers[job.content.content_hash]:
                del self._on_workers[job.content.content_hash]
            with self._failing(job.report, job.origin):
                if isinstance(result, Failed):
                    raise SourceError(result.reason)
                self._store(job.planned, job.content, result, job.report)
            self._arrived.append(_timed(job.report, job.started))

    def _wait_for(self, content_hash: str) -> None:
        while content_hash in self._on_workers:
            self._collect(wait=True)

    def _report_arrived(self, result: IngestResult, progress: Progress) -> None:
        arrived, self._arrived = self._arrived, []
        for report in arrived:
            result.reports.append(report)
            progress.done(report)

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
            readable=crawlable,
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
            # The fetch's own time counts too (from `started`), not only the reading and storing.
            report = self._ingest_or_send(fetched, started)
            if report is not None:
                yield _timed(report, started)

    def _previous_metadata(self, uri: str) -> dict[str, Any] | None:
        stored = self.kb.get_source(uri)
        if stored is None or stored.status not in ("ok", "empty") or stored.settings_key != self.settings_key:
            return None
        return stored.metadata

    def ingest_one(self, origin: Candidate | Fetched) -> SourceReport:
        """Bring one found file or fetched source into the KB: the stages of kb/pipeline, in order."""
        started = time.monotonic()
        report = SourceReport(uri=_first_uri(origin), status="error")
        with self._failing(report, origin):
            planned = self._start(origin, report)  # 2-3. plan, read, and what the KB already holds
            if isinstance(planned, SourceReport):
                return _timed(planned, started)
            planned, content = planned
            # 4-6. extract, chunk, embed: no KB touched (where workers take over, kb/pipeline/ray_executor.py)
            prepared = prepare(planned, content, self._prepare_settings, self._progress.stage)
            self._store(planned, content, prepared, report)  # 7. write
        return _timed(report, started)

    def _start(
        self, origin: Candidate | Fetched, report: SourceReport, *, keep_bytes: bool = True
    ) -> tuple[Planned, Content] | SourceReport:
        """Stages 2 and 3: the source planned and read, or its final report when nothing is left to do."""
        planned = self._plan(origin, report)  # 2. plan
        if isinstance(planned, SourceReport):
            return planned
        stored = self._stored_current(planned)
        known = self._known_unread(planned, stored, report)
        if known is not None:
            return known
        if planned.local:
            self._progress.stage("reading")
        content = read(planned, self.limits, keep_bytes=keep_bytes)  # 3. read
        if self._executor is not None:
            # A copy of this content still on a worker must be stored first, so the second is
            # recognised as a duplicate as it is on a laptop.
            self._wait_for(content.content_hash)
        known = self._known_by_content(planned, stored, content, report)  # unchanged, renamed, duplicate
        if known is not None:
            return known
        return planned, content

    def _store(self, planned: Planned, content: Content, prepared: Prepared, report: SourceReport) -> None:
        """Stage 7, on the driver only: one transaction for the source."""
        self._progress.stage("storing")
        fetched_at = None if planned.local else utcnow()
        write(self.kb, prepared, content, report, settings_key=self.settings_key, fetched_at=fetched_at)

    @contextmanager
    def _failing(self, report: SourceReport, origin: Candidate | Fetched) -> Iterator[None]:
        """This source's failure into its report (and the KB's record of it); the run goes on."""
        path = origin.path if isinstance(origin, Candidate) else None
        try:
            yield
        except (SourceError, SourceTimeout) as exc:
            report.status = "error"
            report.reason = str(exc)
            self._record_failure(report, path)
        except (MemoryError, RecursionError) as exc:
            report.status = "error"
            report.reason = exhausted(exc)
            self._record_failure(report, path)

    def _plan(self, origin: Candidate | Fetched, report: SourceReport) -> Planned | SourceReport:
        """Stage 2, with what discovery or the fetch already knew: a file gone, a page the site dropped."""
        if isinstance(origin, Fetched):
            if origin.error:
                stored = self.kb.get_source(origin.uri)
                if origin.gone and stored is not None:
                    return self._missing(stored, f"the site no longer has it ({origin.error})")
                raise SourceError(origin.error)
            planned = plan_fetched(origin)
        else:
            if origin.problem:
                stored = self.kb.get_source(report.uri) if origin.explicit else None
                if stored is not None and not origin.path.exists():
                    return self._missing(stored, origin.problem)
                raise SourceError(origin.problem)
            planned = plan_file(origin)
            report.uri, report.size = planned.uri, planned.size
        if planned.connector is None:
            if not planned.explicit:
                return SourceReport(uri=planned.uri, status="skipped", reason=unreadable(planned.name))
            raise SourceError(unreadable(planned.name or planned.uri))
        report.kind = planned.connector.kind
        return planned

    def _stored_current(self, planned: Planned) -> StoredSource | None:
        """The row stored for this source when it stands for the source as last read, with these settings."""
        stored = self.kb.get_source(planned.uri)
        if stored is None or stored.settings_key != self.settings_key:
            return None
        if planned.local:
            return stored if self._current(stored) else None  # a missing or duplicate row may stand too
        return stored if stored.status in ("ok", "empty") else None

    def _known_unread(self, planned: Planned, stored: StoredSource | None, report: SourceReport) -> SourceReport | None:
        """The final report when the source is unchanged without reading it, else None."""
        if stored is None:
            return None
        if planned.not_modified:
            return self._unchanged(report, stored)
        if planned.local and not self.checksum:
            # Same size and modification time as when ingested: unchanged without reading it
            # (make's and rsync's rule; --checksum compares content hashes instead).
            info = planned.path.stat()
            if info.st_size == stored.size and info.st_mtime == stored.mtime:
                return self._unchanged(report, stored)
        return None

    def _known_by_content(
        self, planned: Planned, stored: StoredSource | None, content: Content, report: SourceReport
    ) -> SourceReport | None:
        """The final report when the KB already holds this content (here or under another name), else None."""
        if stored is not None and stored.content_hash == content.content_hash:
            if content.mtime is not None and stored.mtime != content.mtime:
                self.kb.touch_source(stored.id, content.mtime)
            return self._unchanged(report, stored, content.mtime)
        if self._stored_once(report, stored, content.content_hash, content.size, content.mtime, renames=planned.local):
            return report
        return None

    def _record_failure(self, report: SourceReport, path: Path | None = None) -> None:
        if path is not None and not path.is_file():
            return  # a missing path or a broken link leaves nothing to record
        stored = self.kb.get_source(report.uri)
        if stored is not None and stored.status in ("ok", "empty"):
            # Keep what was ingested before; the report says why the new version was not taken.
            report.reason = f"{report.reason}; kept the version ingested before"
            return
        self.kb.record_failure(report.uri, report.kind, report.reason or "error", content_hash=None, size=None)


@dataclass
class _OnWorker:
    """A source a worker is preparing: what the driver needs to write it when it comes back."""

    origin: Candidate | Fetched
    planned: Planned
    content: Content
    """Without its bytes: the hash, size and mtime the driver read."""
    report: SourceReport
    started: float


def _first_uri(origin: Candidate | Fetched) -> str:
    """The URI a report starts with, before planning resolves a file's links."""
    return origin.uri if isinstance(origin, Fetched) else origin.path.absolute().as_uri()


def _timed(report: SourceReport, started: float) -> SourceReport:
    report.seconds = time.monotonic() - started
    return report


def ingest(kb: KB, targets: list[str], **options: Any) -> IngestResult:
    """Ingest files and folders into `kb` (the library entry point behind `kb ingest`)."""
    return Ingester(kb, **options).run(targets)
