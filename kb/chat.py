"""kb's answers in OpenAI's chat-completion shape, citations kept: what `/v1` and MCP return.

Peers lose the sources on the way (role and content only, raw `{{source:n}}`, citations dropped
when streaming). Here `content` always carries the `[n]` markers and a short Sources list, so any
client shows them; `annotations` give each marker's span and deep link in the form the openai SDK
types (url_citation); `citations` carry kb's own detail. Nothing in this module knows Datasette:
where a citation links is the caller's `link` function.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .answer import MAX_QUESTION_CHARS
from .errors import KBError
from .followup import Turn
from .injection import clean_answer, clean_answer_record
from .text import MARKER, clock, one_key_per_marker
from .types import Answer, Evidence, Hit

MODEL_PREFIX = "kb:"
MAX_K = 50
MAX_MESSAGES = 200
MAX_QUOTE_CHARS = 400

Link = Callable[[Hit], "str | None"]
"""Where a citation opens: the served deep link (source view, `#page=`, `&t=`), or the KB's own link."""


class RequestError(KBError):
    """A request the API refuses, with its HTTP status and OpenAI error type."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code


@dataclass
class ChatRequest:
    """What a chat-completions body asks, checked."""

    kb: str
    """The KB's name (the model id without its `kb:` prefix)."""
    question: str
    history: list[Turn] = field(default_factory=list)
    stream: bool = False
    k: int | None = None
    """Passages retrieved (kb's `candidates`), from a top-level `k` (the openai client's extra_body)."""
    fast: bool | None = None
    llm: str | None = None
    """A built-in model by name (`kb models`), from a top-level `llm`: the model tier."""


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    kind = {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        413: "invalid_request_error",
    }
    kind |= {429: "rate_limit_exceeded", 503: "server_error"}
    return {"error": {"message": message, "type": kind.get(status, "server_error"), "param": param, "code": code}}


