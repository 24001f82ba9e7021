"""Keeping a KB in step with its folders and sites: missing sources, renames, duplicates, pruning, roots.

A source that vanished from a folder (or a site) ingested again is marked `missing` and keeps its
chunks until `--prune` or `kb sync` removes it, so a file restored unchanged comes back without
being read again. A new file whose content is already in the KB is stored once: it is recorded as a
`duplicate` of the source holding it, or, when that source's file is gone, the source is moved to
the new name (a rename costs no re-embedding).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .db import transaction
from .discover import URL_SCHEME, Candidate
from .errors import KBError
from .links import deep_link
from .store import KB, StoredSource, utcnow
from .types import Locator, SourceReport

ROOT_OPTIONS = ("exclude", "crawl", "max_depth", "max_pages", "ocr", "ocr_lang", "transcriber", "whisper_model")
"""Ingest options that shape what a root yields, recorded with it so `kb sync` repeats them (never a password)."""


def target_exists(target: str) -> bool:
    """A URL, or a path that is there: worth recording as a root."""
    return bool(URL_SCHEME.match(target)) or os.path.lexists(Path(target).expanduser())


def file_path(uri: str) -> Path | None:
    """The local path of a file:// URI, else None."""
    if not uri.startswith("file://"):
        return None
    return Path(unquote(urlparse(uri).path))


def file_gone(uri: str) -> bool:
    path = file_path(uri)
    return path is not None and not path.exists()


def short_name(uri: str) -> str:
    """A source as a person names it: a path relative to the current folder, or the URL."""
    path = file_path(uri)
    if path is None:
        return uri
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def mark_missing(kb: KB, source: StoredSource, reason: str) -> None:
    """Flag a source whose file or page is gone; what it was (status, error) is kept for a restore."""
    if source.status == "missing":
        return
    with transaction(kb.conn):
        kb.conn.execute(
            "UPDATE sources SET status = 'missing', error = ?, "
            "metadata = json_set(coalesce(metadata, '{}'), '$._before', json_object('status', status, 'error', error)) "
            "WHERE id = ?",
            (reason, source.id),
        )


def restore(kb: KB, source: StoredSource, mtime: float | None = None) -> None:
    """A missing source is back unchanged: its status before, its chunks as they were."""
    before = source.metadata.get("_before") or {}
    status = before.get("status") if before.get("status") in ("ok", "empty", "error") else "ok"
    with transaction(kb.conn):
        kb.conn.execute(
            "UPDATE sources SET status = ?, error = ?, mtime = coalesce(?, mtime), "
            "metadata = json_remove(metadata, '$._before') WHERE id = ?",
            (status, before.get("error"), mtime, source.id),
        )


def find_twin(kb: KB, content_hash: str, settings_key: str, uri: str) -> StoredSource | None:
    """A source other than `uri` holding this very content, read with the same settings."""
    for twin in kb.sources_where(
        "content_hash = ? AND uri != ? AND status IN ('ok', 'empty', 'missing')", (content_hash, uri)
    ):
        if twin.settings_key == settings_key:
            return twin
    return None


def move_source(kb: KB, source: StoredSource, uri: str, size: int, mtime: float | None) -> None:
    """Give a source a new name (a renamed file): rows, chunks and vectors stay; links follow."""
    before = source.metadata.get("_before") or {}
    status = before.get("status") if source.status == "missing" else source.status
    with transaction(kb.conn):
        old = kb.conn.execute("SELECT id FROM sources WHERE uri = ?", (uri,)).fetchone()
        if old is not None:  # a failed or duplicate row under the new name gives way
            kb._delete_source_rows(old[0])
            kb.conn.execute("DELETE FROM sources WHERE id = ?", (old[0],))
        kb.conn.execute(
            "UPDATE sources SET uri = ?, size = ?, mtime = ?, status = ?, "
            "error = CASE WHEN status = 'missing' THEN ? ELSE error END, "
            "metadata = json_remove(coalesce(metadata, '{}'), '$._before') WHERE id = ?",
            (uri, size, mtime, status or "ok", before.get("error"), source.id),
        )
        rows = kb.conn.execute(
            "SELECT id, page, slide, start_s, end_s, anchor FROM chunks WHERE source_id = ?", (source.id,)
        ).fetchall()
        kb.conn.executemany(
            "UPDATE chunks SET link = ? WHERE id = ?",
            [
                (deep_link(uri, source.kind or "", Locator(page=p, slide=s, start_s=a, end_s=b, anchor=anchor)), cid)
                for cid, p, s, a, b, anchor in rows
            ],
        )


