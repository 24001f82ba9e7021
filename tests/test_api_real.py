"""`kb serve`'s /v1 with the real default model, through the official openai client (issue 15's "Done when").

One server over the whole sample course for the module; two answers from the model (one streamed,
one a non-streamed follow-up), an abstention that needs none, and the embedding model's vectors.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from test_api import check_cited
from test_signals import free_port, start_serve

from kb import KB
from kb.answer import ABSTAIN_TEXT
from tests.helpers import COURSE, run_kb

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kb_file(tmp_path_factory):
    db = tmp_path_factory.mktemp("api-real") / "course.db"
    proc = run_kb("ingest", str(db), str(COURSE))
    assert proc.returncode == 0, proc.stderr
    return db


@pytest.fixture(scope="module")
def client(kb_file, tmp_path_factory):
    log = tmp_path_factory.mktemp("api-real-log") / "serve.log"
    port = free_port()
    proc = start_serve(kb_file, port, log=log)
    try:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=1800)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def ask(client, messages, **options):
    started = time.monotonic()
    response = client.chat.completions.create(model="kb:course", messages=messages, **options)
    print(f"\n{time.monotonic() - started:.1f} s: {messages[-1]['content']!r}")
    return response


def test_a_streamed_answer_carries_them_on_its_last_chunk(client, kb_file):
    question = "How wide is the funnel on the standard UK Met Office rain gauge?"
    started = time.monotonic()
    chunks = list(
        client.chat.completions.create(model="kb:course", messages=[{"role": "user", "content": question}], stream=True)
    )
    print(f"\n{time.monotonic() - started:.1f} s streamed: {question!r}")
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    extra = chunks[-1].choices[0].delta.model_extra
    assert chunks[-1].choices[0].finish_reason == "stop"
    check_cited(content, extra["annotations"], extra["citations"], kb_file)
    assert "127" in content or "5 in" in content, content


def test_an_off_topic_question_abstains(client):
    response = ask(client, [{"role": "user", "content": "Who won the 1966 football World Cup?"}])
    choice = response.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content == ABSTAIN_TEXT
    assert not choice.message.annotations and choice.message.model_extra["citations"] == []
    assert response.model_extra["kb"]["abstained"] is True


def test_a_follow_up_is_answered_about_the_earlier_topic_with_its_citations(client, kb_file):
    """Non-streamed, and a follow-up: the two cost one answer between them (the model is slow here)."""
    messages = [
        {"role": "user", "content": "What is biochemical oxygen demand?"},
        {"role": "assistant", "content": "It is the oxygen that bacteria use up as they break down organic waste [1]."},
        {"role": "user", "content": "and how is it measured?"},
    ]
    response = ask(client, messages)
    info = response.model_extra["kb"]
    print(f"rewritten: {info['question']!r}")
    assert response.choices[0].finish_reason == "stop"
    assert info["abstained"] is False and info["asked"] == "and how is it measured?"
    assert "oxygen demand" in info["question"].lower() and "measur" in info["question"].lower()
    message = response.choices[0].message
    check_cited(message.content, message.annotations, message.model_extra["citations"], kb_file)
    assert any("Water quality" in c["title"] for c in message.model_extra["citations"])


def test_embeddings_are_kb_search_query_vectors(client, kb_file):
    from kb.plugins import get_embedder
    from kb.search import embed_query

    with KB.open(kb_file, readonly=True) as kb:
        model = kb.model_id
    texts = ["How is rainfall measured?", "tipping-bucket gauge"]
    data = client.embeddings.create(model="kb:course", input=texts).data
    embedder = get_embedder(model)
    for item in data:
        got = np.asarray(item.embedding, dtype=np.float32)
        want = np.asarray(embed_query(embedder, texts[item.index]), dtype=np.float32)
        assert got.shape == want.shape == (384,)
        assert float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)) == pytest.approx(1.0, abs=1e-6)
