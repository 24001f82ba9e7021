"""The KB file: opening and validating it, its metadata, and writing one source at a time."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .db import sqlite3, transaction
from .errors import ExtensionUnavailable, KBError, ModelMismatch, NotAKBFile, SchemaTooNew
from .filecheck import check_contents, check_header, check_path, open_connection, schema_version
from .links import deep_link
from .locking import WriterLock
from .migrations import SCHEMA_VERSION, migrate
from .types import Chunk, Document
from .vectors import BACKENDS, VectorIndex, open_index, to_blob
from .version import __version__

MIN_READ_VERSION = 3
"""The oldest schema kb reads without upgrading, where it may not write (a learner's copy served
read-only): the migrations since then only add what readers do not need."""


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class StoredSource:
    """The row of a source already in the KB."""

    id: int
    uri: str
    content_hash: str | None
    status: str
    settings_key: str | None
    size: int | None = None
    mtime: float | None = None
    chunks: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    duplicate_of: int | None = None
    """For a `duplicate`: the id of the source holding the same content."""
    kind: str | None = None


def _upgrade(conn: Any, path: Path) -> None:
    """Run the migrations the file lacks (none if another writer ran them first), in WAL mode."""
    version = schema_version(conn, path)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, version)
    if version == 0:
        conn.executemany(
            "INSERT INTO kb_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
            [("created_with", f"kb {__version__}"), ("created_at", utcnow())],
        )


class KB:
    """One KB file. Use `KB.open()`; every write goes through one transaction per source."""

    def __init__(self, path: Path, conn: Any, readonly: bool, lock: WriterLock | None = None):
        self.path = path
        self.conn = conn
        self.readonly = readonly
        self.notes: list[str] = []
        """What the user should know about how the file was opened (read-only media, say)."""
        self._lock = lock
        self._index: VectorIndex | None = None
        if self.meta().get("vector_backend") == "vec":
            # Load sqlite-vec now, so SQL on kb.conn can touch the index table too. sqlite-vss is
            # loaded only when needed: it drags in a reference BLAS that, loaded before torch,
            # made embedding 25x slower (see Ingester).
            self.index()

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = False,
        readonly: bool = False,
        integrity: bool | None = None,
        write: bool = False,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        repair: bool = False,
    ) -> KB:
        """Open a KB file, creating it when `create` and it does not exist; refuse anything else.

        Every existing file has its name, type, header, size, schema and metadata checked; SQLite's
        quick check and the check of every stored vector (length, NaN) run too when `integrity` is
        True, or when it is None and the file is small enough for them to be cheap (larger files
        have their vectors checked as searches read them). A writer (`write` or `create`) holds
        the KB's writer lock until close(): another writer waits (`on_wait` is told once) or, with
        `wait` False, is refused at once. With
        `repair` (kb reindex), damage to the derived indexes is left for the caller to rebuild.
        """
        path = Path(path)
        check_path(path)
        exists = path.exists()
        if not exists and not create:
            raise KBError(f"{path} does not exist; build it first with `kb ingest {path} SOURCE...`.")
        if not exists and not path.parent.is_dir():
            raise KBError(f"Cannot create {path}: the folder {path.parent} does not exist.")
        if exists:
            check_header(path)
        lock = None
        if (write or create) and not readonly:
            lock = WriterLock.acquire(path, wait=wait, on_wait=on_wait)
        try:
            return cls._open(path, readonly, integrity, lock, wait, on_wait, repair)
        except BaseException:
            if lock is not None:
                lock.release()  # _open closed its connection before raising
            raise

    @classmethod
    def _open(
        cls,
        path: Path,
        readonly: bool,
        integrity: bool | None,
        lock: WriterLock | None,
        wait: bool,
        on_wait: Callable[[str], None] | None,
        repair: bool = False,
    ) -> KB:
        # Under the writer lock the file may have been created meanwhile: look again.
        exists = path.exists() and path.stat().st_size > 0
        conn = None
        try:
            conn, note = open_connection(path, readonly)
            version = schema_version(conn, path)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{path} was made by a newer kb (schema v{version}; this kb reads up to v{SCHEMA_VERSION}); "
                    "upgrade kb to open it."
                )
            if exists:
                # A file someone sent you is checked before any of its SQL can run.
                check_contents(conn, path, version, integrity=integrity, repair=repair)
            if note:
                readonly = True  # opened immutable, on read-only media
        except (sqlite3.DatabaseError, KBError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, KBError):
                raise
            raise NotAKBFile(f"{path} is not a kb file or is damaged ({exc}).") from exc
        if version < SCHEMA_VERSION:
            if readonly:
                if version >= MIN_READ_VERSION:
                    return cls._made(path, conn, readonly, None, note)
                conn.close()
                raise KBError(f"{path} has an older schema (v{version}); open it once without read-only to upgrade it.")
            if lock is None:
                # Upgrading writes: one process at a time, under the writer lock for the upgrade only.
                conn.close()
                with WriterLock.acquire(path, wait=wait, on_wait=on_wait):
                    conn, _ = open_connection(path, readonly)
                    try:
                        _upgrade(conn, path)
                    finally:
                        # Closed before the lock: releasing it closes a descriptor of the file, which
                        # drops the POSIX locks SQLite holds on it in this process.
                        conn.close()
                conn, note = open_connection(path, readonly)
                return cls._made(path, conn, readonly, None, note)
            try:
                _upgrade(conn, path)
            except BaseException:
                conn.close()
                raise
        elif lock is not None:
            # WAL while writing: readers (Datasette, a second kb search) are never blocked.
            conn.execute("PRAGMA journal_mode = WAL")
        return cls._made(path, conn, readonly, lock, note)

    @classmethod
    def _made(cls, path: Path, conn: Any, readonly: bool, lock: WriterLock | None, note: str | None) -> KB:
        try:
            kb = cls(path, conn, readonly, lock)
        except BaseException:
            conn.close()
            raise
        kb.notes += [note] if note else []
        return kb

    def close(self) -> None:
        self.conn.close()
        if self._lock is not None:
            # After the connection: releasing closes a descriptor of the file (see WriterLock.release).
            self._lock.release()
            self._lock = None

    def __enter__(self) -> KB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ---------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return {k: v for k, v in self.conn.execute("SELECT key, value FROM kb_meta")}

    def set_meta(self, values: dict[str, Any]) -> None:
        self.conn.executemany(
            "INSERT INTO kb_meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    def bind_model(
        self,
        model_id: str,
        dimension: int,
        normalized: bool,
        backend: str,
        chunking: dict[str, int],
        extra: dict[str, str] | None = None,
    ) -> None:
        """Record the embedding model on first use (with `extra` settings that stay with it, such as
        the fusion weights); refuse a different model afterwards."""
        recorded = self.meta().get("embedding_model")
        if recorded is None:
            if backend not in BACKENDS or backend == "numpy":
                raise KBError(f"Unknown vector backend {backend!r}; choose vec or vss.")
            with transaction(self.conn):
                # Read again under the write lock: another kb may have bound the file meanwhile.
                recorded = self.meta().get("embedding_model")
                if recorded is None:
                    self.set_meta(
                        {
                            "embedding_model": model_id,
                            "embedding_dimension": dimension,
                            "embedding_normalized": int(normalized),
                            "vector_backend": backend,
                            **{f"chunk_{k}": v for k, v in chunking.items()},
                            **(extra or {}),
                        }
                    )
                    self._index = open_index(self.conn, backend, dimension)
                    self._index.create()
                    return
        if recorded != model_id:
            raise ModelMismatch(
                f"{self.path} was built with the embedding model {recorded}, not {model_id}; "
                f"use --embedder {recorded} or build a new KB."
            )

    @property
    def model_id(self) -> str | None:
        return self.meta().get("embedding_model")

    def index(self) -> VectorIndex:
        """The vector index recorded in kb_meta, or a numpy scan where it cannot be used."""
        if self._index is None:
            meta = self.meta()
            backend = meta.get("vector_backend", "numpy")
            try:
                index = BACKENDS[backend](self.conn, int(meta["embedding_dimension"]))
            except (KeyError, ValueError) as exc:
                raise NotAKBFile(
                    f"{self.path} has damaged metadata (vector backend {backend!r}, "
                    f"dimension {meta.get('embedding_dimension')!r})."
                ) from exc
            try:
                usable = meta.get("vector_index_state", "ready") == "ready"
                if usable:
                    index.load()
                    usable = index.exists()
            except ExtensionUnavailable:
                usable = False
            if not usable:
                # A copy without its index table, or a Python that cannot load the extension:
                # scan the canonical vectors instead, slower but the same answers.
                index = BACKENDS["numpy"](self.conn, index.dimension)
            self._index = index
        return self._index

    def reindex(self, backend: str) -> int:
        """Rebuild the vector index from the embeddings table, switching backend if asked."""
        if backend not in ("vec", "vss"):
            raise KBError(f"Unknown vector backend {backend!r}; choose vec or vss.")
        meta = self.meta()
        if "embedding_dimension" not in meta:
            raise KBError(f"{self.path} holds no embeddings yet; nothing to index.")
        new = open_index(self.conn, backend, int(meta["embedding_dimension"]))

        def commit_batch() -> None:
            self.conn.execute("COMMIT")
            self.conn.execute("BEGIN IMMEDIATE")

        with transaction(self.conn):
            old = meta.get("vector_backend")
            if old and old != backend and old in ("vec", "vss"):
                old_index = BACKENDS[old](self.conn, new.dimension)
                old_index.load()
                old_index.drop()
            # A rebuild that commits in batches is marked, so that a killed one is never mistaken
            # for a complete index: until "ready", searches scan the embeddings instead.
            self.set_meta({"vector_backend": backend, "vector_index_state": "building"})
            count = new.rebuild(commit_batch)
            # The keyword index is derived too: rebuilt from the chunks, it recovers rows it lost.
            self.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
            self.set_meta({"vector_index_state": "ready"})
        self._index = new
        return count

    # -- sources ----------------------------------------------------------------------------

    def get_source(self, uri: str) -> StoredSource | None:
        found = self.sources_where("uri = ?", (uri,))
        return found[0] if found else None

    def sources_where(self, condition: str, params: Sequence[Any] = ()) -> list[StoredSource]:
        """Stored sources matching an SQL condition on `sources` (kb's own conditions only, never user text)."""
        rows = self.conn.execute(
            "SELECT id, uri, content_hash, status, json_extract(metadata, '$._settings'), size, mtime, "
            "(SELECT count(*) FROM chunks WHERE source_id = sources.id), metadata, duplicate_of, kind "
            f"FROM sources WHERE {condition} ORDER BY uri",
            tuple(params),
        ).fetchall()
        out = []
        for row in rows:
            try:
                metadata = json.loads(row[8]) if row[8] else {}
            except ValueError:
                metadata = {}
            out.append(
                StoredSource(
                    *row[:8],
                    metadata=metadata if isinstance(metadata, dict) else {},
                    duplicate_of=row[9],
                    kind=row[10],
                )
            )
        return out

    def remove_source(self, source_id: int) -> None:
        """Take one source out of the KB in one transaction: its chunks, embeddings, vector index and
        FTS rows, its stored original and its row (`kb remove` and `--prune` both come here)."""
        from .originals import forget_unreferenced

        with transaction(self.conn):
            self._delete_source_rows(source_id)
            self.conn.execute("DELETE FROM sources WHERE id = ?", (source_id,))
            # Its stored original goes too, unless another source (a duplicate) has the same bytes.
            forget_unreferenced(self.conn)

    def touch_source(self, source_id: int, mtime: float) -> None:
        """Record a new modification time for content that did not change."""
        self.conn.execute("UPDATE sources SET mtime = ? WHERE id = ?", (mtime, source_id))

    def _writable_index(self) -> VectorIndex:
        index = self.index()
        if index.name == "numpy" and self.meta().get("vector_backend") in ("vec", "vss"):
            raise ExtensionUnavailable(
                f"{self.path} keeps a {self.meta()['vector_backend']} vector index that cannot be updated here "
                "(its extension does not load, or a rebuild was interrupted); run `kb reindex` first."
            )
        return index

    def _delete_source_rows(self, source_id: int) -> None:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE source_id = ?", (source_id,))]
        if not ids:
            return
        # External-content FTS5 needs the old values to forget a row.
        self.conn.execute(
            "INSERT INTO chunks_fts(chunks_fts, rowid, text, heading) "
            "SELECT 'delete', id, text, heading FROM chunks WHERE source_id = ?",
            (source_id,),
        )
        self._writable_index().delete(ids)
        self.conn.execute(
            "DELETE FROM embeddings WHERE chunk_id IN (SELECT id FROM chunks WHERE source_id = ?)", (source_id,)
        )
        self.conn.execute("DELETE FROM chunks WHERE source_id = ?", (source_id,))

    def write_source(
        self,
        doc: Document,
        *,
        status: str,
        content_hash: str,
        size: int,
        mtime: float | None,
        settings_key: str,
        chunks: Sequence[Chunk] = (),
        vectors: np.ndarray | None = None,
        error: str | None = None,
        fetched_at: str | None = None,
        flags: Sequence[str | None] | None = None,
    ) -> int:
        """Replace everything kb holds for `doc.uri` in one transaction; return the source id.

        `flags` are the chunks' kb.injection.flags(), computed here when not given.
        """
        if flags is None:
            from .injection import flags as find_flags

            flags = [find_flags(c.text, c.locator.heading) for c in chunks]
        metadata = dict(doc.metadata)
        metadata["_settings"] = settings_key
        with transaction(self.conn):
            existing = self.get_source(doc.uri)
            values = (
                doc.kind,
                doc.title,
                content_hash,
                size,
                mtime,
                utcnow(),
                status,
                error,
                json.dumps(metadata, ensure_ascii=False, default=str),
                fetched_at,
            )
            if existing:
                self._delete_source_rows(existing.id)
                self.conn.execute(
                    "UPDATE sources SET kind=?, title=?, content_hash=?, size=?, mtime=?, ingested_at=?, "
                    "status=?, error=?, metadata=?, fetched_at=?, duplicate_of=NULL WHERE id = ?",
                    (*values, existing.id),
                )
                source_id = existing.id
            else:
                cursor = self.conn.execute(
                    "INSERT INTO sources(kind, title, content_hash, size, mtime, ingested_at, status, error, "
                    "metadata, fetched_at, uri) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, doc.uri),
                )
                source_id = cursor.lastrowid
            if chunks:
                assert vectors is not None and len(vectors) == len(chunks)
                ids = []
                for chunk, flag in zip(chunks, flags, strict=True):
                    loc = chunk.locator
                    cursor = self.conn.execute(
                        "INSERT INTO chunks(source_id, ordinal, text, page, slide, start_s, end_s, heading, anchor, "
                        "link, flags) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            source_id,
                            chunk.ordinal,
                            chunk.text,
                            loc.page,
                            loc.slide,
                            loc.start_s,
                            loc.end_s,
                            loc.heading,
                            loc.anchor,
                            deep_link(doc.uri, doc.kind, loc),
                            flag,
                        ),
                    )
                    ids.append(cursor.lastrowid)
                self.conn.executemany(
                    "INSERT INTO embeddings(chunk_id, vector) VALUES (?, ?)",
                    [(i, to_blob(v)) for i, v in zip(ids, vectors)],
                )
                self.conn.execute(
                    "INSERT INTO chunks_fts(rowid, text, heading) "
                    "SELECT id, text, heading FROM chunks WHERE source_id = ?",
                    (source_id,),
                )
                self._writable_index().add(ids, vectors)
        return source_id

    def record_failure(
        self, uri: str, kind: str | None, error: str, *, content_hash: str | None, size: int | None
    ) -> None:
        """Note a source that could not be read, without touching content already ingested from it."""
        with transaction(self.conn):
            if self.get_source(uri) is None:
                self.conn.execute(
                    "INSERT INTO sources(uri, kind, title, content_hash, size, ingested_at, status, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'error', ?)",
                    (uri, kind, Path(uri).name, content_hash, size, utcnow(), error),
                )

    # -- reading ----------------------------------------------------------------------------

    def flag_counts(self) -> dict[str, dict[str, int]]:
        """Chunks flagged at ingest (kb/injection.py), by source uri and flag: {uri: {"instructions": 2}}."""
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(chunks)")}
        if "flags" not in columns:
            return {}  # a file of an older schema, read where it may not be upgraded
        counts: dict[str, dict[str, int]] = {}
        for uri, found, n in self.conn.execute(
            "SELECT sources.uri, chunks.flags, count(*) FROM chunks JOIN sources ON sources.id = chunks.source_id "
            "WHERE chunks.flags IS NOT NULL GROUP BY sources.uri, chunks.flags"
        ):
            for flag in str(found).split(","):
                counts.setdefault(uri, {})[flag] = counts.setdefault(uri, {}).get(flag, 0) + n
        return counts

    def info(self) -> dict[str, Any]:
        """Counts, model and per-source status, for `kb info`."""
        meta = self.meta()
        counts = {
            table: self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sources", "chunks", "embeddings", "answers")
        }
        sources = [
            {
                "uri": r[0],
                "title": r[1],
                "kind": r[2],
                "status": r[3],
                "error": r[4],
                "chunks": r[5],
                "ingested_at": r[6],
                "duplicate_of": r[7],
            }
            for r in self.conn.execute(
                "SELECT uri, title, kind, status, error, "
                "(SELECT count(*) FROM chunks WHERE source_id = sources.id), ingested_at, "
                "(SELECT uri FROM sources AS original WHERE original.id = sources.duplicate_of) "
                "FROM sources ORDER BY uri"
            )
        ]
        flagged = self.flag_counts()
        for source in sources:
            source["flags"] = flagged.get(source["uri"], {})
        roots = [r[0] for r in self.conn.execute("SELECT target FROM roots ORDER BY id")]
        return {
            "path": str(self.path),
            "meta": meta,
            "counts": counts,
            "sources": sources,
            "roots": roots,
            "size_bytes": self.path.stat().st_size,
        }
