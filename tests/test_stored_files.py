"""The learner copy in the browser: stored originals by range, the source view, pages that start with the course.

Real KB files exported by the real `kb export`, served by Datasette with kb's plugin as `kb serve`
builds it, and requests sent straight to its ASGI app, so that a path reaches the server exactly as
written (an HTTP client would tidy `..` away before sending it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3 as stdlib_sqlite3
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from kb.originals import BLOCK_SIZE
from kb.serve import build
from tests.helpers import COURSE, TEST_PLUGINS, run_kb


def asgi_get(files, *requests, method="GET"):
    """Send each (raw path, headers) to one Datasette app over `files`; {raw path: (status, headers, body)}."""

    async def call(app, raw, headers):
        path, _, query = raw.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "server": ("127.0.0.1", 8001),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "path": path,
            "raw_path": path.encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": [(b"host", b"127.0.0.1:8001"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        }
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body

    async def scenario():
        datasette = build([Path(f) for f in files], {})
        await datasette.invoke_startup()
        app = datasette.app()
        return {raw: await call(app, raw, headers) for raw, headers in requests}

    return asyncio.run(scenario())


def get(files, *paths, headers=None, method="GET"):
    return asgi_get(files, *((p, headers or {}) for p in paths), method=method)


def export(db: Path, out: Path, *args: str) -> Path:
    proc = run_kb("export", str(db), str(out), *args, env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    return out


def ingest(db: Path, *sources: Path) -> Path:
    proc = run_kb("ingest", str(db), *map(str, sources), "--embedder", "hash", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return db


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """Two learner copies: the course with every original (`learner`), and another KB (`other`)."""
    folder = tmp_path_factory.mktemp("copies")
    shutil.copytree(COURSE, folder / "hydrology")
    # A text file larger than one stored block, so ranges cross block boundaries.
    big = folder / "hydrology" / "notes" / "long-notes.txt"
    big.parent.mkdir()
    big.write_text("".join(f"Line {i:06d}: rain gauges, rivers and the water balance.\n" for i in range(12_000)))
    assert big.stat().st_size > 2 * BLOCK_SIZE
    course = ingest(folder / "course.db", folder / "hydrology")
    other = ingest(folder / "other.db", COURSE / "field-guide-measuring-rainfall.md")
    learner = export(course, folder / "learner.db", "--sources", "all")
    other_copy = export(other, folder / "other-copy.db")
    conn = stdlib_sqlite3.connect(learner)
    ids = dict(conn.execute("SELECT uri, id FROM sources").fetchall())
    conn.close()
    return {"learner": learner, "other": other_copy, "teacher": course, "ids": ids, "big": big}


def url(ids, uri, name=None):
    return f"/-/kb/learner/files/{ids[uri]}/{quote(name or uri.rsplit('/', 1)[-1])}"


def test_a_stored_pdf_is_served_inline_with_its_type(copies):
    ids = copies["ids"]
    pdf = url(ids, "hydrology-lecture-notes.pdf")
    page = url(ids, "website/floods.html")
    got = get([copies["learner"]], pdf, page)
    status, headers, body = got[pdf]
    assert status == 200 and body == (COURSE / "hydrology-lecture-notes.pdf").read_bytes()
    assert headers["content-type"] == "application/pdf"
    assert headers["content-disposition"] == (
        "inline; filename=\"hydrology-lecture-notes.pdf\"; filename*=UTF-8''hydrology-lecture-notes.pdf"
    )
    assert headers["accept-ranges"] == "bytes" and headers["content-length"] == str(len(body))
    assert headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in headers  # Chromium's PDF viewer refuses sandboxed PDFs
    assert headers["etag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    # A stored web page may hold script: it is served in a sandbox (no script, opaque origin).
    status, headers, body = got[page]
    assert status == 200 and body == (COURSE / "website" / "floods.html").read_bytes()
    assert headers["content-type"] == "text/html" and headers["content-security-policy"].startswith("sandbox")


def test_range_requests(copies):
    ids = copies["ids"]
    big = copies["big"].read_bytes()
    size = len(big)
    path = url(ids, "notes/long-notes.txt")
    cases = {
        "bytes=0-99": (206, big[:100], f"bytes 0-99/{size}"),
        # Across the first block boundary, and an open-ended range over the last blocks.
        f"bytes={BLOCK_SIZE - 10}-{BLOCK_SIZE + 9}": (
            206,
            big[BLOCK_SIZE - 10 : BLOCK_SIZE + 10],
            f"bytes {BLOCK_SIZE - 10}-{BLOCK_SIZE + 9}/{size}",
        ),
        f"bytes={BLOCK_SIZE + 5}-": (206, big[BLOCK_SIZE + 5 :], f"bytes {BLOCK_SIZE + 5}-{size - 1}/{size}"),
        "bytes=-500": (206, big[-500:], f"bytes {size - 500}-{size - 1}/{size}"),
        f"bytes=100-{size + 1000}": (206, big[100:], f"bytes 100-{size - 1}/{size}"),
        # Ranges kb does not serve as such are answered with the whole file, as RFC 9110 allows.
        "bytes=0-1,5-6": (200, big, None),
        "bytes=9-3": (200, big, None),
        "items=0-5": (200, big, None),
    }
    for header, (code, body, content_range) in cases.items():
        status, headers, got = get([copies["learner"]], path, headers={"Range": header})[path]
        assert (status, got) == (code, body), header
        assert headers.get("content-range") == content_range, header
        assert headers["content-length"] == str(len(body)), header
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        status, headers, body = get([copies["learner"]], path, headers={"Range": header})[path]
        assert status == 416 and headers["content-range"] == f"bytes */{size}", header
    # A client holding another version asks with If-Range: it gets the whole current file.
    status, _, body = get([copies["learner"]], path, headers={"Range": "bytes=0-9", "If-Range": '"old"'})[path]
    assert status == 200 and body == big
    etag = f'"{hashlib.sha256(big).hexdigest()}"'
    assert get([copies["learner"]], path, headers={"If-None-Match": etag})[path][0] == 304
    status, headers, body = get([copies["learner"]], path, method="HEAD")[path]
    assert status == 200 and body == b"" and headers["content-length"] == str(size)
    assert get([copies["learner"]], path, method="POST")[path][0] == 405


def test_a_recording_is_served_for_a_player_to_seek(copies):
    ids = copies["ids"]
    path = url(ids, "gauging-a-river-lecture.ogg")
    recording = (COURSE / "gauging-a-river-lecture.ogg").read_bytes()
    status, headers, body = get([copies["learner"]], path, headers={"Range": "bytes=200000-"})[path]
    assert status == 206 and body == recording[200000:] and headers["content-type"] == "audio/ogg"


def test_path_tricks_and_other_kbs_get_nothing(copies, tmp_path):
    ids = copies["ids"]
    pdf = ids["hydrology-lecture-notes.pdf"]
    other_conn = stdlib_sqlite3.connect(copies["other"])
    other_id, other_uri = other_conn.execute("SELECT id, uri FROM sources").fetchone()
    other_conn.close()
    missing_from_learner = max(ids.values()) + 1
    grades = tmp_path / "grades.db"
    stdlib_sqlite3.connect(grades).execute("CREATE TABLE grades (mark INTEGER)").connection.commit()
    files = [copies["learner"], copies["other"], copies["teacher"], grades]
    tricks = [
        f"/-/kb/learner/files/{pdf}/..",
        f"/-/kb/learner/files/{pdf}/../../learner.db",
        f"/-/kb/learner/files/{pdf}/..%2F..%2Flearner.db",
        f"/-/kb/learner/files/{pdf}/%2e%2e%2flearner.db",
        f"/-/kb/learner/files/{pdf}/hydrology-lecture-notes.pdf%2F..",
        f"/-/kb/learner/files/{pdf}/hydrology-lecture-notes.pdf%00.html",
        f"/-/kb/learner/files/{pdf}/HYDROLOGY-LECTURE-NOTES.PDF",
        f"/-/kb/learner/files/{pdf}/field-guide-measuring-rainfall.md",  # another source's name
        f"/-/kb/learner/files/{pdf}%2F..%2F1/hydrology-lecture-notes.pdf",
        f"/-/kb/..%2Flearner/files/{pdf}/hydrology-lecture-notes.pdf",
        f"/-/kb/learner~2F..~2Fother-copy/files/{pdf}/hydrology-lecture-notes.pdf",
        f"/-/kb/learner/files/{missing_from_learner}/x.pdf",
        "/-/kb/learner/files/-1/x.pdf",
        "/-/kb/learner/files/99999999999999999999999/x.pdf",
        # An id and name of the other KB, asked of this one; this one's, asked of the other.
        f"/-/kb/learner/files/{other_id}/{quote(other_uri)}"
        if other_id not in ids.values()
        else "/-/kb/learner/files/0/x",
        f"/-/kb/other-copy/files/{pdf}/hydrology-lecture-notes.pdf",
        # The teacher's KB stores no originals: nothing is read from its disk paths.
        f"/-/kb/course/files/{pdf}/hydrology-lecture-notes.pdf",
        "/-/kb/grades/files/1/grades.db",
        "/-/kb/nope/files/1/x.pdf",
    ]
    got = get(files, *tricks)
    for trick in tricks:
        status, headers, body = got[trick]
        assert status in (404, 400), (trick, status)
        assert b"%PDF" not in body and b"SQLite format" not in body, trick
    # The same KB's own file is served: the refusals above are not a broken route.
    own = f"/-/kb/other-copy/files/{other_id}/{quote(other_uri)}"
    assert get(files, own)[own][0] == 200


HOSTILE = 'notes "quoted"; x\r\nSet-Cookie: a=1 \u202eélève.md'
"""Quotes that would end the header's value, a CR LF that would start a new header, a bidi override."""