def record_duplicate(
    kb: KB, uri: str, original: StoredSource, *, kind: str, content_hash: str, size: int, mtime: float | None,
    settings_key: str,
) -> None:  # fmt: skip
    """Note that `uri` holds the same content as `original`: a row with no chunks of its own."""
    metadata = json.dumps({"_settings": settings_key})
    title = Path(unquote(urlparse(uri).path)).name or uri
    with transaction(kb.conn):
        row = kb.conn.execute("SELECT id FROM sources WHERE uri = ?", (uri,)).fetchone()
        values = (kind, title, content_hash, size, mtime, utcnow(), metadata, original.id)
        if row is not None:
            kb._delete_source_rows(row[0])
            kb.conn.execute(
                "UPDATE sources SET kind=?, title=?, content_hash=?, size=?, mtime=?, ingested_at=?, "
                "status='duplicate', error=NULL, metadata=?, duplicate_of=? WHERE id = ?",
                (*values, row[0]),
            )
        else:
            kb.conn.execute(
                "INSERT INTO sources(kind, title, content_hash, size, mtime, ingested_at, status, metadata, "
                "duplicate_of, uri) VALUES (?, ?, ?, ?, ?, ?, 'duplicate', ?, ?, ?)",
                (*values, uri),
            )


def original_of(kb: KB, source: StoredSource) -> StoredSource | None:
    """The source a duplicate's content lives in, when it is still there."""
    if source.duplicate_of is None:
        return None
    found = kb.sources_where("id = ? AND status IN ('ok', 'empty')", (source.duplicate_of,))
    return found[0] if found else None


def prune(kb: KB, source: StoredSource) -> str | None:
    """Take a missing source out; when a duplicate of it is still there, the content moves to that
    name instead of being read again. Returns the name it moved to, if any."""
    for twin in kb.sources_where("duplicate_of = ? AND status = 'duplicate'", (source.id,)):
        if not file_gone(twin.uri):
            move_source(kb, source, twin.uri, twin.size or 0, twin.mtime)
            return twin.uri
    kb.remove_source(source.id)
    return None


def under(kb: KB, prefix: str) -> list[StoredSource]:
    """Stored sources whose URI lies under a folder's URI or a site's URL prefix."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return kb.sources_where("uri LIKE ? ESCAPE '\\'", (escaped + "%",))


# -- roots ------------------------------------------------------------------------------------------


def root_target(target: str) -> str:
    """How a target is recorded: a URL as given, a path made absolute."""
    return target if URL_SCHEME.match(target) else str(Path(target).expanduser().resolve())


def record_roots(kb: KB, targets: Iterable[str], options: dict[str, Any]) -> None:
    recorded = {k: options[k] for k in ROOT_OPTIONS if options.get(k) not in (None, False, [], ())}
    with transaction(kb.conn):
        for target in targets:
            kb.conn.execute(
                "INSERT INTO roots(target, options, added_at, synced_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(target) DO UPDATE SET options = excluded.options, synced_at = excluded.synced_at",
                (target, json.dumps(recorded, sort_keys=True), utcnow(), utcnow()),
            )


def recorded_roots(kb: KB) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for target, options in kb.conn.execute("SELECT target, options FROM roots ORDER BY id"):
        try:
            parsed = json.loads(options or "{}")
        except ValueError:
            parsed = {}
        out.append((target, parsed if isinstance(parsed, dict) else {}))
    return out


def resolve_names(kb: KB, names: Iterable[str]) -> list[StoredSource]:
    """The stored sources that `kb remove` names: by URI or URL, by file path, or every one under a folder."""
    found: dict[int, StoredSource] = {}
    for name in names:
        if "://" in name:
            uris = [name]
        else:
            path = Path(name).expanduser()
            uris = [path.resolve().as_uri(), path.absolute().as_uri()]
        hits = [s for uri in dict.fromkeys(uris) for s in ([kb.get_source(uri)] if kb.get_source(uri) else [])]
        if not hits:
            hits = [s for uri in dict.fromkeys(uris) for s in under(kb, uri.rstrip("/") + "/")]
        if not hits:
            raise KBError(f"{kb.path} holds no source named {name}{_nearest(kb, name)}.")
        found.update((s.id, s) for s in hits)
    return list(found.values())


def forget_roots(kb: KB, names: Iterable[str]) -> None:
    """Removing a root's sources by its own name also stops `kb sync` from bringing them back."""
    with transaction(kb.conn):
        for name in names:
            kb.conn.execute("DELETE FROM roots WHERE target IN (?, ?)", (name, root_target(name)))


def _nearest(kb: KB, name: str) -> str:
    import difflib

    names = {short_name(uri): uri for (uri,) in kb.conn.execute("SELECT uri FROM sources")}
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.5)
    if not close:
        tails = {Path(n).name: n for n in names}
        close = [tails[m] for m in difflib.get_close_matches(Path(name).name, list(tails), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]}?)" if close else ""


