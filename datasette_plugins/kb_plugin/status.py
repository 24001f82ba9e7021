"""Which of Datasette's databases are KB files, checked once per file version, and what their connections get.

A file with a `kb_meta` table is treated as a KB: it must pass kb's own checks (header, size,
schema against the migrations, SQLite's quick check) before the plugin loads an extension into its
connections or answers from it. Other SQLite files are left to Datasette as they are.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KB = "kb"
OTHER = "other"
REFUSED = "refused"


@dataclass(frozen=True)
class SourceInfo:
    """What the pages need to know about one source to link to it."""

    id: int
    uri: str
    kind: str
    title: str
    sha256: str
    """Its content hash: the key of its original in source_files."""
    stored: bool
    """Its original file is in the KB (source_files), so the plugin can serve it."""
    name: str
    """A safe file name for it (see kb.originals.safe_file_name)."""


@dataclass(frozen=True)
class Status:
    """What the plugin found in one database file."""

    kind: str
    """KB, OTHER (an SQLite file that is not a KB) or REFUSED (damaged, altered or unreadable)."""
    reason: str = ""
    """For REFUSED: the one sentence shown to the user."""
    meta: dict[str, str] = field(default_factory=dict)
    """The KB's kb_meta table."""
    vector_extension: str | None = None
    """"vec" or "vss" when the KB's vector index table is present, complete and its extension loads."""
    counts: dict[str, int] = field(default_factory=dict)
    """Rows in sources and chunks, for the ask page."""
    sources: dict[int, SourceInfo] = field(default_factory=dict)
    """Every source by id: read once per file version, so a table of links needs no query per cell."""
    uris: dict[str, int] = field(default_factory=dict)
    """Source ids by uri (search hits and views name the source by its uri)."""


_cache: dict[str, tuple[tuple[int, int, int], Status]] = {}
_lock = threading.Lock()