def test_a_file_stored_under_a_hostile_name_gets_a_safe_disposition(tmp_path):
    folder = tmp_path / "course"
    folder.mkdir()
    source = folder / HOSTILE
    source.write_text("# Rain\n\nA rain gauge measures rainfall with a funnel.\n")
    db = ingest(tmp_path / "kb.db", folder)
    copy = export(db, tmp_path / "learner.db")
    conn = stdlib_sqlite3.connect(copy)
    assert conn.execute("SELECT uri FROM sources").fetchone()[0] == quote(HOSTILE)
    # As a KB someone sent might name it: ../ in the name itself, with its slashes encoded.
    conn.execute("UPDATE sources SET uri = ?", ("..%2F..%2F" + quote(HOSTILE, safe=""),))
    conn.commit()
    conn.close()
    name = "notes _quoted__ xSet-Cookie_ a=1 élève.md"
    page = "/-/kb/learner/source/1"
    good = f"/-/kb/learner/files/1/{quote(name, safe='')}"
    raw = f"/-/kb/learner/files/1/{quote(HOSTILE, safe='')}"
    dotted = f"/-/kb/learner/files/1/{quote('../../' + HOSTILE, safe='')}"
    got = get([copy], page, good, raw, dotted)
    status, headers, body = got[good]
    assert status == 200 and body == source.read_bytes()
    assert headers["content-disposition"] == (
        "inline; filename=\"notes _quoted__ xSet-Cookie_ a=1 eleve.md\"; filename*=UTF-8''" + quote(name, safe="")
    )
    assert "set-cookie" not in headers and headers["content-type"] == "text/plain; charset=utf-8"
    assert got[raw][0] == got[dotted][0] == 404  # only the safe spelling is served
    # The source view links to the safe name and shows the uri as escaped text.
    html = got[page][2].decode()
    assert got[page][0] == 200 and f'href="{good}"' in html and "..%2F..%2Fnotes%20%22quoted%22" in html


