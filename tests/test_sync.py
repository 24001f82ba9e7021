"""Kept in step: deleted, renamed, duplicated, restored and excluded files; --prune, kb sync, kb remove."""

from __future__ import annotations

import json
import shutil

from kb import KB, Ingester
from kb.migrations import MIGRATIONS, SCHEMA_VERSION
from tests.helpers import COURSE, TEST_PLUGINS, kb_cli


def ingest(db, *targets, prune=False, **options):
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder="test/hash-embedder", options=options).run([str(t) for t in targets], prune=prune)


def by_name(result):
    return {r.uri.rsplit("/", 1)[-1]: r for r in result.reports}


def counts(db):
    with KB.open(db) as kb:
        return {
            table: kb.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("sources", "chunks", "embeddings", "chunks_vec", "chunks_fts")
        }


def test_delete_rename_duplicate_restore_and_prune(tmp_path, course, hash_embedder):
    db = tmp_path / "kb.db"
    first = ingest(db, course)
    assert {r.status for r in first.reports} == {"ok"}
    with KB.open(db) as kb:
        page_ids = {r[0] for r in kb.conn.execute("SELECT id FROM chunks WHERE link LIKE '%course.html%'")}
    site = course / "website"
    parked = tmp_path / "floods.html"
    shutil.move(site / "floods.html", parked)  # deleted
    (site / "course.html").rename(site / "home.html")  # renamed
    shutil.copy(course / "hydrology-lecture-notes.pdf", course / "notes-copy.pdf")  # the same PDF twice
    second = by_name(ingest(db, course))
    assert second["floods.html"].status == "missing" and "no longer in" in second["floods.html"].reason
    assert second["home.html"].status == "renamed" and "course.html" in second["home.html"].reason
    assert second["notes-copy.pdf"].status == "duplicate"
    assert "hydrology-lecture-notes.pdf" in second["notes-copy.pdf"].reason
    with KB.open(db) as kb:
        info = {s["uri"].rsplit("/", 1)[-1]: s for s in kb.info()["sources"]}
        # A rename moves the rows: the same chunk ids (nothing embedded again), links to the new name.
        moved = kb.conn.execute("SELECT id, link FROM chunks WHERE link LIKE '%home.html%'").fetchall()
        assert {r[0] for r in moved} == page_ids and page_ids
        assert not kb.conn.execute("SELECT count(*) FROM chunks WHERE link LIKE '%/course.html%'").fetchone()[0]
        # The duplicate is stored once: no chunks of its own.
        assert info["notes-copy.pdf"]["status"] == "duplicate" and info["notes-copy.pdf"]["chunks"] == 0
        assert info["notes-copy.pdf"]["duplicate_of"].endswith("hydrology-lecture-notes.pdf")
        assert info["floods.html"]["status"] == "missing" and info["floods.html"]["chunks"] > 0
    shutil.move(parked, site / "floods.html")  # restored, unchanged
    third = by_name(ingest(db, course))
    assert third["floods.html"].status == "restored"
    assert {r.status for n, r in third.items() if n != "floods.html"} == {"unchanged"}
    (site / "floods.html").unlink()
    before = counts(db)
    pruned = by_name(ingest(db, course, prune=True))
    assert pruned["floods.html"].status == "removed"
    after = counts(db)
    assert after["sources"] == before["sources"] - 1
    gone = before["chunks"] - after["chunks"]
    assert gone > 0 and all(before[t] - after[t] == gone for t in ("embeddings", "chunks_vec", "chunks_fts"))
    # Pruning the original of a duplicate keeps its content under the duplicate's name.
    (course / "hydrology-lecture-notes.pdf").unlink()
    last = by_name(ingest(db, course, prune=True))
    assert "notes-copy.pdf" in last["hydrology-lecture-notes.pdf"].reason
    with KB.open(db) as kb:
        copy = kb.get_source((course / "notes-copy.pdf").resolve().as_uri())
        assert copy.status == "ok" and copy.chunks > 5
        assert kb.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kb.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")


