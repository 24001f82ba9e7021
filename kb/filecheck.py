"""Checks a KB file passes before kb relies on it: what it is, how it opens, its schema and its contents.

A KB file is often one someone sent: it may be cut short, altered, damaged in ways SQLite's own
checks do not see (a vector of the wrong length, metadata naming a dimension the vectors do not
have), sit on read-only media, or not be a file at all (a FIFO blocks whoever reads it). Every
refusal is one sentence naming the file and the real cause.
"""

from __future__ import annotations

import os
import stat
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .db import connect, sqlite3
from .errors import KBError, NotAKBFile
from .migrations import MIGRATIONS

SQLITE_HEADER = b"SQLite format 3\x00"
PARTIAL_SUFFIX = ".kb-partial"
"""The name `kb export` writes under until the copy is complete; kb refuses to open such a file."""

QUICK_CHECK_MAX_BYTES = 64 * 2**20
"""KB.open runs `PRAGMA quick_check` and reads every vector (length, NaN) on files up to this size
by default: about 3 ms per MB here (0.2 s at this size); `kb serve` always does."""

VECTOR_TABLES = {"chunks_vec": "vec0", "chunks_vss": "vss0"}
"""The vector index virtual tables kb may add to its schema (kb/vectors.py), with their modules."""
BACKEND_TABLES = {"vec": "chunks_vec", "vss": "chunks_vss"}
MAX_DIMENSION = 8192
SCAN_BATCH = 4096

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket"}  # fmt: skip


# -- what the path is ----------------------------------------------------------------------------


def check_path(path: Path) -> None:
    """Refuse, at once, what cannot be a KB file: an unfinished export, a folder, a FIFO or a device."""
    if path.name.endswith(PARTIAL_SUFFIX):
        raise NotAKBFile(
            f"{path} is an unfinished kb export (the copy was interrupted before it was complete); "
            "run `kb export` again, which replaces it."
        )
    try:
        info = path.stat()
    except OSError:
        return  # absent: the caller says so (or creates it)
    _check_mode(path, info.st_mode)