def test_the_source_view_highlights_the_cited_passage(copies):
    conn = stdlib_sqlite3.connect(copies["learner"])
    rows = {
        kind: conn.execute(
            "SELECT c.id, c.source_id, c.page, c.slide, c.start_s, c.heading FROM chunks c "
            "JOIN sources s ON s.id = c.source_id WHERE s.kind = ? ORDER BY c.ordinal LIMIT 1 OFFSET 2",
            (kind,),
        ).fetchone()
        for kind in ("slides", "docx", "pdf", "media")
    }
    other_chunk = conn.execute("SELECT id FROM chunks WHERE source_id != ? LIMIT 1", (rows["docx"][1],)).fetchone()[0]
    conn.close()
    pages = {kind: f"/-/kb/learner/source/{row[1]}?chunk={row[0]}" for kind, row in rows.items()}
    extra = {
        "other": f"/-/kb/learner/source/{rows['docx'][1]}?chunk={other_chunk}",
        "bad": f"/-/kb/learner/source/{rows['docx'][1]}?chunk=abc",
        "missing": "/-/kb/learner/source/9999",
    }
    got = get([copies["learner"]], *pages.values(), *extra.values())
    for kind, path in pages.items():
        status, _, body = got[path]
        html = body.decode()
        chunk_id = rows[kind][0]
        assert status == 200, kind
        assert f'class="kb-chunk kb-cited" id="chunk-{chunk_id}"' in html, kind
        assert html.count("kb-chunk kb-cited") <= 2  # the passage (and the words it repeats from the last)
        assert 'id="kb-original"' in html and "/-/kb/learner/files/" in html
    assert '<strong class="kb-where">slide 3</strong>' in got[pages["slides"]][2].decode()
    pdf = got[pages["pdf"]][2].decode()
    assert f'<strong class="kb-where">p. {rows["pdf"][2]}</strong>' in pdf
    stored_pdf = f"/-/kb/learner/files/{rows['pdf'][1]}/hydrology-lecture-notes.pdf"
    assert f'id="kb-open-page" href="{stored_pdf}#page={rows["pdf"][2]}"' in pdf
    media = got[pages["media"]][2].decode()
    start = round(rows["media"][4], 1)
    assert f'<audio id="kb-player" controls preload="metadata" data-start="{start}"' in media
    assert f'gauging-a-river-lecture.ogg#t={start}"' in media
    other = got[extra["other"]][2].decode()
    assert got[extra["other"]][0] == 200 and 'class="kb-chunk kb-cited' not in other, other[-3000:]
    assert 'id="kb-cited-box"' not in other
    assert got[extra["bad"]][0] == 400 and "chunk must be a passage number." in got[extra["bad"]][2].decode()
    assert got[extra["missing"]][0] == 404