def model_name(model: Any, known: list[str]) -> str:
    """The KB a `model` field names: `kb:<name>` (or the bare name); any other id is a 404."""
    if not isinstance(model, str) or not model:
        raise RequestError(
            "model is required: one of " + ", ".join(MODEL_PREFIX + n for n in known) + ".", param="model"
        )
    name = model[len(MODEL_PREFIX) :] if model.startswith(MODEL_PREFIX) else model
    if name not in known:
        raise RequestError(
            f"The model {model!r} does not exist here; GET /v1/models lists "
            + ", ".join(MODEL_PREFIX + n for n in known)
            + ".",
            404,
            "model",
            "model_not_found",
        )
    return name


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts (images are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError("Only text message parts are supported.", param="messages")
            parts.append(part["text"])
        return "\n".join(parts)
    if content is None:
        return ""
    raise RequestError("A message's content must be a string or a list of text parts.", param="messages")


def parse_chat(body: Any, known: list[str], builtin_models: list[str]) -> ChatRequest:
    """The checked request: the last user message is the question, earlier turns its context."""
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    name = model_name(body.get("model"), known)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list.", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise RequestError(f"Too many messages ({len(messages)}; the limit is {MAX_MESSAGES}).", 413, "messages")
    turns: list[Turn] = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError("Each message must be an object with a role.", param="messages")
        if message["role"] in ("user", "assistant"):
            turns.append(Turn(message["role"], _text(message.get("content"))))
    if not turns or turns[-1].role != "user":
        raise RequestError("The last message must be the user's question.", param="messages")
    question = turns[-1].text
    if len(question) > MAX_QUESTION_CHARS:
        raise RequestError(
            f"The question is too long ({len(question):,} characters; the limit is {MAX_QUESTION_CHARS:,}).",
            413,
            "messages",
            "question_too_long",
        )
    if not question.strip():
        raise RequestError("The question is empty.", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("stream must be true or false.", param="stream")
    k = body.get("k")
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K):
        raise RequestError(f"k must be a whole number from 1 to {MAX_K}.", param="k")
    fast = body.get("fast")
    if fast is not None and not isinstance(fast, bool):
        raise RequestError("fast must be true or false.", param="fast")
    llm = body.get("llm")
    if llm is not None and llm not in builtin_models:
        # Only built-in names: a client must never make the server open a path of its choosing.
        raise RequestError("llm must be one of " + ", ".join(builtin_models) + ".", param="llm")
    return ChatRequest(name, question, turns[:-1], stream, k, fast, llm)


def _where(hit: Hit) -> str:
    """Page, slide, time and heading, for the Sources list (the heading without the title it repeats)."""
    loc = hit.locator
    parts = []
    if loc.page is not None:
        parts.append(f"page {loc.page}")
    if loc.slide is not None:
        parts.append(f"slide {loc.slide}")
    if loc.start_s is not None:
        parts.append(f"at {clock(loc.start_s)}")
    heading = loc.heading or ""
    if hit.source.title and heading.startswith(hit.source.title + " > "):
        heading = heading[len(hit.source.title) + 3 :]
    if heading and heading != hit.source.title:
        parts.append(heading)
    return ", ".join(parts)


def _quote(piece: Evidence) -> str:
    quote = " ".join((" … ".join(piece.quotes) if piece.quotes else piece.excerpt or piece.hit.text).split())
    return quote if len(quote) <= MAX_QUOTE_CHARS else quote[:MAX_QUOTE_CHARS].rsplit(" ", 1)[0] + " …"


def where_fields(hit: Hit, url: str | None) -> dict[str, Any]:
    """The fields that say where a passage is, as every surface (citations, MCP search hits) gives them."""
    return {
        "chunk_id": hit.chunk_id,
        "title": hit.source.title or hit.source.uri,
        "kind": hit.source.kind,
        "page": hit.locator.page,
        "slide": hit.locator.slide,
        "heading": hit.locator.heading,
        "start_s": hit.locator.start_s,
        "end_s": hit.locator.end_s,
        "url": url,
    }


def citation(piece: Evidence, url: str | None) -> dict[str, Any]:
    """kb's detail of one citation (`message.citations[]`)."""
    return {"index": piece.key, **where_fields(piece.hit, url), "quote": _quote(piece), "score": piece.score}


@dataclass
class Reply:
    """One answer as the API returns it."""

    content: str
    """The answer with its [n] markers, then the Sources list."""
    text: str
    """The answer with its [n] markers alone."""
    annotations: list[dict[str, Any]]
    citations: list[dict[str, Any]]
    abstained: bool
    kb: dict[str, Any]


def reply(answer: Answer, link: Link, asked: str | None = None) -> Reply:
    """The answer's content (markers, then a Sources list), marker spans and citation detail."""
    info: dict[str, Any] = {"abstained": answer.abstained, "origin": answer.origin}
    if asked is not None and asked != answer.question:
        info["asked"] = asked
    info["question"] = answer.question  # what was searched: the follow-up, rewritten to stand alone
    if answer.warnings:
        info["warnings"] = [clean_answer(w) for w in answer.warnings]
    if answer.abstained:
        plain = clean_answer(answer.text)
        return Reply(plain, plain, [], [], True, info)
    cited = {e.key: e for e in answer.cited}
    urls = {key: link(piece.hit) for key, piece in cited.items()}
    records = clean_answer_record([citation(cited[key], urls[key]) for key in cited])
    body = one_key_per_marker(answer.text.strip())
    body = clean_answer(body, [u for u in urls.values() if u])
    annotations = []
    for match in MARKER.finditer(body):
        key = int(match.group(1))
        if key in cited:
            record = next(r for r in records if r["index"] == key)
            span = {"start_index": match.start(), "end_index": match.end(), "title": record["title"]}
            annotations.append({"type": "url_citation", "url_citation": {**span, "url": record["url"] or ""}})
    lines = []
    for record in records:
        where = clean_answer(_where(cited[record["index"]].hit))
        line = f"[{record['index']}] {record['title']}" + (f", {where}" if where else "")
        lines.append(line + (f": {record['url']}" if record["url"] else ""))
    content = body + "\n\nSources:\n" + "\n".join(lines) if lines else body
    return Reply(content, body, annotations, records, False, info)


def completion_id() -> str:
    return "chatcmpl-kb-" + uuid.uuid4().hex[:24]


def completion(reply: Reply, model: str) -> dict[str, Any]:
    """The non-streamed response object."""
    message = {"role": "assistant", "content": reply.content, "annotations": reply.annotations}
    message["citations"] = reply.citations
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "kb": reply.kb,
    }


def chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """One streamed `chat.completion.chunk`."""
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        **extra,
    }


_PIECES = re.compile(r"\S+\s*|\s+")


def stream_pieces(reply: Reply) -> list[str]:
    """The checked content in word-sized pieces (kb streams only text its checks kept)."""
    return _PIECES.findall(reply.content)
