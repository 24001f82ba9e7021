"""The OpenAI-compatible API of `kb serve` (/v1): chat completions with citations, models, embeddings.

Answers come from the ask page's worker, queue and loaded model (engine.py); what they look like
is kb/chat.py. Plain ASGI, outside Datasette's router (gateway.py puts it in front): Datasette's
CSRF check would refuse every POST from a program, and these routes need none of its pages.

A stream opens at once (the role chunk, then a keep-alive comment while kb works) and carries only
text the checks kept: kb's checks run over the whole answer, so it streams after them rather than
show a sentence the checks would then take back. Annotations and citations come on the last chunk.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from kb.chat import (
    ChatRequest,
    RequestError,
    chunk,
    completion,
    completion_id,
    error_body,
    model_name,
    parse_chat,
    reply,
    stream_pieces,
)
from kb.errors import KBError, NotAKBFile
from kb.llm import LLMError
from kb.search import MAX_QUERY_CHARS

from .engine import Busy, workers
from .failures import log_line
from .status import KB, database_status, embedder_for
from .targets import open_url

MAX_BODY_BYTES = 256 * 1024
"""Largest request body: a long conversation fits; a 100 KB question is refused by its own limit."""
MAX_EMBED_INPUTS = 64
MAX_EMBEDDINGS_WAITING = 16
"""Embedding requests in flight at once; past it, 503 with Retry-After."""
KEEPALIVE_S = 10.0
"""Seconds between SSE comments while an answer is being made, so proxies keep the stream open."""


@dataclass
class Site:
    """What the API needs of the server it runs in."""

    datasette: Any
    base_url: str
    """Absolute base of the server's own links (http://127.0.0.1:8001), so a client elsewhere can open them."""


class Sent(Exception):
    """The response has been sent already (a stream that failed midway ended itself)."""


async def read_body(scope: dict, receive: Any, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused (413) past `limit` before more of it is read."""
    declared = dict(scope.get("headers") or []).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"The request body is too large ({int(declared):,} bytes; the limit is {limit:,}).", 413)
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Sent()
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise RequestError(f"The request body is too large (over {limit:,} bytes).", 413)
        parts.append(part)
        if not message.get("more_body"):
            return b"".join(parts)


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"The request body is not valid JSON ({exc}).")


async def send_json(send: Any, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(value, ensure_ascii=False).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})


async def send_error(send: Any, status: int, message: str, **extra: Any) -> None:
    headers = extra.pop("headers", None)
    await send_json(send, status, error_body(message, status, **extra), headers)


async def served_kbs(datasette: Any) -> dict[str, Any]:
    """{name: (path, status)} of every KB served."""
    loop = asyncio.get_running_loop()
    found = {}
    for name, db in list(datasette.databases.items()):
        if db.is_memory or not db.path:
            continue
        status = await loop.run_in_executor(None, database_status, datasette, name)
        if status is not None and status.kind == KB:
            found[name] = (db.path, status)
    return found


def deep_link(site: Site, name: str, status: Any, uri: str, chunk_id: int, page: Any, link: Any) -> str | None:
    """The deep link a passage of KB `name` opens, absolute: the source view, the PDF at #page=, the
    video at &t= (targets.open_url)."""
    source = status.sources.get(status.uris.get(uri, -1))
    url = open_url(site.datasette, name, source, chunk_id, page, link)
    return urljoin(site.base_url, url) if url else None


def link_for(site: Site, name: str, status: Any) -> Any:
    """kb.chat.Link for KB `name`: a hit's deep link."""

    def link(hit: Any) -> str | None:
        return deep_link(site, name, status, hit.source.uri, hit.chunk_id, hit.locator.page, hit.link)

    return link


async def handle(site: Site, scope: dict, receive: Any, send: Any) -> None:
    """Answer one /v1 request; every failure in OpenAI's error shape, one log line for a server fault."""
    path, method = scope["path"].rstrip("/"), scope["method"]
    routes = {"/v1/models": ("GET", models), "/v1/chat/completions": ("POST", chat), "/v1/embeddings": ("POST", embed)}
    try:
        if path not in routes:
            raise RequestError(
                f"There is no endpoint {scope['path']!r} here; kb serves " + ", ".join(routes) + ".", 404
            )
        wanted, handler = routes[path]
        if method != wanted:
            raise RequestError(f"{path} takes {wanted} requests.", 405)
        await handler(site, scope, receive, send)
    except Sent:
        pass
    except RequestError as exc:
        await send_error(send, exc.status, str(exc), param=exc.param, code=exc.code)
    except Busy as exc:  # not the client's mistake: it is told when to try again
        await send_error(send, 503, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after)})
    except LLMError as exc:
        log_line(_Path(scope), 503, exc)
        await send_error(send, 503, str(exc), code="model_unavailable", headers={"Retry-After": "30"})
    except NotAKBFile as exc:
        log_line(_Path(scope), 500, exc)
        await send_error(send, 500, str(exc))
    except KBError as exc:
        await send_error(send, 413 if "too long" in str(exc) else 400, str(exc))
    except Exception as exc:  # a bug or a damaged file: one sentence and one log line, never a traceback
        log_line(_Path(scope), 500, exc)
        await send_error(send, 500, "kb could not answer this request (the server's log says why).")