def test_exclude_kbignore_and_kb_sync(tmp_path, course):
    db = tmp_path / "kb.db"
    run = kb_cli("ingest", str(db), str(course), "--embedder", "hash", "--json", env_extra=TEST_PLUGINS)
    assert run.returncode == 0, run.stderr
    (course / "website" / ".kbignore").write_text("# tutors only\nstaff-*.html\n")
    proc = kb_cli("ingest", str(db), str(course), "--exclude", "*.docx", "--json", env_extra=TEST_PLUGINS)
    report = {s["uri"].rsplit("/", 1)[-1]: s for s in json.loads(proc.stdout)["sources"]}
    assert report["staff-notes.html"]["status"] == "missing" and "staff-*.html" in report["staff-notes.html"]["reason"]
    assert report["handout-soil-moisture-and-infiltration.docx"]["status"] == "missing"
    # kb sync reads the recorded folder again with its recorded --exclude, and prunes.
    (course / "field-guide-measuring-rainfall.md").unlink()
    proc = kb_cli("sync", str(db), "--json", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    statuses = {s["uri"].rsplit("/", 1)[-1]: s["status"] for s in json.loads(proc.stdout)["sources"]}
    assert statuses["field-guide-measuring-rainfall.md"] == "removed"
    assert statuses["staff-notes.html"] == "removed"
    assert statuses["handout-soil-moisture-and-infiltration.docx"] == "removed"
    search = kb_cli("search", str(db), "marking notes tutors", "--json", env_extra=TEST_PLUGINS)
    assert "staff-notes" not in search.stdout
    info = kb_cli("info", str(db), env_extra=TEST_PLUGINS)
    assert str(course) in info.stdout and "missing" not in info.stdout


def test_kb_remove_takes_a_source_out_everywhere(tmp_path, course):
    db = tmp_path / "kb.db"
    assert (
        kb_cli("ingest", str(db), str(course / "website"), "--embedder", "hash", env_extra=TEST_PLUGINS).returncode == 0
    )
    staff = course / "website" / "staff-notes.html"
    hits = kb_cli("search", str(db), "tutors marking notes", "--json", env_extra=TEST_PLUGINS)
    assert "staff-notes.html" in hits.stdout
    typo = kb_cli("remove", str(db), str(course / "website" / "staff-note.html"), env_extra=TEST_PLUGINS)
    assert typo.returncode == 1 and "did you mean" in typo.stderr and "staff-notes.html" in typo.stderr
    before = counts(db)
    proc = kb_cli("remove", str(db), str(staff), env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    assert "Removed 1 source and 3 chunks" in proc.stdout
    after = counts(db)
    assert all(before[t] - after[t] == 3 for t in ("chunks", "embeddings", "chunks_vec", "chunks_fts"))
    hits = kb_cli("search", str(db), "tutors marking notes", "--json", env_extra=TEST_PLUGINS)
    assert "staff-notes.html" not in hits.stdout
    with KB.open(db) as kb:
        assert kb.get_source(staff.resolve().as_uri()) is None
        assert not kb.conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'suspiciously'").fetchone()[
            0
        ]
        assert kb.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kb.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")


def test_a_version_1_kb_is_upgraded_in_place(tmp_path, hash_embedder):
    """m002 rebuilds the sources table: chunks survive (no cascade), and the new statuses are accepted."""
    db = tmp_path / "old.db"
    from kb.db import connect

    conn = connect(db)
    MIGRATIONS[0](conn)
    conn.execute("INSERT INTO kb_meta VALUES ('schema_version', '1')")
    conn.execute(
        "INSERT INTO sources(uri, kind, title, ingested_at, status) "
        "VALUES ('file:///x.md', 'markdown', 'x', 'now', 'ok')"
    )
    conn.execute("INSERT INTO chunks(source_id, ordinal, text) VALUES (1, 0, 'rain falls')")
    # As kb wrote every chunk: with its keyword-index row (opening checks the index covers them all).
    conn.execute("INSERT INTO chunks_fts(rowid, text, heading) VALUES (1, 'rain falls', NULL)")
    conn.close()
    with KB.open(db) as kb:
        assert kb.meta()["schema_version"] == str(SCHEMA_VERSION)
        assert kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 1
        kb.conn.execute("UPDATE sources SET status = 'missing'")
        assert kb.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    with KB.open(db) as kb:  # the upgraded file passes kb's own schema check
        assert kb.conn.execute("SELECT status FROM sources").fetchone()[0] == "missing"
    assert COURSE.exists()
