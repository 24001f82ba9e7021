"""Ingest into real SQLite files: statuses, locators, incremental re-ingest, killed runs."""

from __future__ import annotations

import json
import signal
import sqlite3 as stdlib_sqlite3
import subprocess
import sys
import time

from kb import KB, Ingester, Limits
from tests.helpers import COURSE, TEST_PLUGINS, kb_cli


def ingest(db, *targets, embedder="test/hash-embedder", **options):
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder=embedder, **options).run([str(t) for t in targets])


def test_sample_course_locators(tmp_path, hash_embedder):
    db = tmp_path / "kb.db"
    result = ingest(db, COURSE)
    assert {r.status for r in result.reports} == {"ok"}, result.to_dict()
    with KB.open(db) as kb:
        rows = kb.conn.execute(
            "SELECT sources.kind, chunks.page, chunks.heading, chunks.anchor, chunks.link, chunks.text "
            "FROM chunks JOIN sources ON sources.id = chunks.source_id"
        ).fetchall()
    pdf = [r for r in rows if r[0] == "pdf"]
    assert sorted({r[1] for r in pdf}) == [1, 2, 3, 4, 5, 6]
    # Headings come from the PDF's bookmarks and travel with every chunk of the page.
    assert all(r[2] for r in pdf)
    assert all(r[4].endswith(f"#page={r[1]}") for r in pdf)
    page5 = " ".join(r[5] for r in pdf if r[1] == 5)
    assert "Darcy" in page5
    md = [r for r in rows if r[0] == "markdown"]
    assert any(r[2] == "Field guide: measuring rainfall > Types of rain gauge > The standard manual gauge" for r in md)
    html = [r for r in rows if r[0] == "html"]
    assert any(r[3] == "baseflow" and r[4].endswith("index.html#baseflow") for r in html)
    # Menus, scripts and footers stay out of the text.
    html_text = " ".join(r[5] for r in html)
    assert "function" not in html_text and "All rights reserved" not in html_text


def test_chunks_never_span_pages(tmp_path, hash_embedder):
    db = tmp_path / "kb.db"
    ingest(db, COURSE / "hydrology-lecture-notes.pdf")
    import pypdf

    pages = [p.extract_text() for p in pypdf.PdfReader(COURSE / "hydrology-lecture-notes.pdf").pages]
    with KB.open(db) as kb:
        for page, text in kb.conn.execute("SELECT page, text FROM chunks"):
            words = text.split()
            # Every chunk's words are on its own page in order; a chunk straddling pages would fail.
            assert " ".join(words[:8]) in " ".join(pages[page - 1].split())
            assert len(text) <= 900


def test_reingest_skips_unchanged_and_replaces_changed(tmp_path, course, hash_embedder):
    db = tmp_path / "kb.db"
    first = ingest(db, course)
    sources = len(first.reports)
    assert sources >= 3 and first.totals()["ok"] == sources, first.to_dict()
    with KB.open(db) as kb:
        ids_before = {r[0] for r in kb.conn.execute("SELECT id FROM chunks")}
    second = ingest(db, course)
    assert second.totals().get("unchanged") == sources and second.totals()["chunks"] == 0
    handout = course / "field-guide-measuring-rainfall.md"
    handout.write_text(handout.read_text() + "\n\n## Snow\n\nSnowfall is melted and measured as water equivalent.\n")
    third = ingest(db, course)
    statuses = {r.uri.rsplit("/", 1)[-1]: r.status for r in third.reports}
    assert statuses.pop("field-guide-measuring-rainfall.md") == "ok"
    assert set(statuses.values()) == {"unchanged"} and len(statuses) == sources - 1
    with KB.open(db) as kb:
        assert kb.conn.execute("SELECT count(*) FROM sources").fetchone()[0] == sources
        ids_after = {r[0] for r in kb.conn.execute("SELECT id FROM chunks")}
        # Chunk ids are never reused: the answers log may cite old ones.
        assert not (ids_after - ids_before) & ids_before
        assert (
            kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            == kb.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            == kb.conn.execute("SELECT count(*) FROM chunks_vec").fetchone()[0]
        )
        # The FTS index forgot the old version of the handout and knows the new one.
        assert kb.conn.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'snowfall'").fetchone()[0] == 1
        kb.conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")


def test_killed_ingest_resumes_without_duplicates(tmp_path, hash_embedder):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):
        (folder / f"note{i:03d}.md").write_text(f"# Note {i}\n\n" + f"Topic {i} explained in words. " * 60)
    db = tmp_path / "kb.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb", "ingest", str(db), str(folder), "--embedder", "hash"],
        env={
            **__import__("os").environ,
            "KB_PLUGINS": "kb_test_plugins",
            "PYTHONPATH": str(COURSE.parent.parent / "tests"),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            conn = stdlib_sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            committed = conn.execute("SELECT count(*) FROM sources").fetchone()[0]
            conn.close()
        except stdlib_sqlite3.Error:
            continue
        if committed >= 20:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    assert 20 <= committed < 400
    with KB.open(db) as kb:
        assert kb.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        partial = kb.conn.execute("SELECT count(*) FROM sources").fetchone()[0]
    assert partial < 400
    resumed = ingest(db, folder)
    totals = resumed.totals()
    assert totals["unchanged"] == partial and totals["ok"] == 400 - partial
    with KB.open(db) as kb:
        assert kb.conn.execute("SELECT count(*) FROM sources").fetchone()[0] == 400
        assert (
            kb.conn.execute(
                "SELECT count(*) FROM (SELECT source_id, ordinal FROM chunks GROUP BY 1, 2 HAVING count(*) > 1)"
            ).fetchone()[0]
            == 0
        )
        chunk_count = kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        assert chunk_count == kb.conn.execute("SELECT count(*) FROM chunks_vec").fetchone()[0]
        assert chunk_count == kb.conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]


