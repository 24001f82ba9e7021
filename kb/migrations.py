"""Numbered schema migrations; a KB file records how many have run in kb_meta.schema_version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .db import sqlite3, transaction

Migration = Callable[[Any], None]


def m001_create_tables(conn: Any) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE IF NOT EXISTS kb_meta (
            key TEXT PRIMARY KEY,
            value TEXT
        );
        CREATE TABLE sources (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uri TEXT NOT NULL UNIQUE,
            kind TEXT,
            title TEXT,
            content_hash TEXT,
            size INTEGER,
            mtime REAL,
            fetched_at TEXT,
            ingested_at TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'empty', 'error')),
            error TEXT,
            metadata TEXT
        );
        -- AUTOINCREMENT: chunk ids are cited in the answers log, so an id is never reused.
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            text TEXT NOT NULL,
            page INTEGER,
            slide INTEGER,
            start_s REAL,
            end_s REAL,
            heading TEXT,
            anchor TEXT,
            link TEXT,
            UNIQUE (source_id, ordinal)
        );
        CREATE INDEX chunks_page ON chunks(source_id, page);
        CREATE TABLE embeddings (
            chunk_id INTEGER PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
            vector BLOB NOT NULL
        );
        CREATE VIRTUAL TABLE chunks_fts USING fts5(
            text, heading,
            content='chunks', content_rowid='id',
            tokenize='porter unicode61 remove_diacritics 2'
        );
        CREATE TABLE answers (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            asked_at TEXT NOT NULL,
            question TEXT NOT NULL,
            answer TEXT,
            abstained INTEGER NOT NULL DEFAULT 0,
            citations TEXT,
            model TEXT,
            settings TEXT,
            timings TEXT
        );
        """
        + CHUNK_SOURCES_VIEW,
    )


CHUNK_SOURCES_VIEW = """
        CREATE VIEW chunk_sources AS
            SELECT chunks.id AS chunk_id, sources.title AS source_title, sources.kind AS kind,
                   sources.uri AS uri, chunks.page, chunks.slide, chunks.start_s, chunks.end_s,
                   chunks.heading, chunks.link, chunks.text
            FROM chunks JOIN sources ON sources.id = chunks.source_id;
"""


def m002_source_files(conn: Any) -> None:
    # The original bytes of sources, content-addressed: a file ingested twice (or under two names)
    # is stored once, and sources find theirs through sources.content_hash (the SHA-256 of the same
    # bytes). The bytes sit in blocks, not in one BLOB: a recording can pass SQLite's 1 GB value
    # limit, and a range request (a player seeking) then reads only the blocks it needs.
    _run_script(
        conn,
        """
        CREATE TABLE source_files (
            sha256 TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            media_type TEXT NOT NULL
        );
        CREATE TABLE source_file_blocks (
            sha256 TEXT NOT NULL REFERENCES source_files(sha256) ON DELETE CASCADE,
            block INTEGER NOT NULL,
            data BLOB NOT NULL,
            PRIMARY KEY (sha256, block)
        );
        """,
    )


def m003_missing_duplicates_roots(conn: Any) -> None:
    """Sources may be `missing` (gone from their folder or site) or a `duplicate` of another (same
    content, stored once); `roots` records what was ingested, for `kb sync`.

    SQLite cannot alter a CHECK constraint: the table is rebuilt (SQLite's documented 12 steps;
    migrate() turns foreign keys off around it, so dropping the old table cascades to no chunk).
    """
    sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'sources'").fetchone()
    _run_script(
        conn,
        """
        DROP VIEW chunk_sources;
        CREATE TABLE sources_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uri TEXT NOT NULL UNIQUE,
            kind TEXT,
            title TEXT,
            content_hash TEXT,
            size INTEGER,
            mtime REAL,
            fetched_at TEXT,
            ingested_at TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('ok', 'empty', 'error', 'missing', 'duplicate')),
            error TEXT,
            metadata TEXT,
            duplicate_of INTEGER REFERENCES sources(id) ON DELETE SET NULL
        );
        INSERT INTO sources_new(id, uri, kind, title, content_hash, size, mtime, fetched_at, ingested_at,
                                status, error, metadata)
            SELECT id, uri, kind, title, content_hash, size, mtime, fetched_at, ingested_at, status, error, metadata
            FROM sources;
        DROP TABLE sources;
        ALTER TABLE sources_new RENAME TO sources;
        CREATE INDEX sources_content_hash ON sources(content_hash);
        -- What `kb ingest` was given (a folder, a file or a URL) and the options that shape what it
        -- yields; `kb sync` runs them again. Passwords are never recorded.
        CREATE TABLE roots (
            id INTEGER PRIMARY KEY,
            target TEXT NOT NULL UNIQUE,
            options TEXT,
            added_at TEXT NOT NULL,
            synced_at TEXT
        );
        """
        + CHUNK_SOURCES_VIEW,
    )
    if sequence is not None:
        # Keep AUTOINCREMENT's promise across the rebuild: an id once used is never handed out again.
        conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'sources'", (sequence[0],))