def _check_mode(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise NotAKBFile(f"{path} is a folder, not a kb file.")
    if not stat.S_ISREG(mode):
        what = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise NotAKBFile(f"{path} is {what}, not a kb file; kb reads and writes ordinary files only.")


def check_header(path: Path) -> None:
    """Refuse what is not an SQLite file, or is one cut short (cheap: the first 100 bytes and the size)."""
    try:
        # Opened without blocking and checked on the open descriptor: a FIFO (or a file swapped
        # for one after a stat) never blocks the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except IsADirectoryError:
        raise NotAKBFile(f"{path} is a folder, not a kb file.") from None
    except OSError as exc:
        raise NotAKBFile(f"{path} cannot be read ({exc.strerror}).") from exc
    try:
        info = os.fstat(fd)
        _check_mode(path, info.st_mode)
        header = os.read(fd, 100)
        size = info.st_size
    except OSError as exc:
        raise NotAKBFile(f"{path} cannot be read ({exc.strerror}).") from exc
    finally:
        os.close(fd)
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


def in_wal_mode(path: Path) -> bool:
    """True when the file's header says WAL (a teacher's working KB); export writes rollback-journal files."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # never blocks on a FIFO
    except OSError:
        return False
    try:
        header = os.read(fd, 20) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    except OSError:
        header = b""
    finally:
        os.close(fd)
    return len(header) == 20 and header[18] == 2


# -- opening -------------------------------------------------------------------------------------


def open_connection(path: Path, readonly: bool) -> tuple[Any, str | None]:
    """A connection that has read the schema, and a note when it had to open in another way.

    A WAL file on read-only media cannot be opened as usual: SQLite must create its -shm index
    beside it. With no -wal to read, the file alone is the whole database, so it opens immutable.
    """
    conn = connect(path, readonly=readonly)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn, None
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" not in str(exc) and "readonly" not in str(exc):
            raise
        cause = exc
    wal = Path(f"{path}-wal")
    has_log = wal.exists() and wal.stat().st_size > 0
    if not os.access(path, os.R_OK):
        raise NotAKBFile(f"{path} cannot be read (permission denied).") from cause
    if in_wal_mode(path) and not writable_folder(path.parent):
        if has_log and not Path(f"{path}-shm").exists():
            raise KBError(
                f"{path} cannot be opened here: its latest changes are in {wal.name}, which SQLite can read only "
                f"with a {path.name}-shm file it cannot create in this read-only folder; copy both files to a "
                "writable folder, or open the KB once where it can be written."
            ) from cause
        if not has_log:
            conn = connect(path, readonly=True, immutable=True)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn, (
                f"{path} is on a read-only file system (or in a folder you cannot write); "
                "opened it read-only, as an immutable file."
            )
    folder = "" if writable_folder(path.parent) else f"; its folder {path.parent} cannot be written"
    raise KBError(f"SQLite could not open {path} ({cause}{folder}).") from cause


def writable_folder(folder: Path) -> bool:
    if not os.access(folder, os.W_OK):
        return False
    try:
        return not os.statvfs(folder).f_flag & os.ST_RDONLY
    except OSError:
        return True


# -- the schema ----------------------------------------------------------------------------------


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


def schema_version(conn: Any, path: Path) -> int:
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


def check_contents(conn: Any, path: Path, version: int, *, integrity: bool | None, repair: bool = False) -> None:
    """Every check of an existing KB file's contents, in the order KB.open runs them, before any of its
    SQL runs: schema, metadata and keyword index always; SQLite's quick check and every stored vector
    when `integrity`, or when it is None and the file is small enough for them to be cheap. With
    `repair` (kb reindex), damage to the derived indexes is left for the caller to rebuild."""
    check_schema(conn, path, version)
    meta = check_metadata(conn, path) if version else {}
    if version and not repair:
        check_keyword_index(conn, path)
    cheap = integrity is None and path.stat().st_size <= QUICK_CHECK_MAX_BYTES
    if integrity or cheap:
        check_integrity(conn, path)
        if "embedding_dimension" in meta:
            check_vectors(conn, path, int(meta["embedding_dimension"]), thorough=True)


# -- what kb relies on in the contents -----------------------------------------------------------


def damaged(path: Path, what: str) -> NotAKBFile:
    return NotAKBFile(f"{path} is damaged: {what}; rebuild it, or ask for a new copy.")


def check_metadata(conn: Any, path: Path) -> dict[str, str]:
    """kb_meta's facts about the vectors, coherent with each other and with the index table; returns kb_meta."""
    meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM kb_meta")}
    if meta.get("export_incomplete"):
        raise NotAKBFile(f"{path} is an interrupted kb export (the copy was never finished); run `kb export` again.")
    if "embedding_dimension" not in meta and "embedding_model" not in meta:
        return meta  # nothing ingested yet
    raw = meta.get("embedding_dimension", "")
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_DIMENSION:
        raise damaged(path, f"its metadata records an impossible vector dimension ({raw!r})")
    if not meta.get("embedding_model"):
        raise damaged(path, "its metadata records vectors but no embedding model")
    backend = meta.get("vector_backend", "")
    if backend not in BACKEND_TABLES:
        raise damaged(path, f"its metadata records an unknown vector index ({backend!r}; kb knows vec and vss)")
    tables = {
        name: sql
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE name IN ('chunks_vec', 'chunks_vss')")
    }
    other = BACKEND_TABLES["vss" if backend == "vec" else "vec"]
    if other in tables and BACKEND_TABLES[backend] not in tables:
        raise damaged(path, f"its metadata records a {backend} vector index, but the file holds the {other} table")
    declared = _declared_dimension(tables.get(BACKEND_TABLES[backend]))
    if declared is not None and declared != int(raw):
        raise damaged(
            path,
            f"its metadata records {raw}-dimensional vectors, but its vector index holds {declared}-dimensional ones",
        )
    return meta


def _declared_dimension(sql: str | None) -> int | None:
    import re

    found = re.search(r"float\[(\d+)\]|embedding\((\d+)\)", sql or "")
    return int(found.group(1) or found.group(2)) if found else None


def check_vectors(conn: Any, path: Path, dimension: int, *, thorough: bool = False) -> None:
    """Every stored vector has the recorded dimension (one length() query, reading no vector);
    `thorough` also reads every vector for NaN or infinity."""
    wrong = conn.execute(
        "SELECT chunk_id, length(vector) FROM embeddings WHERE length(vector) != ? OR typeof(vector) != 'blob' LIMIT 1",
        (4 * dimension,),
    ).fetchone()
    if wrong is not None:
        raise damaged(
            path,
            f"the vector of chunk {wrong[0]} holds {wrong[1]} bytes, not the {4 * dimension} of a "
            f"{dimension}-dimensional vector",
        )
    if thorough:
        last = 0
        while True:
            rows = conn.execute(
                "SELECT chunk_id, vector FROM embeddings WHERE chunk_id > ? ORDER BY chunk_id LIMIT ?",
                (last, SCAN_BATCH),
            ).fetchall()
            if not rows:
                break
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dimension)
            finite = np.isfinite(matrix).all(axis=1)
            if not finite.all():
                raise damaged(path, f"the vector of chunk {rows[int(np.argmin(finite))][0]} holds NaN or infinity")
            last = rows[-1][0]


def check_keyword_index(conn: Any, path: Path) -> None:
    """The FTS5 index has a row for every chunk (two counts over small b-trees)."""
    chunks, indexed = conn.execute(
        "SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM chunks_fts_docsize)"
    ).fetchone()
    if indexed != chunks:
        raise NotAKBFile(
            f"{path} is damaged: its keyword index covers {indexed:,} of its {chunks:,} chunks; "
            f"`kb reindex {path}` rebuilds it (or ask for a new copy)."
        )