@dataclass
class _Path:
    scope: dict

    @property
    def path(self) -> str:
        return self.scope.get("path", "?")


async def models(site: Site, scope: dict, receive: Any, send: Any) -> None:
    kbs = await served_kbs(site.datasette)
    data = []
    for name, (_, status) in kbs.items():
        created = 0
        data.append({"id": f"kb:{name}", "object": "model", "created": created, "owned_by": "kb"})
        data[-1]["kb"] = {"embedding_model": status.meta.get("embedding_model"), **status.counts}
    await send_json(send, 200, {"object": "list", "data": data})


def _config(site: Site, request: ChatRequest) -> dict[str, Any]:
    config = dict(site.datasette.plugin_config("kb") or {})
    if request.k is not None:
        config["candidates"] = request.k
    if request.fast is not None:
        config["fast"] = request.fast
    if request.llm is not None:
        if config.get("llm_url"):
            raise RequestError("This server answers through --llm-url; llm cannot be chosen here.", param="llm")
        config["model"] = request.llm
    return config


async def chat(site: Site, scope: dict, receive: Any, send: Any) -> None:
    from kb.models import BUILTIN

    body = parse_json(await read_body(scope, receive))
    kbs = await served_kbs(site.datasette)
    request = parse_chat(body, list(kbs), sorted(BUILTIN))
    path, status = kbs[request.kb]
    config = _config(site, request)
    model = f"kb:{request.kb}"
    link = link_for(site, request.kb, status)
    answering = asyncio.ensure_future(workers.ask(path, request.question, config, request.history or None))
    if not request.stream:
        answer = await answering
        await send_json(send, 200, completion(reply(answer, link, request.question), model))
        return
    # A full queue raises before the ask's first await: one turn of the loop tells, so the client
    # gets a real 503 status rather than an error inside a stream already opened.
    await asyncio.sleep(0)
    if answering.done():
        answering.result()
    await stream(send, answering, link, request.question, model)


async def stream(send: Any, answering: Any, link: Any, asked: str, model: str) -> None:
    ident = completion_id()
    headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def event(value: Any) -> None:
        await send({"type": "http.response.body", "body": f"data: {json.dumps(value)}\n\n".encode(), "more_body": True})

    await event(chunk(ident, model, {"role": "assistant", "content": ""}))
    try:
        while True:
            done, _ = await asyncio.wait([answering], timeout=KEEPALIVE_S)
            if done:
                break
            await send({"type": "http.response.body", "body": b": kb is still working\n\n", "more_body": True})
        made = reply(answering.result(), link, asked)
        for piece in stream_pieces(made):
            await event(chunk(ident, model, {"content": piece}))
        final = {"annotations": made.annotations, "citations": made.citations}
        await event(chunk(ident, model, final, "stop", kb=made.kb))
    except (Busy, KBError) as exc:  # the status was sent already: the error travels in the stream
        await event(error_body(str(exc), 503 if isinstance(exc, Busy | LLMError) else 400))
    except Exception as exc:
        log_line(None, 500, exc)
        await event(error_body("kb could not answer this request (the server's log says why).", 500))
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
    raise Sent()


_embedding = {"waiting": 0}


async def embed(site: Site, scope: dict, receive: Any, send: Any) -> None:
    """Vectors from the KB's own embedding model, exactly as `kb search` embeds its query."""
    import numpy as np

    from kb.search import embed_query

    body = parse_json(await read_body(scope, receive))
    if not isinstance(body, dict):
        raise RequestError("The request body must be a JSON object.")
    kbs = await served_kbs(site.datasette)
    name = model_name(body.get("model"), list(kbs))
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise RequestError("input must be a non-empty string or a list of non-empty strings.", param="input")
    if len(texts) > MAX_EMBED_INPUTS:
        raise RequestError(f"Too many inputs ({len(texts)}; the limit is {MAX_EMBED_INPUTS}).", 413, "input")
    if any(len(t) > MAX_QUERY_CHARS for t in texts):
        raise RequestError(f"An input is too long (the limit is {MAX_QUERY_CHARS:,} characters).", 413, "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise RequestError("encoding_format must be float or base64.", param="encoding_format")
    if _embedding["waiting"] >= MAX_EMBEDDINGS_WAITING:
        raise Busy("Too many embedding requests are waiting; try again in a few seconds.", 2)
    _, status = kbs[name]

    def vectors_of() -> list:
        embedder = embedder_for(status.meta["embedding_model"])  # may load the model: not on the event loop
        return [np.asarray(embed_query(embedder, t), dtype="<f4") for t in texts]

    # Embedding is a search's first step: the same one-thread BLAS, search threads and priority gate.
    workers._limit_blas()
    _embedding["waiting"] += 1
    try:
        async with workers.priority.search():
            vectors = await asyncio.get_running_loop().run_in_executor(workers.search_pool, vectors_of)
    finally:
        _embedding["waiting"] -= 1
    data = []
    for index, vector in enumerate(vectors):
        value = base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": value})
    usage = {"prompt_tokens": 0, "total_tokens": 0}
    await send_json(send, 200, {"object": "list", "data": data, "model": f"kb:{name}", "usage": usage})
