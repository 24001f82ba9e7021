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
        CREATE VIEW chunk_sources AS
            SELECT chunks.id AS chunk_id, sources.title AS source_title, sources.kind AS kind,
                   sources.uri AS uri, chunks.page, chunks.slide, chunks.start_s, chunks.end_s,
                   chunks.heading, chunks.link, chunks.text
            FROM chunks JOIN sources ON sources.id = chunks.source_id;
        """,
    )


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


MIGRATIONS: list[Migration] = [m001_create_tables, m002_source_files]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Any, current: int) -> int:
    """Run the migrations after `current`, each in its own transaction; return the new version."""
    for number, migration in enumerate(MIGRATIONS[current:], start=current + 1):
        with transaction(conn):
            migration(conn)
            conn.execute(
                "INSERT INTO kb_meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(number),),
            )
    return SCHEMA_VERSION
