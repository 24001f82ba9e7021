"""kb's Datasette plugin through Datasette's own test client: pages, links, stored searches, the ask page's JSON.

The embedder is the deterministic test stand-in; the real models' path through these pages is in
test_browser.py.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3 as stdlib_sqlite3
from urllib.parse import urlencode

import pytest

from kb import KB, Searcher
from kb.fusion import DEFAULT, LEGACY, Fusion
from kb.serve import build
from tests.helpers import TEST_PLUGINS, fetch, run_kb

EVIL_MD = (
    "# Rain <script>alert(1)</script> gauges\n\n"
    "A rain gauge <script>steal()</script> measures rainfall with a funnel and a bottle. The funnel is wide.\n\n"
    "## Tipping <b onmouseover=alert(2)>bucket</b>\n\nA tipping bucket gauge records the timing of rain.\n"
)
PAYLOADS = ("<script>alert(1)", "<script>steal()", "<b onmouseover", 'href="javascript:', "<img src=x")


def query(**params) -> str:
    return urlencode(params)


@pytest.fixture
def learner_db(course_db, tmp_path):
    out = tmp_path / "learner.db"
    assert run_kb("export", str(course_db), str(out), env_extra=TEST_PLUGINS).returncode == 0
    return out


def test_every_kb_page_is_served_with_descriptions_and_links(course_db):
    with KB.open(course_db) as kb:
        pdf_chunk = kb.conn.execute(
            "SELECT id, page, link, source_id FROM chunks WHERE page IS NOT NULL LIMIT 1"
        ).fetchone()
        uri = kb.conn.execute("SELECT uri FROM sources WHERE id = 1").fetchone()[0]
    pages = [
        "/",
        "/kb",
        "/kb/sources",
        "/kb/chunks",
        "/kb/chunk_sources",
        "/kb/embeddings",
        "/kb/answers",
        "/kb/kb_meta",
        "/kb/chunks_vec",
        f"/kb/chunks/{pdf_chunk[0]}",
        "/-/kb",
        "/-/kb/kb",
        "/-/plugins.json",
    ]
    got = fetch([course_db], *pages)
    for path in pages:
        assert got[path].status_code == 200, (path, got[path].text[:500])
    # Datasette names a plugin by its distribution (coursekb, issue 11), or by the name kb registers
    # it under when run from a checkout without the entry point.
    assert any(p["name"] in ("coursekb", "kb") for p in got["/-/plugins.json"].json())
    database = got["/kb"].text
    assert 'href="/-/kb/kb"' in database and "Ask this course a question" in database
    for name in ("keyword_search", "semantic_search", "hybrid_search"):
        assert f'href="/kb/{name}"' in database
    chunks = got["/kb/chunks"].text
    assert "The passages kb searches and cites" in chunks and "PDF page (1-based)." in chunks
    # The teacher's KB holds no originals and browsers do not follow file:// from an http page:
    # the page cell and the link column open the passage in its source view instead.
    view = f"/-/kb/kb/source/{pdf_chunk[3]}?chunk={pdf_chunk[0]}#chunk-{pdf_chunk[0]}"
    assert f'<a href="{view}">p. {pdf_chunk[1]}</a>' in chunks
    assert f'<a href="{view}">{pdf_chunk[2]}</a>' in chunks
    assert 'href="file:' not in chunks
    assert re.search(r'<a href="/kb/chunks/\d+">\d+</a>', got["/kb/chunk_sources"].text)
    assert f'<a href="/-/kb/kb/source/1">{uri}</a>' in got["/kb/sources"].text
    assert f'<a href="{view}">p. {pdf_chunk[1]}</a>' in got[f"/kb/chunks/{pdf_chunk[0]}"].text
    assert 'href="/kb/sources"' in got["/-/kb/kb"].text


def test_stored_searches_rank_as_kb_search_does(course_db, learner_db, hash_embedder):
    question = "how does a tipping bucket rain gauge record rainfall"
    with KB.open(course_db) as kb:
        expected = [h.chunk_id for h in Searcher(kb).search(question, 20)]
    q = query(query=question, _shape="array")
    # Through the vec0 index (the original) and by scanning the stored vectors (the learner copy).
    original = fetch([course_db], f"/kb/hybrid_search.json?{q}", f"/kb/semantic_search.json?{q}")
    copy = fetch([learner_db], f"/learner/hybrid_search.json?{q}", f"/learner/semantic_search.json?{q}")
    # Equal BM25 scores and equal distances (the test embedder makes many) may be ranked either way:
    # the best hits must agree, and nearly all of the rest.
    for rows in (original[f"/kb/hybrid_search.json?{q}"].json(), copy[f"/learner/hybrid_search.json?{q}"].json()):
        hybrid = [row["chunk_id"] for row in rows]
        assert hybrid[:5] == expected[:5]
        assert len(set(hybrid) & set(expected)) >= 16, (hybrid, expected)
    by_index = original[f"/kb/semantic_search.json?{q}"].json()
    by_scan = copy[f"/learner/semantic_search.json?{q}"].json()
    assert len(by_index) == len(by_scan) == 20
    assert [r["distance"] for r in by_index] == pytest.approx([r["distance"] for r in by_scan], abs=1e-3)
    assert [r["chunk_id"] for r in by_index][:3] == [r["chunk_id"] for r in by_scan][:3]
    # Keyword search: FTS5 syntax in the query is plain text, never an error.
    tricky = query(query='gauge" OR text:* NEAR(', _shape="array")
    rows = fetch([course_db], f"/kb/keyword_search.json?{tricky}")[f"/kb/keyword_search.json?{tricky}"]
    assert rows.status_code == 200 and rows.json()


@pytest.mark.parametrize(
    "fusion",
    [LEGACY, Fusion("zscore", 0.4, 0.6, depth=50), Fusion("minmax", 0.7, 0.3, depth=40), DEFAULT],
    ids=["rrf", "zscore", "minmax", "adaptive"],
)
def test_the_hybrid_query_fuses_as_kb_search_for_every_method(course_db, fusion):
    with KB.open(course_db) as kb, kb.conn:
        kb.set_meta(fusion.as_meta())
    question = "what limits how much water a well can pump from an aquifer"
    with KB.open(course_db, readonly=True) as kb:
        hits = Searcher(kb).search(question, 20)
    path = f"/kb/hybrid_search.json?{query(query=question, _shape='array')}"
    rows = fetch([course_db], path)[path].json()
    assert len(rows) == len(hits) == 20
    # The same fused score for every chunk both return, and the same scores in the same order (chunks
    # with equal scores, which the test embedder makes, may be listed either way).
    sql = {row["chunk_id"]: row["score"] for row in rows}
    shared = [h for h in hits if h.chunk_id in sql]
    assert len(shared) >= 18
    for hit in shared:
        assert sql[hit.chunk_id] == pytest.approx(hit.score, abs=2e-5)
    assert [row["score"] for row in rows] == pytest.approx([h.score for h in hits], abs=2e-5)
    assert rows[0]["chunk_id"] == hits[0].chunk_id


def test_vector_extension_only_in_kb_connections_and_load_extension_never_callable(course_db, tmp_path):
    other = tmp_path / "grades.db"
    conn = stdlib_sqlite3.connect(other)
    conn.execute("CREATE TABLE grades (student TEXT, mark INTEGER)")
    conn.commit()
    conn.close()

    async def scenario():
        datasette = build([course_db, other], {})
        out = {}
        for db in ("kb", "grades"):
            for sql in ("select vec_version()", "select load_extension('x')", "select load_extension('vec0')"):
                out[db, sql] = await datasette.client.get(f"/{db}.json?" + query(sql=sql))
        out["trusted_schema"] = await datasette.databases["kb"].execute_fn(
            lambda c: c.execute("PRAGMA trusted_schema").fetchone()[0]
        )
        return out

    out = asyncio.run(scenario())
    assert out["kb", "select vec_version()"].json()["ok"]
    assert "no such function" in out["grades", "select vec_version()"].json()["error"]
    for db in ("kb", "grades"):
        for sql in ("select load_extension('x')", "select load_extension('vec0')"):
            assert out[db, sql].json()["error"] == "not authorized", (db, sql)
    assert out["trusted_schema"] == 0


def test_search_mode_lists_passages_with_working_links(course_db, hash_embedder):
    question = "tipping bucket"
    with KB.open(course_db) as kb:
        expected = [h.chunk_id for h in Searcher(kb).search(question, 3)]
    api = f"/-/kb/kb.json?{query(q=question, mode='search', k=3)}"
    page = f"/-/kb/kb?{query(q=question, mode='search', k=3)}"
    got = fetch([course_db], api, page)
    data = got[api].json()
    assert got[api].status_code == 200 and data["ok"] and data["mode"] == "search"
    assert [h["chunk_id"] for h in data["hits"]] == expected
    rows = fetch([course_db], *(h["row_url"] for h in data["hits"]))
    for hit in data["hits"]:
        assert rows[hit["row_url"]].status_code == 200
        assert hit["text"].split()[0] in rows[hit["row_url"]].text
    html = got[page].text
    for hit in data["hits"]:
        assert f'class="kb-row-link" href="/kb/chunks/{hit["chunk_id"]}"' in html
        assert hit["link"] == hit["view_url"] and hit["view_url"].startswith("/-/kb/kb/source/")
        assert f'class="kb-deep-link" href="{hit["link"]}"' in html


def test_html_in_a_question_is_escaped(course_db):
    question = '<script>alert("q")</script><img src=x onerror=alert(1)> rain gauge'
    page = f"/-/kb/kb?{query(q=question, mode='search')}"
    html = fetch([course_db], page)[page].text
    assert "<script>alert(" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;q&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html


def test_script_in_titles_headings_and_text_is_escaped_everywhere(tmp_path, hash_embedder):
    source = tmp_path / "src" / "evil<script>.md"
    source.parent.mkdir()
    source.write_text(EVIL_MD)
    db = tmp_path / "evil.db"
    proc = run_kb("ingest", str(db), str(source), "--embedder", "hash", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    # A link column someone edited to run script must never become a link.
    conn = stdlib_sqlite3.connect(db)
    conn.execute("UPDATE chunks SET link = 'javascript:alert(3)' WHERE ordinal = 1")
    conn.commit()
    conn.close()
    pages = [
        "/evil/sources",
        "/evil/chunks",
        "/evil/chunk_sources",
        "/evil/chunks/1",
        "/evil/chunks/2",
        "/evil/sources/1",
        f"/evil/hybrid_search?{query(query='rain gauge')}",
        f"/evil/keyword_search?{query(query='tipping')}",
        f"/-/kb/evil?{query(q='rain gauge funnel', mode='search')}",
        f"/-/kb/evil?{query(q='tipping bucket', mode='search')}",
        "/-/kb/evil/source/1?chunk=2",
    ]
    got = fetch([db], *pages)
    for path in pages:
        html = got[path].text
        assert got[path].status_code == 200, path
        for payload in PAYLOADS:
            assert payload not in html, (path, payload)
    assert "Rain &lt;script&gt;alert(1)&lt;/script&gt; gauges" in got[pages[-3]].text
    assert "&lt;script&gt;steal()&lt;/script&gt;" in got["/-/kb/evil/source/1?chunk=2"].text
    assert "&lt;script&gt;steal()&lt;/script&gt;" in got["/evil/chunks/1"].text
    assert "javascript:alert(3)" in got["/evil/chunks/2"].text  # shown as text, not as a link


@pytest.mark.parametrize(
    "params, status, message",
    [
        ({"q": "why " * 5_000}, 413, "The question is too long (20,000 characters; the limit is 2,000)."),
        ({"q": "rain", "mode": "search", "k": "0"}, 400, "k must be a whole number from 1 to 50."),
        ({"q": "rain", "mode": "search", "k": "1000"}, 400, "k must be a whole number from 1 to 50."),
        ({"q": "rain", "mode": "search", "k": "ten"}, 400, "k must be a whole number from 1 to 50."),
        ({"q": "rain", "mode": "drop table"}, 400, "mode must be ask or search."),
        ({"q": "   "}, 400, "The question is empty."),
    ],
)
def test_bad_requests_get_one_sentence(course_db, params, status, message):
    api = f"/-/kb/kb.json?{query(**params)}"
    page = f"/-/kb/kb?{query(**params)}"
    got = fetch([course_db], api, page)
    assert got[api].status_code == status
    mode = params.get("mode", "ask") if params.get("mode", "ask") in ("ask", "search") else None
    assert got[api].json() == {"ok": False, "database": "kb", "mode": mode, "error": message}
    if params["q"].strip():
        assert got[page].status_code == status and message in got[page].text
    assert len(got[page].text) < 20_000  # a huge question is not echoed back


def test_unknown_and_non_kb_databases(course_db, tmp_path):
    other = tmp_path / "grades.db"
    stdlib_sqlite3.connect(other).execute("CREATE TABLE grades (mark INTEGER)").connection.commit()
    got = fetch([course_db, other], "/-/kb/nope.json?q=rain", "/-/kb/grades.json?q=rain", "/grades/grades")
    assert got["/-/kb/nope.json?q=rain"].status_code == 404
    assert got["/-/kb/grades.json?q=rain"].json()["error"] == "grades is not a kb file."
    assert got["/grades/grades"].status_code == 200  # other files are left to Datasette


def test_only_one_answer_at_a_time_and_a_bounded_queue(course_db, monkeypatch):
    from datasette_plugins.kb_plugin.engine import MAX_WAITING, workers

    assert workers.ask_pool._max_workers == 1
    monkeypatch.setattr(workers, "waiting", MAX_WAITING)
    api = f"/-/kb/kb.json?{query(q='How is rain measured?')}"
    response = fetch([course_db], api)[api]
    assert response.status_code == 503
    assert response.json()["error"] == "Too many questions are waiting for an answer; try again in a minute."
