"""A learner in a real browser: `kb serve` on the sample course's learner copy, driven in headless Chromium.

Debian's /usr/bin/chromium through Playwright's Python API (no browser is downloaded); the real
embedder and the real default LLM, since this is the path a learner takes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.helpers import COURSE, TESTS, run_kb

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION = "How wide is the funnel on the standard UK Met Office rain gauge?"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def learner_copy(tmp_path_factory) -> Path:
    pytest.importorskip("llama_cpp")
    folder = tmp_path_factory.mktemp("browser")
    db = folder / "course.db"
    proc = run_kb("ingest", str(db), str(COURSE), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = folder / "course-learner.db"
    assert run_kb("export", str(db), str(out)).returncode == 0
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, timeout: float = 300) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


@pytest.fixture(scope="module")
def server(learner_copy, tmp_path_factory):
    """`kb serve` in its own process; yields the base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kb", "serve", str(learner_copy), "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if get(f"{base}/-/kb.json", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        assert "read-only at " + base + "/-/kb/course-learner" in log.read_text()
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_learner_asks_in_chromium_and_follows_a_citation(server, tmp_path):
    from playwright.sync_api import sync_playwright

    ask_page = f"{server}/-/kb/course-learner"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            # The form's navigation lasts as long as the answer: seconds, or minutes on a busy machine.
            page.set_default_timeout(300_000)
            started = time.monotonic()
            response = page.goto(ask_page)
            load_s = time.monotonic() - started
            assert response.status == 200 and page.title() == "Ask course-learner"

            page.fill("#kb-q", QUESTION)
            started = time.monotonic()
            page.click("#kb-submit")
            page.wait_for_selector("#kb-answer")
            answer_s = time.monotonic() - started
            answer = page.inner_text("#kb-answer .kb-text")
            assert "5 inches" in answer or "127 mm" in answer, answer
            assert page.locator("#kb-answer a.kb-cite-marker").count() >= 1
            citations = page.locator("#kb-answer .kb-cites li")
            assert citations.count() >= 1
            places = [citations.nth(i).locator(".kb-where").inner_text() for i in range(citations.count())]
            assert "The standard manual gauge" in places, places
            shot = tmp_path / "kb-ask-answer.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the answer: {shot}")
            # The citation opens the stored field guide's text at the cited passage, highlighted.
            cited = page.locator("#kb-answer .kb-cites li").filter(has_text="The standard manual gauge").first
            deep = cited.locator("a.kb-deep-link")
            href = deep.get_attribute("href")
            assert re.fullmatch(r"/-/kb/course-learner/source/\d+\?chunk=(\d+)#chunk-\1", href), href
            view = browser.new_page(viewport={"width": 1100, "height": 900})
            assert view.goto(server + href).status == 200
            assert "kb-cited" in view.locator(href[href.index("#") :]).get_attribute("class")
            assert view.locator("#kb-cited-box .kb-where").inner_text() == "The standard manual gauge"
            view.screenshot(path=str(tmp_path / "kb-source-view.png"))
            view.close()

            row_link = page.locator("#kb-answer a.kb-row-link").first
            href = row_link.get_attribute("href")
            assert re.fullmatch(r"/course-learner/chunks/\d+", href), href
            passage = page.locator("#kb-answer .kb-cites .kb-passage").first.inner_text()
            with page.expect_navigation() as navigation:
                row_link.click()
            assert navigation.value.status == 200
            assert page.url == server + href
            assert passage.split(" …")[0][:60] in " ".join(page.inner_text("body").split())
            page.screenshot(path=str(tmp_path / "kb-chunk-row.png"), full_page=True)

            # Search mode lists passages with the same two links.
            page.goto(ask_page)
            page.fill("#kb-q", "tipping bucket")
            page.check("input[name=mode][value=search]")
            page.click("#kb-submit")
            page.wait_for_selector("#kb-hits")
            assert page.locator("#kb-hits a.kb-row-link").count() == 10
        finally:
            browser.close()

    # The same answer as JSON, now that the model is loaded: what a warm answer costs through the plugin.
    started = time.monotonic()
    status, body = get(f"{ask_page}.json?{urlencode({'q': QUESTION})}")
    warm_s = time.monotonic() - started
    data = json.loads(body)
    assert status == 200 and data["ok"] and data["citations"]
    for citation in data["citations"]:
        assert get(server + citation["row_url"])[0] == 200
    # A question the course does not answer: said so, with the nearest passages (no model needed).
    off_topic = urlencode({"q": "How do I calculate the monthly repayment on a 25-year mortgage?"})
    abstained = json.loads(get(f"{ask_page}.json?{off_topic}")[1])
    assert abstained["abstained"] and abstained["citations"] == [] and abstained["nearest"]
    assert all(get(server + hit["row_url"])[0] == 200 for hit in abstained["nearest"])
    html = get(f"{ask_page}?{off_topic}")[1].decode()
    assert "No answer in this course" in html and html.count('class="kb-row-link"') == len(abstained["nearest"])
    print(
        f"ask page load {load_s:.2f} s; first answer in the browser {answer_s:.1f} s (model load included); "
        f"warm answer through the plugin {warm_s:.1f} s ({data['timings']})"
    )