def sync(ingester: Any, progress: Any = None) -> Any:
    """Run every recorded root again with its recorded options, pruning what is gone (`kb sync`)."""
    from .ingest import IngestResult
    from .types import SourceReport

    roots = recorded_roots(ingester.kb)
    if not roots:
        raise KBError(f"{ingester.kb.path} records no folders, files or sites to sync; add some with `kb ingest`.")
    result = IngestResult()
    base = dict(ingester.options)
    for target, options in roots:
        if not target_exists(target):
            # The whole folder (or file) is gone: what came from it goes too.
            path = Path(target)
            for stored in [ingester.kb.get_source(path.as_uri())] + under(ingester.kb, path.as_uri() + "/"):
                if stored is not None:
                    ingester.kb.remove_source(stored.id)
                    result.reports.append(
                        SourceReport(uri=stored.uri, status="removed", kind=stored.kind, reason=f"{target} is gone")
                    )
            forget_roots(ingester.kb, [target])
            continue
        ingester.options = {**base, **options}
        part = ingester.run([target], progress, prune=True)
        result.reports.extend(part.reports)
        result.seconds += part.seconds
    ingester.options = base
    return result


class KeepInStep:
    """The Ingester's part that keeps the KB in step with what it reads (kept here so ingest.py holds
    the stages): sources excluded, vanished, restored, renamed or duplicated, and pruning."""

    kb: KB
    settings_key: str

    def _excluded(self, candidate: Candidate) -> SourceReport:
        stored = self.kb.get_source(candidate.uri)
        if stored is None:
            return SourceReport(uri=candidate.uri, status="excluded", reason=f"matches {candidate.excluded}")
        return self._missing(stored, f"left out by the exclude pattern {candidate.excluded}")

    def _missing(self, stored: StoredSource, reason: str) -> SourceReport:
        mark_missing(self.kb, stored, reason)
        return SourceReport(uri=stored.uri, status="missing", kind=stored.kind, chunks=stored.chunks, reason=reason)

    def _vanished(self, targets: list[str], seen: set[str]) -> list[SourceReport]:
        """Sources stored under a folder named in `targets` that the walk no longer found."""
        reports = []
        for target in targets:
            path = Path(target).expanduser()
            if URL_SCHEME.match(target) or not path.is_dir():
                continue
            for stored in under(self.kb, path.resolve().as_uri().rstrip("/") + "/"):
                if stored.uri in seen:
                    continue
                seen.add(stored.uri)
                gone = file_gone(stored.uri)
                reason = f"no longer in {target}" if gone else "no longer read (left out, or in a skipped folder)"
                reports.append(self._missing(stored, reason))
        return reports

    def _prune(self, report: SourceReport) -> None:
        stored = self.kb.get_source(report.uri)
        if stored is None or stored.status != "missing":
            return
        moved_to = prune(self.kb, stored)
        report.status = "removed"
        report.chunks = 0
        if moved_to:
            report.reason = f"{report.reason}; its content stays under {short_name(moved_to)}"

    def _current(self, stored: StoredSource) -> bool:
        """Whether the stored row stands for the file as it was last read (so equal content means unchanged)."""
        if stored.status in ("ok", "empty"):
            return True
        if stored.status == "missing":
            return stored.chunks > 0 or (stored.metadata.get("_before") or {}).get("status") == "empty"
        if stored.status == "duplicate":
            return original_of(self.kb, stored) is not None
        return False

    def _unchanged(self, report: SourceReport, stored: StoredSource, mtime: float | None = None) -> SourceReport:
        if stored.status == "missing":
            restore(self.kb, stored, mtime)
            report.status, report.reason = "restored", "back where it was; nothing read again"
        elif stored.status == "duplicate":
            original = original_of(self.kb, stored)
            report.status = "unchanged"
            report.reason = f"duplicate of {short_name(original.uri)}" if original else None
            return report
        else:
            report.status = "unchanged"
        report.chunks = stored.chunks
        return report

    def _stored_once(
        self,
        report: SourceReport,
        stored: StoredSource | None,
        content_hash: str,
        size: int,
        mtime: float | None,
        *,
        renames: bool,
    ) -> bool:
        """Content the KB already holds under another name: a rename when that name is gone, else a
        duplicate. True when the report is final and nothing needs reading."""
        twin = find_twin(self.kb, content_hash, self.settings_key, report.uri)
        if twin is None:
            return False
        if renames and (twin.status == "missing" or file_gone(twin.uri)):
            move_source(self.kb, twin, report.uri, size, mtime)
            report.status, report.chunks = "renamed", twin.chunks
            report.reason = f"renamed from {short_name(twin.uri)}; nothing read again"
            return True
        if twin.status == "missing":
            return False
        record_duplicate(
            self.kb,
            report.uri,
            twin,
            kind=report.kind or twin.kind or "",
            content_hash=content_hash,
            size=size,
            mtime=mtime,
            settings_key=self.settings_key,
        )
        report.status, report.chunks = "duplicate", 0
        report.reason = f"duplicate of {short_name(twin.uri)}; stored once"
        return True
