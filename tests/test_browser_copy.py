"""The learner copy stands alone, in a real browser: the course folder is deleted, then `kb serve`
serves the copy and headless Chromium follows its citations.

Debian's /usr/bin/chromium through Playwright (as test_browser.py); the KB is built with the
deterministic test embedder, since retrieval is not under test here: what a citation opens is.
Screenshots go to the test's temporary folder (printed with -s).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3 as stdlib_sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, free_port, get

from tests.helpers import COURSE, TEST_PLUGINS, TESTS, run_kb

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1100, "height": 900}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A learner copy with every original, its course folder deleted, served by `kb serve`."""
    teacher = tmp_path_factory.mktemp("teacher")
    course = teacher / "hydrology"
    shutil.copytree(COURSE, course)
    db = teacher / "course.db"
    proc = run_kb("ingest", str(db), str(course), "--embedder", "hash", env_extra=TEST_PLUGINS, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    learner = tmp_path_factory.mktemp("learner") / "course-learner.db"
    proc = run_kb("export", str(db), str(learner), "--sources", "all", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(teacher)  # nothing of the teacher's machine is left to open
    port = free_port()
    log = learner.with_name("serve.log")
    env = {**os.environ, **TEST_PLUGINS, "PYTHONPATH": str(TESTS)}
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "kb", "serve", str(learner), "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if get(f"{base}/-/kb.json", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        yield {"base": base, "copy": learner}
    finally:
        server.terminate()
        server.wait(timeout=30)


def chunk_row(copy: Path, chunk_id: int) -> dict:
    conn = stdlib_sqlite3.connect(copy)
    conn.row_factory = stdlib_sqlite3.Row
    row = dict(conn.execute("SELECT * FROM chunks WHERE id = ?", (chunk_id,)).fetchone())
    conn.close()
    return row


def cited_hit(page, base: str, query: str, title: str):
    """Search the ask page and return the first listed passage of the source titled `title`."""
    page.goto(f"{base}/-/kb/course-learner?" + urlencode({"q": query, "mode": "search", "k": 10}))
    hit = page.locator("#kb-hits li").filter(has_text=title).first
    assert hit.count() == 1, page.inner_text("#kb-hits")
    chunk_id = int(re.search(r"/chunks/(\d+)$", hit.locator("a.kb-row-link").get_attribute("href")).group(1))
    return hit, chunk_id


def assert_highlighted_in_view(page, chunk_id: int) -> None:
    passage = page.locator(f"#chunk-{chunk_id}")
    assert "kb-cited" in passage.get_attribute("class")
    box = passage.evaluate(
        "e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom, window.innerHeight,"
        " getComputedStyle(e).backgroundColor]; }"
    )
    top, bottom, height, colour = box
    assert bottom > 0 and top < height, box  # scrolled into view
    assert colour == "rgb(255, 241, 168)", colour


def no_sideways_scroll(page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], (page.url, width)


def test_citations_open_the_stored_sources_with_the_course_folder_gone(served, tmp_path):
    from playwright.sync_api import sync_playwright

    base, copy = served["base"], served["copy"]
    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=DESKTOP)
            page.set_default_timeout(60_000)

            # A PDF citation opens the stored PDF in Chromium's own viewer, at the cited page.
            hit, chunk_id = cited_hit(page, base, "Darcy's law groundwater flow 1856", "Lecture notes")
            cited_page = chunk_row(copy, chunk_id)["page"]
            link = hit.locator("a.kb-deep-link")
            assert link.get_attribute("href").endswith(f"/hydrology-lecture-notes.pdf#page={cited_page}")
            responses = []
            page.on("response", lambda r: responses.append(r) if "/files/" in r.url else None)
            with page.expect_navigation():
                link.click()
            assert page.url.endswith(f"hydrology-lecture-notes.pdf#page={cited_page}")
            assert responses and all(r.status in (200, 206) for r in responses)
            assert all(r.headers["content-type"] == "application/pdf" for r in responses)
            stored = page.request.get(page.url.split("#")[0])
            assert stored.body() == (COURSE / "hydrology-lecture-notes.pdf").read_bytes()
            page.wait_for_timeout(1500)  # let the viewer draw before the screenshot
            shots.append(tmp_path / "pdf-at-page.png")
            page.screenshot(path=str(shots[-1]))

            # A lecture citation plays the recording from the cited second.
            hit, chunk_id = cited_hit(page, base, "conductivity probe salt dilution gauging", "Gauging a river")
            start_s = chunk_row(copy, chunk_id)["start_s"]
            assert start_s > 10
            with page.expect_navigation():
                hit.locator("a.kb-deep-link").click()
            player = page.locator("#kb-player")
            page.wait_for_function("document.getElementById('kb-player').readyState >= 1")
            assert abs(player.evaluate("p => p.currentTime") - start_s) <= 1.0
            assert_highlighted_in_view(page, chunk_id)
            player.evaluate("p => { p.muted = true; return p.play(); }")
            page.wait_for_function(f"document.getElementById('kb-player').currentTime > {start_s + 0.3}")
            assert player.evaluate("p => p.currentTime") > start_s  # it plays on from there
            shots.append(tmp_path / "lecture-at-time.png")
            page.screenshot(path=str(shots[-1]))

            # Slide and Word citations open the source view, the cited passage highlighted and in view.
            for query, title, name in (
                ("degree-day factor snowmelt temperature", "Snow and ice", "slide"),
                ("gravimetric method oven dry soil sample tin", "Handout", "word"),
            ):
                hit, chunk_id = cited_hit(page, base, query, title)
                where = hit.locator(".kb-where").inner_text()
                with page.expect_navigation():
                    hit.locator("a.kb-deep-link").click()
                assert "/-/kb/course-learner/source/" in page.url and page.url.endswith(f"#chunk-{chunk_id}")
                assert_highlighted_in_view(page, chunk_id)
                assert page.locator("#kb-cited-box .kb-where").inner_text() == where
                original = page.locator("#kb-original").get_attribute("href")
                assert page.request.get(base + original).status == 200
                shots.append(tmp_path / f"{name}-source-view.png")
                page.screenshot(path=str(shots[-1]))

            # The same on a phone: nothing scrolls sideways, the passage is still highlighted in view.
            phone = browser.new_page(viewport=PHONE)
            phone.set_default_timeout(60_000)
            phone.goto(page.url)
            assert_highlighted_in_view(phone, chunk_id)
            for path in ("/", "/course-learner", "/course-learner/chunks", f"/course-learner/chunks/{chunk_id}",
                         "/course-learner/sources", "/-/kb/course-learner", page.url.replace(base, "")):  # fmt: skip
                phone.goto(base + path)
                no_sideways_scroll(phone)
                shots.append(tmp_path / f"phone-{path.split('?')[0].strip('/').replace('/', '_') or 'index'}.png")
                phone.screenshot(path=str(shots[-1]), full_page=True)
            # A passage's row names its source and leads into it.
            phone.goto(f"{base}/course-learner/chunks/{chunk_id}")
            assert phone.locator(".kb-row-source a.kb-source-link").inner_text().startswith("Handout")
            with phone.expect_navigation():
                phone.locator(".kb-row-source a.kb-source-link").click()
            assert_highlighted_in_view(phone, chunk_id)
        finally:
            browser.close()
    print("\nscreenshots:\n" + "\n".join(f"  {shot}" for shot in shots))
