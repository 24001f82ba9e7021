"""Opening a KB file someone sent you: damaged, truncated, byte-flipped or altered files are refused.

kb (every command), `kb serve` and the Datasette plugin all refuse with one sentence; Datasette goes
on serving the other files.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3 as stdlib_sqlite3
from pathlib import Path

import pytest

from kb import KB, NotAKBFile
from kb.serve import build
from tests.helpers import TEST_PLUGINS, run_kb

PAGE = 4096


def damage(good: Path, bad: Path, how: str) -> None:
    data = bytearray(good.read_bytes())
    if how == "half":
        data = data[: len(data) // 2]
    elif how == "short":
        data = data[:-100]  # not a whole number of pages
    elif how == "flip-chunks-page":
        # The b-tree page type byte of the chunks table's root page: the schema still reads.
        conn = stdlib_sqlite3.connect(good)
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'chunks'").fetchone()[0]
        conn.close()
        data[(root - 1) * PAGE] ^= 0xFF
    elif how == "flip-schema":
        data[100 : 100 + 8] = bytes(b ^ 0x5A for b in data[100:108])  # sqlite_master's page header
    elif how == "flip-magic":
        data[0] ^= 0x01
    else:  # pragma: no cover
        raise AssertionError(how)
    bad.write_bytes(bytes(data))


def alter(path: Path, *statements: str) -> None:
    conn = stdlib_sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


ORIGINAL_VIEW = """CREATE VIEW chunk_sources AS
            SELECT chunks.id AS chunk_id, sources.title AS source_title, sources.kind AS kind,
                   sources.uri AS uri, chunks.page, chunks.slide, chunks.start_s, chunks.end_s,
                   chunks.heading, chunks.link, chunks.text
            FROM chunks JOIN sources ON sources.id = chunks.source_id"""

ALTERATIONS = {
    # The view shows a link the rows do not hold.
    "changed-view": (
        "DROP VIEW chunk_sources",
        "CREATE VIEW chunk_sources AS SELECT chunks.id AS chunk_id, sources.title AS source_title, "
        "sources.kind AS kind, sources.uri AS uri, chunks.page, chunks.slide, chunks.start_s, chunks.end_s, "
        "chunks.heading, 'https://phishing.example/' AS link, chunks.text "
        "FROM chunks JOIN sources ON sources.id = chunks.source_id",
    ),
    "extra-view": ("CREATE VIEW evil AS SELECT load_extension('/tmp/x.so') AS x",),
    "trigger": (
        "CREATE TABLE pwned (uri TEXT)",
        "CREATE TRIGGER spy AFTER INSERT ON sources BEGIN INSERT INTO pwned VALUES (new.uri); END",
    ),
    "changed-table": ("ALTER TABLE chunks ADD COLUMN note TEXT DEFAULT 'x'",),
    "extra-virtual-table": ("CREATE VIRTUAL TABLE notes USING fts5(body)",),
}


@pytest.fixture
def good_db(course_db) -> Path:
    alter(course_db, "PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA journal_mode = DELETE")
    return course_db


@pytest.mark.parametrize("how", ["half", "short", "flip-chunks-page", "flip-schema", "flip-magic"])
def test_damaged_files_are_refused_by_kb_and_kb_serve(good_db, tmp_path, how):
    bad = tmp_path / "bad.db"
    damage(good_db, bad, how)
    with pytest.raises(NotAKBFile) as excinfo:
        KB.open(bad).close()
    message = str(excinfo.value)
    assert str(bad) in message and "\n" not in message and message.endswith(".")
    assert "not a kb file" in message
    for args in (["search", str(bad), "rain"], ["info", str(bad)], ["serve", str(bad), "--port", "1"]):
        proc = run_kb(*args, env_extra=TEST_PLUGINS, timeout=60)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr and str(bad) in proc.stderr


@pytest.mark.parametrize("kind", sorted(ALTERATIONS))
def test_altered_schemas_are_refused_before_any_of_their_sql_runs(good_db, tmp_path, kind, good_md):
    bad = tmp_path / "altered.db"
    shutil.copy(good_db, bad)
    alter(bad, *ALTERATIONS[kind])
    with pytest.raises(NotAKBFile) as excinfo:
        KB.open(bad).close()
    assert "kb refuses altered files" in str(excinfo.value) or "changed" in str(excinfo.value)
    proc = run_kb("ingest", str(bad), str(good_md), "--embedder", "hash", env_extra=TEST_PLUGINS)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    if kind == "trigger":
        conn = stdlib_sqlite3.connect(bad)
        assert conn.execute("SELECT count(*) FROM pwned").fetchone()[0] == 0  # the trigger never ran
        conn.close()


def test_added_plain_tables_are_only_data(good_db):
    alter(good_db, "CREATE TABLE teacher_notes (chunk_id INTEGER, note TEXT)", "CREATE INDEX tn ON teacher_notes(note)")
    with KB.open(good_db, integrity=True) as kb:
        assert kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0] > 0


@pytest.fixture
def good_md(tmp_path) -> Path:
    path = tmp_path / "more.md"
    path.write_text("# Dew\n\nDew forms when air cools to its dew point overnight.\n")
    return path


def test_plugin_takes_refused_files_out_and_serves_the_rest(good_db, tmp_path):
    truncated = tmp_path / "truncated.db"
    damage(good_db, truncated, "half")
    flipped = tmp_path / "flipped.db"
    damage(good_db, flipped, "flip-chunks-page")
    altered = tmp_path / "altered.db"
    shutil.copy(good_db, altered)
    alter(altered, *ALTERATIONS["trigger"])

    async def scenario():
        datasette = build([good_db, truncated, flipped, altered], {})
        await datasette.invoke_startup()  # as `kb serve` and `datasette serve` do before serving
        paths = ["/", "/kb", "/kb/chunks", "/-/kb.json", "/-/kb/truncated.json?q=rain", "/-/kb/altered", "/flipped"]
        return {path: await datasette.client.get(path) for path in paths}

    got = asyncio.run(scenario())
    for path in ("/", "/kb", "/kb/chunks"):
        assert got[path].status_code == 200, path
    refused = {r["database"]: r["reason"] for r in got["/-/kb.json"].json()["refused"]}
    assert set(refused) == {"truncated", "flipped", "altered"}
    assert "truncated" in refused["truncated"] and "quick check" in refused["flipped"]
    assert "trigger kb does not create ('spy')" in refused["altered"]
    assert [k["database"] for k in got["/-/kb.json"].json()["kbs"]] == ["kb"]
    assert got["/-/kb/truncated.json?q=rain"].status_code == 400
    assert got["/-/kb/truncated.json?q=rain"].json()["error"] == refused["truncated"]
    assert got["/-/kb/altered"].status_code == 400 and "spy" in got["/-/kb/altered"].text
    assert got["/flipped"].status_code == 404


def test_views_cannot_call_kbs_sql_functions(good_db, tmp_path):
    """Even on a connection the plugin prepared, a view in the file cannot call kb_embed (trusted_schema=OFF)."""
    from datasette_plugins.kb_plugin.status import KB as KIND
    from datasette_plugins.kb_plugin.status import Status, prepare
    from kb.db import sqlite3

    alter(good_db, "CREATE VIEW costly AS SELECT kb_distance(vector, vector) AS d FROM embeddings")
    conn = sqlite3.connect(str(good_db))
    prepare(conn, Status(KIND, meta={"embedding_model": "test/hash-embedder"}))
    distance = conn.execute("SELECT kb_distance(vector, vector) FROM embeddings LIMIT 1").fetchone()[0]
    assert distance == pytest.approx(0, abs=1e-5)
    with pytest.raises(sqlite3.OperationalError, match="unsafe use of kb_distance"):
        conn.execute("SELECT * FROM costly").fetchall()
    conn.close()


def test_kb_serve_refuses_files_that_are_not_kbs(tmp_path):
    grades = tmp_path / "grades.db"
    alter(grades, "CREATE TABLE grades (mark INTEGER)")
    notes = tmp_path / "notes.db"
    notes.write_text("my notes")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for path, phrase in (
        (grades, "is an SQLite database but not a kb file (it has no kb_meta table)."),
        (notes, "is not a kb file (it is not an SQLite database)."),
        (empty, "is empty, not a kb file."),
        (tmp_path / "missing.db", "does not exist"),
    ):
        proc = run_kb("serve", str(path), "--port", "1", timeout=60)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and phrase in proc.stderr, proc.stderr
