"""The self-test page (/-/kb/DB/quiz) in Chromium, on a learner copy served with its course folder gone.

The copy is made by `kb export` from a KB whose teacher approved two questions and left one a
draft: the page shows the approved ones only, one at a time; the learner answers, sees the answer,
the course's words and the link to the source, which opens the passage. Nothing the learner types
leaves the page: no request carries it, and the copy's bytes do not change. Chromium reaches
nothing but the loopback server. The KB uses the deterministic test embedder: no model runs here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, free_port, get

from kb import KB
from kb.questions import BLANK, Question, store
from tests.helpers import COURSE, TEST_PLUGINS, TESTS, run_kb

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")

GAUGE = "It has a copper or plastic body and a funnel with a sharp brass rim exactly 5 inches (127 mm) in diameter."
TYPED = "my private guess zebra"


def questions(chunk_id: int, source_id: int) -> list[Question]:
    where = {"chunk_id": chunk_id, "source_id": source_id, "locator": "§ The standard manual gauge", "quote": GAUGE}
    return [
        Question(
            kind="mcq",
            question="How wide is the funnel of the Met Office standard gauge?",
            answer="5 inches",
            options=["8 inches", "5 inches", "2 metres", "1 foot"],
            correct=1,
            status="approved",
            **where,
        ),
        Question(kind="cloze", question=GAUGE.replace("brass", BLANK), answer="brass", status="approved", **where),
        Question(kind="short", question="A draft the teacher has not approved?", answer="no", status="draft", **where),
    ]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    teacher = tmp_path_factory.mktemp("teacher")
    course = teacher / "course"
    course.mkdir()
    shutil.copy(COURSE / "field-guide-measuring-rainfall.md", course)
    db = teacher / "course.db"
    proc = run_kb("ingest", str(db), str(course), "--embedder", "hash", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    with KB.open(db) as kb:
        chunk_id, source_id = next(
            (c, s)
            for c, s, t in kb.conn.execute("SELECT id, source_id, text FROM chunks")
            if GAUGE in " ".join(t.split())
        )
        for q in questions(chunk_id, source_id):
            store.save(kb, q)
    learner = tmp_path_factory.mktemp("learner") / "learner.db"
    proc = run_kb("export", str(db), str(learner), env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(teacher)
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
        yield {"base": base, "copy": learner, "chunk_id": chunk_id, "log": log}
    finally:
        server.terminate()
        server.wait(timeout=30)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_quiz_page_asks_reveals_and_links_to_the_source_storing_nothing(served, tmp_path):
    from playwright.sync_api import sync_playwright

    base, copy = served["base"], served["copy"]
    before = digest(copy)
    requests: list = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.set_default_timeout(60_000)
            page.on("request", lambda request: requests.append(request))
            page.goto(f"{base}/-/kb/learner/quiz")
            assert "Question 1 of 2." in page.inner_text(".kb-quiz")  # the draft is not in the copy
            assert "How wide is the funnel" in page.inner_text("#kb-stem")
            assert not page.locator("#kb-reveal").evaluate("e => e.open")
            page.get_by_label("A. 8 inches").check()
            page.click("#kb-check")
            assert page.locator("#kb-reveal").evaluate("e => e.open")
            assert page.inner_text("#kb-verdict").startswith("Not quite")
            assert page.inner_text("#kb-answer") == "5 inches"
            assert "brass rim exactly 5 inches" in page.inner_text("#kb-quote")
            page.get_by_label("B. 5 inches").check()
            page.click("#kb-check")
            assert page.inner_text("#kb-verdict") == "Right."
            page.screenshot(path=str(tmp_path / "quiz-mcq.png"))

            page.click("#kb-next")
            assert "Question 2 of 2." in page.inner_text(".kb-quiz")
            assert "_____" in page.inner_text("#kb-stem")
            page.fill("#kb-typed", TYPED)
            page.press("#kb-typed", "Enter")
            assert page.inner_text("#kb-verdict").startswith("Not quite")
            page.fill("#kb-typed", "Brass")
            page.click("#kb-check")
            assert page.inner_text("#kb-verdict") == "Right."
            assert page.url.endswith("/-/kb/learner/quiz?n=2")  # the form was never sent

            with page.expect_navigation():
                page.click("#kb-source-link")
            assert f"chunk={served['chunk_id']}" in page.url
            cited = page.locator(f"#chunk-{served['chunk_id']}")
            assert "kb-cited" in cited.get_attribute("class") and "brass rim" in cited.inner_text()
        finally:
            browser.close()
    assert requests and all(r.url.startswith(base) for r in requests), [r.url for r in requests]
    for request in requests:
        assert "zebra" not in request.url and "zebra" not in (request.post_data or "")
    assert "zebra" not in served["log"].read_text()
    assert digest(copy) == before  # the learner copy is unchanged: nothing was stored


def test_a_bad_question_number_is_one_sentence(served):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as caught:
        get(f"{served['base']}/-/kb/learner/quiz?n=x", timeout=30)
    assert caught.value.code == 400 and b"n must be a question number" in caught.value.read()
    status, body = get(f"{served['base']}/-/kb/learner/quiz?n=99", timeout=30)
    assert status == 200 and b"Question 2 of 2." in body  # past the end: the last question