def m004_chunk_flags(conn: Any) -> None:
    """chunks.flags: what a passage holds that is not course text for a learner (kb/injection.py):
    "instructions" (sentences addressing an AI), "markup" (image/link markup), or both; NULL if neither.

    Chunks already in the file are read once now, so an upgraded KB says the same as a rebuilt one.
    """
    from .injection import flags

    conn.execute("ALTER TABLE chunks ADD COLUMN flags TEXT")
    rows = conn.execute("SELECT id, text, heading FROM chunks").fetchall()
    marked = [(found, chunk_id) for chunk_id, text, heading in rows if (found := flags(text or "", heading))]
    conn.executemany("UPDATE chunks SET flags = ? WHERE id = ?", marked)


def m005_questions(conn: Any) -> None:
    """Study questions (kb/questions/): each with its answer, the quote that backs it and its chunk,
    the teacher's decision (draft, approved, rejected) and what the checks found.

    A question outlives a re-ingest of its source (chunk_id becomes NULL; the quote and locator stay
    for the teacher to judge) and goes when its source is removed.
    """
    _run_script(
        conn,
        """
        CREATE TABLE questions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('short', 'mcq', 'truefalse', 'cloze')),
            question TEXT NOT NULL,
            answer TEXT NOT NULL,
            options TEXT,
            correct INTEGER,
            quote TEXT NOT NULL,
            chunk_id INTEGER REFERENCES chunks(id) ON DELETE SET NULL,
            source_id INTEGER REFERENCES sources(id) ON DELETE CASCADE,
            locator TEXT,
            status TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'approved', 'rejected')),
            reason TEXT,
            checks TEXT,
            model TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT
        );
        CREATE INDEX questions_status ON questions(status, kind);
        CREATE INDEX questions_chunk ON questions(chunk_id);
        """,
    )
    # Names this KB's questions outside it: Anki note GUIDs are made from it and the question's id,
    # so a second export updates the cards the first one made (copies of the file share it).
    conn.execute("INSERT OR IGNORE INTO kb_meta(key, value) VALUES ('questions_uid', lower(hex(randomblob(16))))")


def _run_script(conn: Any, script: str) -> None:
    # executescript() would COMMIT the caller's transaction first, so run statement by statement.
    statement = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        conn.execute(statement)


MIGRATIONS: list[Migration] = [
    m001_create_tables,
    m002_source_files,
    m003_missing_duplicates_roots,
    m004_chunk_flags,
    m005_questions,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Any, current: int) -> int:
    """Run the migrations after `current`, each in its own transaction; return the new version."""
    for number, migration in enumerate(MIGRATIONS[current:], start=current + 1):
        # A migration that rebuilds a table must not cascade deletes into its children: foreign keys
        # are off while it runs (they cannot be switched inside a transaction) and checked before COMMIT.
        conn.execute("PRAGMA foreign_keys = OFF")
        try:
            with transaction(conn):
                migration(conn)
                broken = conn.execute("PRAGMA foreign_key_check").fetchone()
                if broken is not None:
                    raise sqlite3.IntegrityError(f"migration {migration.__name__} broke a reference: {tuple(broken)}")
                conn.execute(
                    "INSERT INTO kb_meta(key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(number),),
                )
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
    return SCHEMA_VERSION
