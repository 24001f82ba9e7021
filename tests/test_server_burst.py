"""Finding 7 of issue 17: the server holds a burst, refuses what it cannot serve, and bounds typed SQL.

Through Datasette's own client (in process) for the pages, and a real `kb serve` process where
what is measured is the server's own memory. `benchmarks/bench_serve.py` is the load test.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest
from test_signals import free_port, start_serve

from kb.serve import build
from tests.helpers import fetch


@pytest.mark.kb_tree
@pytest.mark.parametrize("k", ["²", "٣", "３", "1e1", "+3", " 3", "0x3", "9" * 40, "-1"])
def test_k_must_be_ascii_digits_within_bounds(course_db, k):
    api = f"/-/kb/kb.json?{urlencode({'q': 'rain', 'mode': 'search', 'k': k})}"
    response = fetch([course_db], api)[api]
    assert response.status_code == 400, (k, response.text)
    assert response.json()["error"] == "k must be a whole number from 1 to 50."


@pytest.mark.kb_tree
def test_other_numbers_in_urls_are_ascii_too(course_db):
    paths = [
        "/-/kb/kb/source/1?chunk=²",
        "/-/kb/kb/source/1?chunk=٣",
        "/-/kb/kb/source/1?from=²",
        # Datasette redirects a percent-encoded row id to its tilde encoding; this is where it lands.
        "/kb/chunks/~C2~B2",
        "/kb/chunks/~D9~A3",
    ]
    got = fetch([course_db], *paths)
    assert got[paths[0]].status_code == 400 and got[paths[1]].status_code == 400
    assert got[paths[2]].status_code == 200  # "from" is only where to start showing: ignored
    for path in paths[3:]:
        assert got[path].status_code == 404, (path, got[path].status_code)


@pytest.mark.parametrize(
    "path",
    ["/-/kb/a/b", "/-/kb/kb/nope", "/-/kb/kb/source/999999", "/-/kb/kb/files/1/x.pdf", "/nope", "/kb/nope",
     "/kb/chunks/999999", "/-/nope", "/-/kb/kb/source/1/x"],
)  # fmt: skip
@pytest.mark.kb_tree
def test_unknown_paths_are_404(course_db, path, capfd):
    capfd.readouterr()
    response = fetch([course_db], path)[path]
    assert response.status_code == 404, (path, response.status_code, response.text[:300])
    assert "Traceback" not in capfd.readouterr().err


def test_overload_is_503_with_retry_after(course_db, monkeypatch):
    from datasette_plugins.kb_plugin.engine import MAX_SEARCHES_WAITING, MAX_WAITING, workers

    assert workers.search_pool._max_workers >= 2  # a pool, not one thread
    monkeypatch.setattr(workers, "searching", MAX_SEARCHES_WAITING)
    monkeypatch.setattr(workers, "waiting", MAX_WAITING)
    search = f"/-/kb/kb.json?{urlencode({'q': 'rain', 'mode': 'search'})}"
    ask = f"/-/kb/kb.json?{urlencode({'q': 'How is rain measured?'})}"
    got = fetch([course_db], search, ask)
    for path in (search, ask):
        assert got[path].status_code == 503, got[path].text
        assert int(got[path].headers["retry-after"]) >= 1


def test_a_full_ask_queue_is_503_with_retry_after_while_searches_answer(course_db, hash_embedder):
    """Asks wait behind a bounded queue; searches do not wait behind it. The stand-in model takes
    each question and says nothing until released, so the queue fills and stays full."""
    from hostile_llm import StallingLLM

    from datasette_plugins.kb_plugin.engine import MAX_WAITING, workers

    def ask(i: int) -> str:
        return f"/-/kb/kb.json?{urlencode({'q': f'How is rain measured in a gauge? ({i})'})}"

    def search(i: int) -> str:
        return f"/-/kb/kb.json?{urlencode({'q': f'rain gauge funnel {i}', 'mode': 'search'})}"

    with StallingLLM() as llm:

        async def scenario():
            datasette = build([course_db], {"llm_url": llm.url, "llm_timeout": 120})
            await datasette.invoke_startup()
            asks = [asyncio.create_task(datasette.client.get(ask(i))) for i in range(MAX_WAITING)]
            deadline = time.monotonic() + 300  # a guard against a hang, not a measurement
            while workers.waiting < MAX_WAITING or not llm.requests:  # full, and one answer under way
                assert time.monotonic() < deadline, (workers.waiting, llm.requests)
                await asyncio.sleep(0.05)
            refused = await datasette.client.get(ask(MAX_WAITING))
            searches = await asyncio.gather(*(datasette.client.get(search(i)) for i in range(6)))
            still_full = workers.waiting
            llm.server.release.set()
            answered = await asyncio.gather(*asks)
            return refused, searches, still_full, answered

        refused, searches, still_full, answered = asyncio.run(scenario())
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert "Too many questions" in refused.json()["error"]
    assert still_full == MAX_WAITING  # the searches were answered while every ask was still queued
    assert [r.status_code for r in searches] == [200] * 6, [r.text for r in searches]
    assert all(r.json()["hits"] for r in searches)
    assert all(r.status_code != 500 for r in answered), [r.text for r in answered]
    assert workers.waiting == 0


def test_a_burst_of_searches_runs_on_several_threads_and_all_succeed(course_db, hash_embedder):
    import threading

    from datasette_plugins.kb_plugin import engine

    used: set[str] = set()
    original = engine.Workers._search

    def spy(self, path, query, k):
        used.add(threading.current_thread().name)
        time.sleep(0.05)  # long enough for the others to be handed to other threads
        return original(self, path, query, k)

    async def scenario():
        datasette = build([course_db], {})
        await datasette.invoke_startup()
        paths = [f"/-/kb/kb.json?{urlencode({'q': f'rain gauge {i}', 'mode': 'search'})}" for i in range(40)]
        return await asyncio.gather(*(datasette.client.get(p) for p in paths))

    engine.Workers._search = spy
    try:
        responses = asyncio.run(scenario())
    finally:
        engine.Workers._search = original
    assert [r.status_code for r in responses] == [200] * 40
    assert len(used) >= 2, used


def _sql(base: str, sql: str, timeout: float = 60) -> tuple[int, dict, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(
            f"{base}/kb.json?{urlencode({'sql': sql, '_shape': 'array'})}", timeout=timeout
        ) as r:
            return r.status, {"rows": json.loads(r.read())}, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), time.monotonic() - started


def _peak_rss_mb(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()
    return int(status.split("VmHWM:", 1)[1].split()[0]) / 1024


@pytest.mark.kb_tree
def test_typed_sql_is_bounded_in_memory_and_time(tmp_path):
    from tests.helpers import COURSE, TEST_PLUGINS, run_kb

    # Each kb_embed() call takes 0.1 s, as the real model's did under load: Datasette's own time
    # limit, checked every 1,000 SQLite instructions (about 50 rows of this CTE), let it run on.
    db = tmp_path / "kb.db"
    notes = str(COURSE / "field-guide-measuring-rainfall.md")
    assert run_kb("ingest", str(db), notes, "--embedder", "slow-query-hash", env_extra=TEST_PLUGINS).returncode == 0
    port = free_port()
    proc = start_serve(db, port, log=tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        before = _peak_rss_mb(proc.pid)
        status, body, _ = _sql(base, "select length(randomblob(900000000)) as n")
        assert status == 400 and ("too big" in body.get("error", "") or "memory" in body.get("error", "")), body
        status, body, _ = _sql(base, "select length(zeroblob(500000000) || zeroblob(500000000)) as n")
        assert status == 400, body
        grown = _peak_rss_mb(proc.pid) - before
        assert grown < 200, f"kb serve grew by {grown:.0f} MB"  # a 900 MB blob would show here
        # A recursive CTE calling kb_embed on a new text each row: stopped at the SQL time limit (3 s).
        cte = (
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < 100000) "
            "select count(kb_embed('rain gauge ' || i)) from n"
        )
        status, body, took = _sql(base, cte)
        assert status == 400 and "took too long" in body.get("error", ""), body  # Datasette's own words
        print(f"\nthe kb_embed CTE was stopped after {took:.1f} s (limit 3 s)")
        # Generous, for a niced process on a busy machine; the finding ran 13-19 s past the limit.
        assert took < 15
        # The stored queries still work.
        status, body, _ = _sql(
            base, "select count(*) as n from (select kb_embed('rain') as v) where length(v) = 4 * 64"
        )
        assert status == 200 and body["rows"] == [{"n": 1}], body
        status, body, _ = _sql(base, f"select kb_embed('{'x' * 3000}') as v")
        # Refused (SQLite words any exception of a function so; the function's own message is lost).
        assert status == 400 and "user-defined function raised exception" in body.get("error", ""), body
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