def file_status(path: str | Path) -> Status:
    """The status of the file at `path`, computed once per file version (size, mtime, inode)."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        return Status(REFUSED, f"{path} cannot be read ({exc.strerror}).")
    key = os.path.realpath(path)
    stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    # One check at a time: each is cheap except the quick check of a big file, which should run once.
    with _lock:
        cached = _cache.get(key)
        if cached is None or cached[0] != stamp:
            cached = (stamp, _check(Path(path)))
            _cache[key] = cached
        return cached[1]


def _check(path: Path) -> Status:
    from kb.db import connect, sqlite3
    from kb.errors import KBError
    from kb.store import KB as KBFile
    from kb.store import check_header

    try:
        check_header(path)
    except KBError as exc:
        return Status(REFUSED, str(exc))
    try:
        conn = connect(path, readonly=True)
        try:
            looks_like_kb = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kb_meta'"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return Status(REFUSED, f"{path} is damaged or not an SQLite database ({exc}).")
    if not looks_like_kb:
        return Status(OTHER)
    try:
        with KBFile.open(path, readonly=True, integrity=True) as kb:
            meta = kb.meta()
            index = kb.index() if "embedding_dimension" in meta else None
            extension = index.name if index is not None and index.name in ("vec", "vss") else None
            counts = {t: kb.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("sources", "chunks")}
            sources = _sources(kb.conn)
    except KBError as exc:
        return Status(REFUSED, str(exc))
    except sqlite3.DatabaseError as exc:
        return Status(REFUSED, f"{path} is damaged ({exc}); ask for a new copy.")
    uris = {source.uri: source.id for source in sources.values()}
    return Status(KB, meta=meta, vector_extension=extension, counts=counts, sources=sources, uris=uris)


def _sources(conn: Any) -> dict[int, SourceInfo]:
    from kb.originals import safe_file_name, uri_name

    rows = conn.execute(
        "SELECT id, uri, kind, title, content_hash, content_hash IN (SELECT sha256 FROM source_files) FROM sources"
    ).fetchall()
    return {
        row[0]: SourceInfo(
            id=row[0],
            uri=str(row[1]),
            kind=str(row[2] or ""),
            title=str(row[3] or row[1]),
            sha256=str(row[4] or ""),
            stored=bool(row[5]),
            name=safe_file_name(uri_name(str(row[1])), f"source-{row[0]}"),
        )
        for row in rows
    }


def database_status(datasette: Any, database: str) -> Status | None:
    """The status of a Datasette database by name, checked now if its file changed; None for in-memory ones.

    May read the whole file: call it from a worker thread (Datasette's connection threads, an executor).
    """
    db = datasette.databases.get(database)
    if db is None or db.is_memory or not db.path:
        return None
    return file_status(db.path)


def known_status(datasette: Any, database: str) -> Status | None:
    """The last status found for a database, without touching its file: for hooks on the event loop.

    The startup hook checks every file first; a file rewritten since keeps its last status here
    until a connection or the ask page checks it again.
    """
    db = datasette.databases.get(database)
    if db is None or db.is_memory or not db.path:
        return None
    cached = _cache.get(os.path.realpath(db.path))
    return cached[1] if cached is not None else None


HEAP_LIMIT = 256 * 2**20
"""SQLite's hard heap limit in a process serving KBs (all connections together): a query typed into
Datasette (`select length(randomblob(900000000))`) fails with "out of memory" instead of taking the
machine's. kb's own queries use a few MB: page caches, FTS5 doclists, sorting 50 hits."""
VALUE_LIMIT = 64 * 2**20
"""Longest string or BLOB one KB connection may make (SQLITE_LIMIT_LENGTH), where the sqlite3
module can set it (pysqlite3 has no setlimit(); the heap limit bounds it there): kb stores nothing
larger than a 256 KiB block of an original."""


def prepare(conn: Any, status: Status | None, time_limit_ms: int | None = None) -> None:
    """Set up one of Datasette's connections: defensive settings, memory bounds, the vector
    extension, kb's SQL functions (kb_embed within `time_limit_ms`, Datasette's SQL time limit)."""
    if status is None or status.kind == OTHER:
        return
    # As kb itself opens KB files: views and triggers in the file may not call functions with side effects.
    conn.execute("PRAGMA trusted_schema = OFF")
    bound_memory(conn)
    if status.kind != KB:
        return
    if status.vector_extension:
        from kb.db import load_extension
        from kb.errors import ExtensionUnavailable

        try:
            load_extension(conn, status.vector_extension)  # locks extension loading again afterwards
        except ExtensionUnavailable:
            pass  # the pages work without it; the semantic query scans the stored vectors instead
    model = status.meta.get("embedding_model")
    budget = EmbedBudget((time_limit_ms or 3000) / 1000, conn)
    # Each statement starts the budget again: SQLite calls the trace callback as a statement begins.
    conn.set_trace_callback(budget.restart)
    conn.create_function("kb_embed", 1, lambda text: budget.embed(model, text), deterministic=True)
    conn.create_function("kb_distance", 2, cosine_distance, deterministic=True)
    conn.create_function("kb_fts_query", 1, _fts_query, deterministic=True)


def lock_extension_loading(conn: Any) -> None:
    """Make `select load_extension(...)` answer "not authorized" on this connection."""
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)


_embedders: dict[str, Any] = {}
_embedders_lock = threading.Lock()


def embedder_for(model: str) -> Any:
    """One embedder per model for the whole process (its query path is NumPy: no torch import)."""
    with _embedders_lock:
        if model not in _embedders:
            from kb.plugins import get_embedder

            _embedders[model] = get_embedder(model)
        return _embedders[model]


def bound_memory(conn: Any) -> None:
    """SQLite's process-wide heap limit, and this connection's largest value (kept if already lower)."""
    conn.execute(f"PRAGMA hard_heap_limit = {HEAP_LIMIT}")
    if hasattr(conn, "setlimit"):
        from kb.db import sqlite3

        if conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) > VALUE_LIMIT:
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, VALUE_LIMIT)


MAX_EMBED_CHARS = 2000
"""Longest text kb_embed() embeds: a question (kb ask's own limit); the model reads 256 tokens at most."""


class EmbedBudget:
    """kb_embed() for one connection: within Datasette's SQL time limit, however it is called.

    Datasette stops a query from a progress handler that SQLite calls every 1,000 instructions;
    one call of a Python function is one instruction, so a recursive CTE calling kb_embed() on a
    new text each row ran 13-19 s past a 3 s limit. The time a statement has spent is counted
    here, and past the limit the statement is interrupted as Datasette's own limit does (so the
    page says "SQL query took too long"); a text already embedded costs nothing.
    """

    def __init__(self, limit_s: float, conn: Any):
        self.limit_s = limit_s
        self.started = time.monotonic()
        self._conn = conn

    def restart(self, statement: str) -> None:
        self.started = time.monotonic()

    def embed(self, model: str | None, text: Any) -> bytes | None:
        from kb.search import embed_query
        from kb.vectors import to_blob

        if model is None or text is None:
            return None
        text = str(text)
        if len(text) > MAX_EMBED_CHARS:
            # SQLite shows any exception of a function as "user-defined function raised exception".
            raise ValueError(f"kb_embed() takes at most {MAX_EMBED_CHARS:,} characters")
        if time.monotonic() - self.started > self.limit_s:
            self._conn.interrupt()  # the statement ends with "interrupted" at its next step
            return None
        return to_blob(embed_query(embedder_for(model), text))


def cosine_distance(a: Any, b: Any) -> float | None:
    """1 - cosine similarity of two float32 BLOBs (kb stores unit vectors); NULL when they do not match."""
    if not isinstance(a, bytes) or not isinstance(b, bytes) or len(a) != len(b) or not a or len(a) % 4:
        return None
    x = np.frombuffer(a, dtype="<f4")
    y = np.frombuffer(b, dtype="<f4")
    return float(1.0 - x @ y)


def _fts_query(text: Any) -> str:
    from kb.search import fts_query

    # An FTS5 query that matches nothing, rather than a syntax error, when no word is left.
    return (fts_query(str(text)) if text is not None else None) or '""'
