"""`kb export`: the learner copy opens anywhere and still answers."""

from __future__ import annotations

import json
import os
import sqlite3 as stdlib_sqlite3
import stat

from conftest import TEST_PLUGINS, run_kb

from kb import KB

PLUGINS = TEST_PLUGINS


def test_learner_copy_is_one_plain_file(course_db, tmp_path):
    out = tmp_path / "learner.db"
    proc = run_kb("export", str(course_db), str(out), env_extra=PLUGINS)
    assert proc.returncode == 0, proc.stderr
    assert "3 sources" in proc.stdout
    assert not os.path.exists(f"{out}-wal") and not os.path.exists(f"{out}-shm")
    # Python's own sqlite3 has no vector extension: every table must still read.
    conn = stdlib_sqlite3.connect(out)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
    assert "chunks_vec" not in tables
    for table in tables:
        conn.execute(f'SELECT * FROM "{table}" LIMIT 5').fetchall()
    assert conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'gauge'").fetchone()[0] > 0
    conn.close()
    with KB.open(course_db) as kb:
        assert kb.conn.execute("SELECT count(*) FROM chunks_vec").fetchone()[0] > 0  # the original keeps it


def test_search_works_on_a_read_only_copy(course_db, tmp_path):
    out = tmp_path / "learner.db"
    assert run_kb("export", str(course_db), str(out), env_extra=PLUGINS).returncode == 0
    out.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    tmp_path.chmod(0o555)  # not even a -journal could be created beside it
    try:
        with KB.open(out, readonly=True) as kb:
            assert type(kb.index()).__name__ == "NumpyScan"
        proc = run_kb("search", str(out), "tipping bucket", "--json", env_extra=PLUGINS)
        assert proc.returncode == 0, proc.stderr
        original = run_kb("search", str(course_db), "tipping bucket", "--json", env_extra=PLUGINS)
        assert [h["chunk_id"] for h in json.loads(proc.stdout)] == [h["chunk_id"] for h in json.loads(original.stdout)]
    finally:
        tmp_path.chmod(0o755)


def test_export_refuses_to_overwrite(course_db, tmp_path):
    out = tmp_path / "learner.db"
    out.write_text("precious")
    proc = run_kb("export", str(course_db), str(out), env_extra=PLUGINS)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert out.read_text() == "precious"
    assert run_kb("export", str(course_db), str(course_db), env_extra=PLUGINS).returncode == 1
    assert run_kb("export", str(course_db), str(out), "--force", env_extra=PLUGINS).returncode == 0