def test_pages_start_with_the_course(copies, tmp_path):
    grades = tmp_path / "grades.db"
    conn = stdlib_sqlite3.connect(grades)
    conn.execute("CREATE TABLE grades (student TEXT, mark INTEGER)")
    conn.commit()
    conn.close()
    chunk = 5
    paths = ["/", "/learner", "/learner/chunks", f"/learner/chunks/{chunk}", "/learner/sources", "/grades/grades"]
    got = {p: r[2].decode() for p, r in get([copies["learner"], grades], *paths).items()}
    index = got["/"]
    assert index.index('href="/-/kb/learner">Ask learner a question') < index.index('href="/learner"')
    assert index.index('href="/learner/sources"') < index.index('href="/learner/chunks"')
    database = got["/learner"]
    assert database.index("Ask this course a question") < database.index("Custom SQL query")
    assert 'href="/learner/sources">its ' in database
    assert "select * from sources</textarea>" in database
    assert database.index('href="/learner/sources"') < database.index('href="/learner/chunks"')
    for hidden in ("embeddings", "source_files", "source_file_blocks", "sqlite_sequence"):
        assert f'<a href="/learner/{hidden}">' not in database, hidden
    # The chunks table: its notes folded, no facet block, rows right after the filters.
    chunks = got["/learner/chunks"]
    assert '<details class="kb-about"><summary>About this table</summary>' in chunks
    assert 'class="column-descriptions"' not in chunks and 'class="facet-results"' not in chunks
    assert chunks.index("kb-about") < chunks.index('class="rows-and-columns"')
    # A passage's row: its source's title (a link to the source view) and where it is.
    row = got[f"/learner/chunks/{chunk}"]
    assert 'class="kb-source-link" href="/-/kb/learner/source/' in row and f'?chunk={chunk}#chunk-{chunk}"' in row
    assert 'class="kb-where"' in row
    conn = stdlib_sqlite3.connect(copies["learner"])
    title = conn.execute(
        "SELECT s.title FROM chunks c JOIN sources s ON s.id = c.source_id WHERE c.id = ?", (chunk,)
    ).fetchone()[0]
    conn.close()
    assert f">{title}</a>" in row
    # Files that are not KBs keep Datasette's own pages.
    assert "kb-about" not in got["/grades/grades"] and "Ask grades" not in index


def test_search_json_links_to_what_the_server_serves(copies, hash_embedder):
    api = "/-/kb/learner.json?" + urlencode({"q": "water cycle lecture notes evaporation", "mode": "search", "k": 20})
    data = json.loads(get([copies["learner"]], api)[api][2])
    by_kind = {}
    for hit in data["hits"]:
        by_kind.setdefault(hit["source"]["kind"], hit)
        assert hit["view_url"].startswith("/-/kb/learner/source/") and hit["row_url"].startswith("/learner/chunks/")
        assert not hit["link"].startswith("file:") and hit["source"]["uri"][:1] != "/"
    pdf = by_kind["pdf"]
    assert pdf["link"] == f"{pdf['file_url']}#page={pdf['page']}"
    assert (
        pdf["file_url"]
        == f"/-/kb/learner/files/{copies['ids']['hydrology-lecture-notes.pdf']}/hydrology-lecture-notes.pdf"
    )
    html_hit = by_kind["html"]
    assert html_hit["link"] == html_hit["view_url"]