def test_cli_ingest_json_report_and_exit_code(tmp_path):
    db = tmp_path / "kb.db"
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"\x89PNG not a pdf at all" * 50)
    proc = kb_cli(
        "ingest",
        str(db),
        str(COURSE / "glossary-web"),
        str(junk),
        "--json",
        "--embedder",
        "hash",
        env_extra=TEST_PLUGINS,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    by_name = {s["uri"].rsplit("/", 1)[-1]: s for s in report["sources"]}
    assert by_name["index.html"]["status"] == "ok" and by_name["index.html"]["chunks"] > 5
    assert by_name["junk.pdf"]["status"] == "error"
    assert "not a PDF" in by_name["junk.pdf"]["reason"]
    assert report["totals"]["error"] == 1
    ok = kb_cli("ingest", str(db), str(COURSE / "glossary-web"), env_extra=TEST_PLUGINS)
    assert ok.returncode == 0 and "unchanged" in ok.stdout


def test_limits_are_reported(tmp_path, hash_embedder):
    big = tmp_path / "big.md"
    big.write_text("# Big\n\n" + "word " * 5000)
    result = ingest(tmp_path / "kb.db", big, limits=Limits(max_bytes=10_000))
    assert result.reports[0].status == "error" and "too large" in result.reports[0].reason
    result = ingest(tmp_path / "kb.db", big, limits=Limits(max_chars=1000))
    assert result.reports[0].status == "error" and "too much text" in result.reports[0].reason


def test_unchanged_by_size_and_mtime_or_by_checksum(tmp_path, course, hash_embedder):
    db = tmp_path / "kb.db"
    ingest(db, course)
    handout = course / "field-guide-measuring-rainfall.md"
    original = handout.read_bytes()
    # Touched but not changed: the hash says unchanged, and the new mtime is recorded.
    handout.write_bytes(original)
    report = {r.uri.rsplit("/", 1)[-1]: r for r in ingest(db, course).reports}
    assert report["field-guide-measuring-rainfall.md"].status == "unchanged"
    with KB.open(db) as kb:
        assert kb.get_source(handout.resolve().as_uri()).mtime == handout.stat().st_mtime
    # Same size and mtime but other bytes: only --checksum notices.
    stat = handout.stat()
    changed = original.replace(b"gauge", b"GAUGE", 1)
    handout.write_bytes(changed)
    import os

    os.utime(handout, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert ingest(db, handout).reports[0].status == "unchanged"
    assert ingest(db, handout, checksum=True).reports[0].status == "ok"


def test_running_headers_and_footers_are_dropped():
    from connectors.pdf import strip_running_lines

    topics = ["Rain", "Snow", "Hail", "Fog", "Dew"]
    pages = [
        f"Course notes - page {n}\n{topic}\nWhat {topic.lower()} is.\nCourse notes - page {n}"
        for n, topic in enumerate(topics, start=1)
    ]
    cleaned = strip_running_lines(pages)
    assert all("Course notes" not in page for page in cleaned)
    assert cleaned[2] == "Hail\nWhat hail is."
    assert strip_running_lines(pages[:2]) == pages[:2]  # too few pages to tell


class SlowConnector:
    """Reads a `.slow` file by sleeping as long as the file says: work that grows with the source."""

    kind = "slow"
    suffixes = (".slow",)

    def extract(self, source):
        from kb.types import Document, Locator, Section

        time.sleep(float(source.data))
        return Document(source.uri, self.kind, "slow", [Section("Slept as asked.", Locator())])


class BudgetedSlowConnector(SlowConnector):
    granted: list[float] = []

    def time_budget(self, source):
        return float(source.data) + 2

    def extract(self, source):
        self.granted.append(source.limits.timeout_s)  # the limit the connector paces itself by
        return super().extract(source)


def test_a_connector_time_budget_extends_the_per_source_limit(tmp_path, hash_embedder):
    from kb.hookspecs import hookimpl
    from kb.plugins import pm

    class Plugin:
        def __init__(self, connector):
            self.connector = connector

        @hookimpl
        def register_connectors(self, register):
            register(self.connector)

    path = tmp_path / "lecture.slow"
    path.write_text("1.5")
    for connector, db, expected in ((SlowConnector, "a.db", "error"), (BudgetedSlowConnector, "b.db", "ok")):
        pm.register(Plugin(connector), "slow-test")
        try:
            report = ingest(tmp_path / db, path, limits=Limits(timeout_s=0.5)).reports[0]
        finally:
            pm.unregister(name="slow-test")
        assert report.status == expected, report
        if expected == "error":
            assert "time limit" in report.reason
    assert BudgetedSlowConnector.granted == [3.5]
