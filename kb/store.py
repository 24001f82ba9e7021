"""The KB file: opening and validating it, its metadata, and writing one source at a time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .db import connect, sqlite3, transaction
from .errors import ExtensionUnavailable, KBError, ModelMismatch, NotAKBFile, SchemaTooNew
from .links import deep_link
from .migrations import MIGRATIONS, SCHEMA_VERSION, migrate
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
    duplicate_of: int | None = None
    """For a `duplicate`: the id of the source holding the same content."""
    kind: str | None = None


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
    def open(
        cls, path: str | Path, *, create: bool = False, readonly: bool = False, integrity: bool | None = None
    ) -> KB:
        """Open a KB file, creating it when `create` and it does not exist; refuse anything else.

        Every existing file has its header, size and schema checked; SQLite's quick check runs too
        when `integrity` is True, or when it is None and the file is small enough for it to be cheap.
        """
        path = Path(path)
        exists = path.exists()
        if not exists and not create:
            raise KBError(f"{path} does not exist; build it first with `kb ingest {path} SOURCE...`.")
        if not exists and not path.parent.is_dir():
            raise KBError(f"Cannot create {path}: the folder {path.parent} does not exist.")
        if exists:
            check_header(path)
        conn = None
        try:
            conn = connect(path, readonly=readonly)
            version = _schema_version(conn, path)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{path} was made by a newer kb (schema v{version}; this kb reads up to v{SCHEMA_VERSION}); "
                    "upgrade kb to open it."
                )
            if exists:
                # A file someone sent you is checked before any of its SQL can run.
                check_schema(conn, path, version)
                if integrity or (integrity is None and path.stat().st_size <= QUICK_CHECK_MAX_BYTES):
                    check_integrity(conn, path)
        except (sqlite3.DatabaseError, KBError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, KBError):
                raise
            raise NotAKBFile(f"{path} is not a kb file or is damaged ({exc}).") from exc
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
                "duplicate_of": r[7],
            }
            for r in self.conn.execute(
                "SELECT uri, title, kind, status, error, "
                "(SELECT count(*) FROM chunks WHERE source_id = sources.id), ingested_at, "
                "(SELECT uri FROM sources AS original WHERE original.id = sources.duplicate_of) "
                "FROM sources ORDER BY uri"
            )
        ]
        roots = [r[0] for r in self.conn.execute("SELECT target FROM roots ORDER BY id")]
        return {
            "path": str(self.path),
            "meta": meta,
            "counts": counts,
            "sources": sources,
            "roots": roots,
            "size_bytes": self.path.stat().st_size,
        }


QUICK_CHECK_MAX_BYTES = 64 * 2**20
"""KB.open runs `PRAGMA quick_check` on files up to this size by default: it reads every page,
about 3 ms per MB here (0.2 s at this size); `kb serve` and `kb export` always run it."""

VECTOR_TABLES = {"chunks_vec": "vec0", "chunks_vss": "vss0"}
"""The vector index virtual tables kb may add to its schema (kb/vectors.py), with their modules."""


def check_header(path: Path) -> None:
    """Refuse what is not an SQLite file, or is one cut short (cheap: the first 100 bytes and the size)."""
    if path.is_dir():
        raise NotAKBFile(f"{path} is a folder, not a kb file.")
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
        size = path.stat().st_size
    except OSError as exc:
        raise NotAKBFile(f"{path} cannot be read ({exc.strerror}).") from exc
    if not header:
        return  # an empty file: SQLite makes it a new database
    if header[:16] != SQLITE_HEADER:
        raise NotAKBFile(f"{path} is not a kb file (it is not an SQLite database).")
    if len(header) < 100:
        raise NotAKBFile(
            f"{path} is not a kb file or is damaged: it is truncated ({size:,} bytes); ask for a complete copy."
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise NotAKBFile(
            f"{path} is not a kb file or is damaged: its header names an impossible page size ({page_size})."
        )
    if Path(f"{path}-wal").exists():
        return  # a live WAL file: the database file alone may be shorter until the next checkpoint
    # The page count in the header is valid when its change counter matches "version-valid-for".
    pages = int.from_bytes(header[28:32], "big") if header[24:28] == header[92:96] else 0
    if size % page_size or size < pages * page_size:
        raise NotAKBFile(
            f"{path} is not a kb file or is damaged: it is truncated "
            f"({size:,} bytes, expected {max(pages * page_size, size):,}); "
            "ask for a complete copy."
        )


def _normal_sql(sql: str | None) -> str:
    return " ".join((sql or "").split())


@cache
def expected_schema(version: int) -> dict[str, tuple[str, str, str]]:
    """sqlite_master of a KB at schema `version`, as name -> (type, tbl_name, SQL), from the migrations."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for migration in MIGRATIONS[:version]:
            migration(conn)
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    finally:
        conn.close()
    return {name: (kind, table, _normal_sql(sql)) for kind, name, table, sql in rows}


def check_schema(conn: Any, path: Path, version: int) -> None:
    """Refuse a KB whose views, triggers or tables differ from those kb creates at `version`.

    kb creates no trigger and one view; a changed view can show other links than the rows hold, and
    a trigger runs its SQL when kb next writes. Plain tables someone added (and their indexes) are
    only data; trusted_schema=OFF keeps their expressions from calling unsafe functions.
    """
    expected = expected_schema(version)
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    names = {row[1] for row in rows}
    vector = {
        name
        for kind, name, _, sql in rows
        if name in VECTOR_TABLES
        and _normal_sql(sql).startswith(f"CREATE VIRTUAL TABLE {name} USING {VECTOR_TABLES[name]}(")
    }
    refusal = "kb refuses altered files, since a view or trigger can hide SQL that runs when the file is used"
    for kind, name, table, sql in rows:
        want = expected.get(name)
        if want is not None:
            if want != (kind, table, _normal_sql(sql)):
                raise NotAKBFile(f"{path} has a changed {kind} {name!r}; {refusal}.")
        elif kind in ("view", "trigger"):
            raise NotAKBFile(f"{path} has a {kind} kb does not create ({name!r}); {refusal}.")
        elif _normal_sql(sql).upper().startswith("CREATE VIRTUAL") and name not in vector:
            raise NotAKBFile(f"{path} has a virtual table kb does not create ({name!r}); {refusal}.")
    missing = [name for name in expected if name not in names]
    if missing:
        raise NotAKBFile(f"{path} is not a complete kb file (it lacks {', '.join(sorted(missing))}).")


def check_integrity(conn: Any, path: Path) -> None:
    """SQLite's quick check (every page's structure, not the indexes' contents)."""
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        detail = " ".join(" ".join(problems).split())[:200]
        raise NotAKBFile(
            f"{path} is not a kb file or is damaged (SQLite's quick check found: {detail}); ask for a new copy."
        )


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
