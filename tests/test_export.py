"""`kb export`: the learner copy opens anywhere and still answers."""

from __future__ import annotations

import json
import os
import sqlite3 as stdlib_sqlite3
import stat
import subprocess
import sys

import pytest
from conftest import COURSE, TEST_PLUGINS, run_kb

from kb import KB

PLUGINS = TEST_PLUGINS


def test_learner_copy_is_one_plain_file(course_db, tmp_path):
    out = tmp_path / "learner.db"
    proc = run_kb("export", str(course_db), str(out), env_extra=PLUGINS)
    assert proc.returncode == 0, proc.stderr
    with KB.open(course_db) as kb:
        sources = kb.conn.execute("SELECT count(*) FROM sources").fetchone()[0]
    assert f"{sources} sources" in proc.stdout
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


PLAIN_DATASETTE = r"""
import asyncio, json, sys
sys._called_from_test = True  # Datasette's own switch: no plugins from entry points, so no kb plugin
from datasette.app import Datasette
from datasette.utils import path_from_row_pks, tilde_encode

async def main(path, immutable):
    ds = Datasette([] if immutable else [path], immutables=[path] if immutable else [])
    await ds.invoke_startup()
    statuses = {}

    async def get(url):
        response = await ds.client.get(url)
        statuses[url] = response.status_code
        return response

    plugins = [p["name"] for p in (await get("/-/plugins.json")).json()]
    name = [n for n, d in ds.databases.items() if not d.is_memory][0]
    db = ds.databases[name]
    await get("/")
    await get(f"/{name}")
    await get(f"/{name}/chunks?_search=gauge")
    await get(f"/{name}/chunks?_facet=source_id&_facet=page")
    for table, kind in (await db.execute("select name, type from sqlite_master where type in ('table', 'view')")).rows:
        await get(f"/{name}/{tilde_encode(table)}")
        await get(f"/{name}/{tilde_encode(table)}.json")
        if kind == "table":
            pks = await db.primary_keys(table)
            rows = (await db.execute(f'select rowid, * from "{table}" limit 1')).rows if not pks else []
            if pks:
                rows = (await db.execute(f'select * from "{table}" limit 1')).rows
            for row in rows:
                if any(isinstance(row[pk], bytes) for pk in pks):
                    continue  # FTS5's own index rows, keyed by BLOBs: Datasette has no URL for them
                await get(f"/{name}/{tilde_encode(table)}/{path_from_row_pks(row, pks, not pks)}")
    print(json.dumps({"plugins": plugins, "statuses": statuses}))

asyncio.run(main(sys.argv[1], sys.argv[2] == "immutable"))
"""


@pytest.mark.parametrize("mode", ["mutable", "immutable"])
def test_plain_datasette_serves_every_page_of_the_copy(course_db, tmp_path, mode):
    """Datasette with no kb plugin and no vector extension: every page, table, view and row answers 200."""
    out = tmp_path / "learner.db"
    assert run_kb("export", str(course_db), str(out), env_extra=PLUGINS).returncode == 0
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_DATASETTE, str(out), mode], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "kb" not in result["plugins"] and not any("kb_plugin" in p for p in result["plugins"])
    statuses = result["statuses"]
    assert {
        "/learner/chunks/1",
        "/learner/sources/1",
        "/learner/embeddings/1",
        "/learner/kb_meta/schema_version",
    } <= set(statuses)
    assert {url: code for url, code in statuses.items() if code != 200} == {}
    for view in ("chunk_sources", "chunks", "sources", "embeddings", "answers", "kb_meta", "chunks_fts"):
        assert f"/learner/{view}" in statuses


@pytest.mark.slow
def test_kb_ask_answers_from_a_read_only_copy_with_the_real_models(tmp_path):
    """kb ask on the learner copy: no vector index, no write access, real embedder and LLM."""
    pytest.importorskip("llama_cpp")
    db = tmp_path / "course.db"
    proc = run_kb("ingest", str(db), str(COURSE / "field-guide-measuring-rainfall.md"))
    assert proc.returncode == 0, proc.stderr
    copy_dir = tmp_path / "usb"
    copy_dir.mkdir()
    out = copy_dir / "learner.db"
    assert run_kb("export", str(db), str(out)).returncode == 0
    out.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    copy_dir.chmod(0o555)
    try:
        question = "How wide is the funnel on the standard UK Met Office rain gauge?"
        proc = run_kb("ask", str(out), question, "--json", "--fast")  # one model call: the copy is under test
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)
        assert not answer["abstained"] and answer["citations"], answer
        # The passage that answers it is cited (the wording is the small model's business).
        assert any((c["heading"] or "").endswith("The standard manual gauge") for c in answer["citations"]), answer
        assert answer["warnings"] == []  # nothing tried to log into the read-only file
        assert sorted(p.name for p in copy_dir.iterdir()) == ["learner.db"]
    finally:
        copy_dir.chmod(0o755)
