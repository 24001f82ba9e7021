"""The KB file: opening and validating it, its metadata, and writing one source at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .db import connect, sqlite3, transaction
from .errors import ExtensionUnavailable, KBError, ModelMismatch, NotAKBFile, SchemaTooNew
from .links import deep_link
from .migrations import SCHEMA_VERSION, migrate
from .types import Chunk, Document
from .vectors import BACKENDS, VectorIndex, open_index, to_blob

SQLITE_HEADER = b"SQLite format 3\x00"


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


class KB:
    """One KB file. Use `KB.open()`; every write goes through one transaction per source."""

    def __init__(self, path: Path, conn: Any, readonly: bool):
        self.path = path
        self.conn = conn
        self.readonly = readonly
        self._index: VectorIndex | None = None
        if self.meta().get("vector_backend") == "vec":
            # Load sqlite-vec now, so SQL on kb.conn can touch the index table too. sqlite-vss is
            # loaded only when needed: it drags in a reference BLAS that, loaded before torch,
            # made embedding 25x slower (see Ingester).
            self.index()

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, readonly: bool = False) -> KB:
        """Open a KB file, creating it when `create` and it does not exist; refuse anything else."""
        path = Path(path)
        exists = path.exists()
        if not exists and not create:
            raise KBError(f"{path} does not exist; build it first with `kb ingest {path} SOURCE...`.")
        if not exists and not path.parent.is_dir():
            raise KBError(f"Cannot create {path}: the folder {path.parent} does not exist.")
        if exists:
            _check_header(path)
        try:
            conn = connect(path, readonly=readonly)
            version = _schema_version(conn, path)
        except sqlite3.DatabaseError as exc:
            raise NotAKBFile(f"{path} is not a kb file or is damaged ({exc}).") from exc
        if version > SCHEMA_VERSION:
            conn.close()
            raise SchemaTooNew(
                f"{path} was made by a newer kb (schema v{version}; this kb reads up to v{SCHEMA_VERSION}); "
                "upgrade kb to open it."
            )
        if version < SCHEMA_VERSION:
            if readonly:
                conn.close()
                raise KBError(f"{path} has an older schema (v{version}); open it once without read-only to upgrade it.")
            conn.execute("PRAGMA journal_mode = WAL")
            migrate(conn, version)
            if version == 0:
                kb = cls(path, conn, readonly)
                kb.set_meta({"created_with": f"kb {__version__}", "created_at": utcnow()})
                return kb
        elif create:
            # WAL while writing: readers (Datasette, a second kb search) are never blocked.
            conn.execute("PRAGMA journal_mode = WAL")
        return cls(path, conn, readonly)

    def close(self) -> None:
        self.conn.close()

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
        self, model_id: str, dimension: int, normalized: bool, backend: str, chunking: dict[str, int]
    ) -> None:
        """Record the embedding model on first use; refuse a different one afterwards."""
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
            self.set_meta({"vector_index_state": "ready"})
        self._index = new
        return count

    # -- sources ----------------------------------------------------------------------------

    def get_source(self, uri: str) -> StoredSource | None:
        row = self.conn.execute(
            "SELECT id, uri, content_hash, status, json_extract(metadata, '$._settings'), size, mtime, "
            "(SELECT count(*) FROM chunks WHERE source_id = sources.id), metadata FROM sources WHERE uri = ?",
            (uri,),
        ).fetchone()
        if row is None:
            return None
        try:
            metadata = json.loads(row[8]) if row[8] else {}
        except ValueError:
            metadata = {}
        return StoredSource(*row[:8], metadata=metadata if isinstance(metadata, dict) else {})

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
    ) -> int:
        """Replace everything kb holds for `doc.uri` in one transaction; return the source id."""
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
                    "status=?, error=?, metadata=?, fetched_at=? WHERE id = ?",
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
                for chunk in chunks:
                    loc = chunk.locator
                    cursor = self.conn.execute(
                        "INSERT INTO chunks(source_id, ordinal, text, page, slide, start_s, end_s, heading, anchor, "
                        "link) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            }
            for r in self.conn.execute(
                "SELECT uri, title, kind, status, error, "
                "(SELECT count(*) FROM chunks WHERE source_id = sources.id), ingested_at FROM sources ORDER BY uri"
            )
        ]
        return {
            "path": str(self.path),
            "meta": meta,
            "counts": counts,
            "sources": sources,
            "size_bytes": self.path.stat().st_size,
        }


def _check_header(path: Path) -> None:
    if path.is_dir():
        raise NotAKBFile(f"{path} is a folder, not a kb file.")
    try:
        with path.open("rb") as handle:
            header = handle.read(16)
    except OSError as exc:
        raise NotAKBFile(f"{path} cannot be read ({exc.strerror}).") from exc
    if header and header != SQLITE_HEADER:
        raise NotAKBFile(f"{path} is not a kb file (it is not an SQLite database).")


def _schema_version(conn: Any, path: Path) -> int:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "kb_meta" not in tables:
        raise NotAKBFile(f"{path} is an SQLite database but not a kb file (it has no kb_meta table).")
    row = conn.execute("SELECT value FROM kb_meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise NotAKBFile(f"{path} is not a kb file (its kb_meta records no schema version).")
    try:
        return int(row[0])
    except ValueError as exc:
        raise NotAKBFile(f"{path} is not a kb file (schema version {row[0]!r}).") from exc
