"""`kb export`: the learner copy opens anywhere and still answers."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3 as stdlib_sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kb import KB
from tests.helpers import COURSE, TEST_PLUGINS, kb_cli, run_kb

PLUGINS = TEST_PLUGINS


def test_learner_copy_is_one_plain_file(course_db, tmp_path):
    out = tmp_path / "learner.db"
    proc = kb_cli("export", str(course_db), str(out), env_extra=PLUGINS)
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
    assert kb_cli("export", str(course_db), str(out), env_extra=PLUGINS).returncode == 0
    out.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    tmp_path.chmod(0o555)  # not even a -journal could be created beside it
    try:
        with KB.open(out, readonly=True) as kb:
            assert type(kb.index()).__name__ == "NumpyScan"
        proc = kb_cli("search", str(out), "tipping bucket", "--json", env_extra=PLUGINS)
        assert proc.returncode == 0, proc.stderr
        original = kb_cli("search", str(course_db), "tipping bucket", "--json", env_extra=PLUGINS)
        assert [h["chunk_id"] for h in json.loads(proc.stdout)] == [h["chunk_id"] for h in json.loads(original.stdout)]
    finally:
        tmp_path.chmod(0o755)


def test_export_refuses_to_overwrite(course_db, tmp_path):
    out = tmp_path / "learner.db"
    out.write_text("precious")
    proc = kb_cli("export", str(course_db), str(out), env_extra=PLUGINS)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert out.read_text() == "precious"
    assert kb_cli("export", str(course_db), str(course_db), env_extra=PLUGINS).returncode == 1
    assert kb_cli("export", str(course_db), str(out), "--force", env_extra=PLUGINS).returncode == 0


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
    assert kb_cli("export", str(course_db), str(out), env_extra=PLUGINS).returncode == 0
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_DATASETTE, str(out), mode], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not {"kb", "coursekb"} & set(result["plugins"]) and not any("kb_plugin" in p for p in result["plugins"])
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


# -- the copy stands alone: originals, relative paths, no log, --exclude --------------------------


@pytest.fixture
def teacher_db(course, tmp_path, hash_embedder):
    """The sample course ingested from a private folder, with two answers in its log."""
    from test_answer import ScriptedLLM

    from kb import AnswerEngine, Ingester

    db = tmp_path / "teacher.db"
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=hash_embedder).run([str(course)])
        AnswerEngine(kb, lambda: ScriptedLLM("A tipping-bucket gauge tips at about 0.2 mm of rain [1].")).ask(
            "How much rain does one tip of a tipping-bucket gauge record?"
        )
        tutors = ScriptedLLM(
            "Tutors give most weight to the flood frequency analysis when marking the flood risk report [1]."
        )
        answer = AnswerEngine(kb, lambda: tutors).ask(
            "What do tutors give most weight to when marking the flood risk report?"
        )
        assert [e.hit.source.uri.rsplit("/", 1)[-1] for e in answer.cited] == ["staff-notes.html"]
    return db


def export_json(db, out, *args):
    proc = kb_cli("export", str(db), str(out), "--json", *args, env_extra=PLUGINS)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc


def stored_original(db, uri) -> bytes | None:
    conn = stdlib_sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT b.data FROM sources s JOIN source_file_blocks b ON b.sha256 = s.content_hash "
            "WHERE s.uri = ? ORDER BY b.block",
            (uri,),
        ).fetchall()
    finally:
        conn.close()
    return b"".join(r[0] for r in rows) if rows else None


def test_the_copy_stores_the_original_files_by_kind(teacher_db, course, tmp_path):
    files = {p.relative_to(course).as_posix(): p for p in course.rglob("*") if p.is_file()}
    recordings = {"gauging-a-river-lecture.ogg"}
    sizes = {}
    for choice in ("none", "documents", "all"):
        out = tmp_path / f"copy-{choice}.db"
        report, _ = export_json(teacher_db, out, "--sources", choice)
        sizes[choice] = report["size_bytes"]
        for relative, path in files.items():
            stored = stored_original(out, relative)
            if choice == "all" or (choice == "documents" and relative not in recordings):
                assert stored == path.read_bytes(), (choice, relative)
            else:
                assert stored is None, (choice, relative)
        stored_bytes = sum(t["bytes"] for t in report["stored"].values())
        expected = sum(p.stat().st_size for r, p in files.items() if choice == "all" or r not in recordings)
        assert stored_bytes == (0 if choice == "none" else expected)
        if choice == "documents":
            assert report["not_stored"] == {
                "media": {"files": 1, "bytes": files["gauging-a-river-lecture.ogg"].stat().st_size}
            }
            assert report["stored"]["html"]["files"] == 6 and report["stored"]["pdf"]["files"] == 1
        conn = stdlib_sqlite3.connect(out)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        with KB.open(out, readonly=True, integrity=True):
            pass  # kb's own schema check accepts the new tables
    # Each kind of original adds about its size to the copy (pages round it up).
    recording = files["gauging-a-river-lecture.ogg"].stat().st_size
    assert recording * 0.95 <= sizes["all"] - sizes["documents"] <= recording * 1.1
    print(f"\ncopy sizes: none {sizes['none']:,} B, documents {sizes['documents']:,} B, all {sizes['all']:,} B")


def test_a_file_ingested_twice_is_stored_once(course, tmp_path, hash_embedder):
    from kb import Ingester

    (course / "copy-of-the-notes.pdf").write_bytes((course / "hydrology-lecture-notes.pdf").read_bytes())
    db = tmp_path / "kb.db"
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=hash_embedder).run([str(course)])
    out = tmp_path / "copy.db"
    report, _ = export_json(db, out)
    assert report["stored"]["pdf"]["files"] == 1
    conn = stdlib_sqlite3.connect(out)
    hashes = conn.execute("SELECT content_hash FROM sources WHERE kind = 'pdf'").fetchall()
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert conn.execute("SELECT count(*) FROM source_files WHERE media_type = 'application/pdf'").fetchone()[0] == 1
    conn.close()
    assert stored_original(out, "copy-of-the-notes.pdf") == stored_original(out, "hydrology-lecture-notes.pdf")


def test_the_copy_holds_no_path_of_this_machine_and_no_log(teacher_db, course, tmp_path):
    private = [str(course).encode(), str(tmp_path).encode(), b"file://", os.path.expanduser("~").encode() + b"/"]
    with KB.open(teacher_db) as kb:
        assert kb.conn.execute("SELECT count(*) FROM answers").fetchone()[0] == 2
    assert str(course).encode() in teacher_db.read_bytes()  # what the export must not carry
    out = tmp_path / "learner.db"
    report, proc = export_json(teacher_db, out, "--sources", "all")
    assert report["answers"] == 0 and report["answers_left_out"] == 2 and report["private_paths"] == []
    data = out.read_bytes()
    for needle in private:
        assert needle not in data, needle
    conn = stdlib_sqlite3.connect(out)
    assert conn.execute("SELECT count(*) FROM answers").fetchone()[0] == 0
    uris = {r[0] for r in conn.execute("SELECT uri FROM sources")}
    assert "website/floods.html" in uris and "hydrology-lecture-notes.pdf" in uris
    assert conn.execute("SELECT link FROM chunks WHERE page = 3 LIMIT 1").fetchone()[0] == (
        "hydrology-lecture-notes.pdf#page=3"
    )
    conn.close()

    with_log = tmp_path / "with-log.db"
    report, _ = export_json(teacher_db, with_log, "--with-log", "--exclude", "website/staff-notes.html")
    # The answer that cited the tutors' notes goes with them; the other stays, with relative links.
    assert report["answers"] == 1 and report["answers_left_out"] == 1
    for needle in private:
        assert needle not in with_log.read_bytes(), needle
    conn = stdlib_sqlite3.connect(with_log)
    citations = json.loads(conn.execute("SELECT citations FROM answers").fetchone()[0])
    conn.close()
    assert citations and all(not c["source"]["uri"].startswith(("/", "file:")) for c in citations)
    assert all(c["link"] and not c["link"].startswith(("/", "file:")) for c in citations)


def test_exclude_leaves_sources_out_of_the_copy_only(teacher_db, tmp_path):
    out = tmp_path / "learner.db"
    report, _ = export_json(teacher_db, out, "--exclude", "website/staff-notes.html")
    assert report["left_out"] == [{"uri": "website/staff-notes.html", "reason": "--exclude website/staff-notes.html"}]
    conn = stdlib_sqlite3.connect(out)
    assert conn.execute("SELECT count(*) FROM sources WHERE uri LIKE '%staff-notes%'").fetchone()[0] == 0
    # Its words are gone from the keyword index (rebuilt, not just marked deleted), its vectors with its chunks.
    assert conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'suspiciously'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'gauge'").fetchone()[0] > 0
    assert conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('integrity-check', 1)") is not None
    assert (
        conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        == conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    )
    assert b"suspiciously perfect" not in out.read_bytes() and b"marking notes" not in out.read_bytes()
    conn.close()
    proc = kb_cli("search", str(out), "how are flood risk reports marked by tutors", "--json", env_extra=PLUGINS)
    assert proc.returncode == 0, proc.stderr
    assert all("staff-notes" not in hit["source"]["uri"] for hit in json.loads(proc.stdout))
    with KB.open(teacher_db) as kb:  # the KB itself keeps it
        assert kb.conn.execute("SELECT count(*) FROM sources WHERE uri LIKE '%staff-notes%'").fetchone()[0] == 1


@pytest.mark.parametrize(
    "pattern, left_out",
    [
        ("website/staff-notes.html", {"website/staff-notes.html"}),
        ("staff-*", {"website/staff-notes.html"}),
        (
            "/website/",
            {f"website/{n}.html" for n in ("course", "floods", "further-reading", "staff-notes", "water-quality")},
        ),
        ("*.ogg", {"gauging-a-river-lecture.ogg"}),
        ("glossary-web", {"glossary-web/index.html"}),
    ],
)
def test_exclude_patterns(pattern, left_out):
    from kb.export_plan import plan

    root = COURSE.resolve()
    rows = [
        (i, p.as_uri(), "x", p.name, "h", 1, "ok")
        for i, p in enumerate(sorted(root.rglob("*")), start=1)
        if p.is_file()
    ]
    result = plan(rows, (pattern,))
    assert {s.new_uri for s in result.dropped} == left_out
    assert result.roots == [root]


def test_files_from_two_folders_keep_none_of_the_layout_above_them(tmp_path):
    from kb.export_plan import plan

    rows = [
        (1, "file:///home/teacher/courses/hydro/notes.pdf", "pdf", "", "h1", 1, "ok"),
        (2, "file:///home/teacher/courses/hydro/web/a%20b.html", "html", "", "h2", 1, "ok"),
        (3, "file:///tmp/scratch/notes/extra.md", "markdown", "", "h3", 1, "ok"),
        (4, "file:///srv/notes/other.md", "markdown", "", "h4", 1, "ok"),
        (5, "https://example.org/course/page.html", "html", "", "h5", 1, "ok"),
    ]
    result = plan(rows)
    assert [str(r) for r in result.roots] == ["/home/teacher/courses/hydro", "/srv/notes", "/tmp/scratch/notes"]
    assert [s.new_uri for s in result.sources] == [
        "hydro/notes.pdf",
        "hydro/web/a%20b.html",
        "notes-2/extra.md",
        "notes-1/other.md",
        "https://example.org/course/page.html",
    ]
    one = plan(rows[:2])
    assert [s.new_uri for s in one.sources] == ["notes.pdf", "web/a%20b.html"]
    # Recorded ingest folders, when a KB has them, are the roots instead.
    recorded = plan(rows[:2], roots=[Path("/home/teacher/courses")])
    assert [s.new_uri for s in recorded.sources] == ["hydro/notes.pdf", "hydro/web/a%20b.html"]


def test_exclude_that_matches_nothing_writes_nothing(teacher_db, tmp_path):
    out = tmp_path / "learner.db"
    proc = kb_cli("export", str(teacher_db), str(out), "--exclude", "website/stafnotes.html", env_extra=PLUGINS)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "--exclude 'website/stafnotes.html' matches no source" in proc.stderr
    assert not out.exists() and not (tmp_path / "learner.db.partial").exists()


def test_a_missing_or_changed_original_is_reported_and_the_copy_written(teacher_db, course, tmp_path):
    (course / "hydrology-lecture-notes.pdf").unlink()
    with (course / "website" / "floods.html").open("a") as handle:
        handle.write("<!-- edited after ingest -->")
    out = tmp_path / "learner.db"
    proc = kb_cli("export", str(teacher_db), str(out), env_extra=PLUGINS)
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("Warning: ") for w in warnings), proc.stderr
    assert any("hydrology-lecture-notes.pdf: not stored: there is no file" in w for w in warnings)
    assert any("website/floods.html: changed since it was ingested" in w for w in warnings)
    assert stored_original(out, "hydrology-lecture-notes.pdf") is None
    assert stored_original(out, "website/floods.html") is None
    assert stored_original(out, "website/course.html") == (course / "website" / "course.html").read_bytes()
    conn = stdlib_sqlite3.connect(out)
    # The text of both is still there to search and read.
    assert (
        conn.execute(
            "SELECT count(*) FROM chunks JOIN sources ON sources.id = chunks.source_id WHERE sources.uri = ?",
            ("hydrology-lecture-notes.pdf",),
        ).fetchone()[0]
        > 0
    )
    # The rolled-back blocks left no free pages behind.
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    conn.close()


def test_kb_search_on_a_copy_links_beside_it_or_relative(teacher_db, course, tmp_path):
    folder = tmp_path / "usb"
    folder.mkdir()
    out = folder / "learner.db"
    export_json(teacher_db, out)
    query = ("search", str(out), "water cycle lecture notes evaporation", "--json", "-k", "20")
    hits = json.loads(kb_cli(*query, env_extra=PLUGINS).stdout)
    pdf = [h for h in hits if h["source"]["kind"] == "pdf"]
    assert pdf and all(h["link"] == f"hydrology-lecture-notes.pdf#page={h['page']}" for h in pdf)
    # With the original beside the copy, the link opens it there (on this machine, not the teacher's).
    (folder / "hydrology-lecture-notes.pdf").write_bytes((course / "hydrology-lecture-notes.pdf").read_bytes())
    hits = json.loads(kb_cli(*query, env_extra=PLUGINS).stdout)
    pdf = [h for h in hits if h["source"]["kind"] == "pdf"]
    assert all(h["link"] == f"{(folder / 'hydrology-lecture-notes.pdf').as_uri()}#page={h['page']}" for h in pdf)
    assert all(h["source"]["uri"] == "hydrology-lecture-notes.pdf" for h in pdf)


@pytest.mark.skipif(not shutil.which("sqlite3"), reason="the sqlite3 command-line shell is not installed")
def test_the_sqlite3_shell_reads_every_table_and_view_of_the_copy(teacher_db, tmp_path):
    out = tmp_path / "learner.db"
    export_json(teacher_db, out, "--sources", "all")
    conn = stdlib_sqlite3.connect(out)
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")]
    conn.close()
    assert {"source_files", "source_file_blocks", "chunk_sources"} <= set(names)
    script = "PRAGMA integrity_check;\n" + "".join(f'SELECT count(*) FROM "{name}";\n' for name in names)
    proc = subprocess.run(["sqlite3", "-bail", str(out)], input=script, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines()[0] == "ok" and len(proc.stdout.splitlines()) == len(names) + 1


def test_a_copy_of_a_copy_keeps_the_originals_it_holds(teacher_db, tmp_path):
    first = tmp_path / "first.db"
    report, _ = export_json(teacher_db, first)  # documents, not the recording
    again, _ = export_json(first, tmp_path / "again.db")
    # Carried over from the copy itself: nothing is read from disk, nothing is missing.
    assert again["problems"] == [] and again["stored"] == report["stored"]
    assert stored_original(tmp_path / "again.db", "website/course.html") == stored_original(
        first, "website/course.html"
    )
    all_of_it, _ = export_json(first, tmp_path / "all.db", "--sources", "all")
    assert all_of_it["problems"] == [
        {"uri": "gauging-a-river-lecture.ogg", "reason": "not stored: its original is not on this machine"}
    ]
    none, _ = export_json(first, tmp_path / "none.db", "--sources", "none")
    conn = stdlib_sqlite3.connect(tmp_path / "none.db")
    assert conn.execute("SELECT count(*) FROM source_files").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM source_file_blocks").fetchone()[0] == 0
    conn.close()
