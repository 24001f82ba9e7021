"""The ask page of each KB database (/-/kb/DB), its JSON (/-/kb/DB.json) and the list of KBs (/-/kb)."""

from __future__ import annotations

import asyncio
import re
import weakref
from typing import Any

from datasette.utils import tilde_decode, tilde_encode
from datasette.utils.asgi import Response

from kb import CITATION
from kb.answer import MAX_QUESTION_CHARS
from kb.errors import KBError, NotAKBFile
from kb.injection import clean_answer, clean_answer_record
from kb.llm import LLMError

from .cells import locator_label
from .engine import Busy, workers
from .failures import failure
from .status import KB, Status, database_status
from .targets import file_url, open_url, view_url

MAX_CHARS = MAX_QUESTION_CHARS
"""Longest question or query the page takes: kb ask's own limit."""
MAX_K = 50
MODES = ("ask", "search")

refused: weakref.WeakKeyDictionary[Any, dict[str, str]] = weakref.WeakKeyDictionary()
"""Per Datasette instance: databases the plugin took out at startup, with the reason."""


class PageError(Exception):
    """A request the page answers with one sentence and an HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


_ASCII_INT = re.compile(r"[0-9]{1,18}")


def ascii_int(raw: str | None, low: int, high: int) -> int | None:
    """`raw` as a whole number from low to high, written in ASCII digits only; None otherwise.

    str.isdigit() accepts "²" (which int() then refuses) and "٣" (which int() reads as 3).
    """
    if raw is None or not _ASCII_INT.fullmatch(raw):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def ask_url(datasette: Any, database: str) -> str:
    return datasette.urls.path(f"/-/kb/{tilde_encode(database)}")


async def kb_index(datasette: Any, request: Any) -> Response:
    """Every KB served, with its ask page, and every file the plugin refused, with why."""
    await datasette.ensure_permissions(request.actor, ["view-instance"])
    loop = asyncio.get_running_loop()
    kbs = []
    for name in list(datasette.databases):
        status = await loop.run_in_executor(None, database_status, datasette, name)
        if status is not None and status.kind == KB:
            kbs.append({"database": name, "ask_url": ask_url(datasette, name), **status.counts})
    data = {"kbs": kbs, "refused": [{"database": n, "reason": r} for n, r in refused.get(datasette, {}).items()]}
    if request.url_vars.get("format") == "json":
        return Response.json(data)
    return Response.html(await datasette.render_template("kb_index.html", data, request=request))


async def kb_page(datasette: Any, request: Any) -> Response:
    """Ask a question (mode=ask) or list passages (mode=search) of one KB, as HTML or JSON."""
    route = tilde_decode(request.url_vars["database"])
    as_json = request.url_vars.get("format") == "json"
    context: dict[str, Any] = {"database": route, "max_chars": MAX_CHARS, "max_k": MAX_K}
    if request.args.get("mode", "ask") in MODES:
        context["mode"] = request.args.get("mode", "ask")
    code = 200
    headers: dict[str, str] = {}
    try:
        name, status = await kb_database(datasette, request, route)
        context.update(_base_context(datasette, name, status))
        q, mode, k = _read_args(request)
        context.update(q=q, mode=mode, k=k)
        if not q.strip() and as_json:
            raise PageError("The question is empty.")
        if q.strip():
            path = datasette.databases[name].path
            if mode == "ask":
                answer = await workers.ask(path, q, datasette.plugin_config("kb") or {})
                context.update(_answer_context(datasette, name, status, answer))
            else:
                hits = await workers.search(path, q, k)
                context["hits"] = [_hit_view(datasette, name, status, h) for h in hits]
                context["json"] = {
                    "query": " ".join(q.split()),
                    "hits": [_hit_json(datasette, name, status, h) for h in hits],
                }
    except PageError as exc:
        context["error"], code = str(exc), exc.status
    except Busy as exc:
        # Not the learner's mistake: try again later, and the client is told when.
        context["error"], code = str(exc), 503
        headers["Retry-After"] = str(exc.retry_after)
    except LLMError as exc:
        context["error"], code = failure(request, exc, 503)
    except NotAKBFile as exc:  # damage found while answering (a vector, the keyword index)
        context["error"], code = failure(request, exc, 500)
    except KBError as exc:
        context["error"], code = str(exc), 413 if "too long" in str(exc) else 400
    except Exception as exc:  # a damaged file or a bug: one sentence and one log line, never a traceback
        context["error"], code = failure(request, exc, 500)
    if as_json:
        body = {"ok": code == 200, "database": context["database"], "mode": context.get("mode")}
        body.update(context.get("json") or {})
        if "error" in context:
            body["error"] = context["error"]
        return Response.json(body, status=code, headers=headers)
    html = await datasette.render_template("kb_ask.html", context, request=request)
    return Response.html(html, status=code, headers=headers)


async def kb_database(datasette: Any, request: Any, route: str) -> tuple[str, Status]:
    reason = refused.get(datasette, {}).get(route)
    if reason:
        raise PageError(reason, 400)
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise PageError(f"There is no database named {route!r} here.", 404)
    await datasette.ensure_permissions(request.actor, [("view-database", db.name), "view-instance"])
    # Cached after startup; the first check of a big file reads it whole, so not on the event loop.
    status = await asyncio.get_running_loop().run_in_executor(None, database_status, datasette, db.name)
    if status is None or status.kind != KB:
        raise PageError(status.reason if status and status.reason else f"{db.name} is not a kb file.", 404)
    return db.name, status


def _read_args(request: Any) -> tuple[str, str, int]:
    q = request.args.get("q") or ""
    mode = request.args.get("mode") or "ask"
    if mode not in MODES:
        raise PageError("mode must be ask or search.")
    k = ascii_int(request.args.get("k") or "10", 1, MAX_K)
    if k is None:
        raise PageError(f"k must be a whole number from 1 to {MAX_K}.")
    if len(q) > MAX_CHARS:
        # Bounded before any work: the text is not echoed back into the form either.
        raise PageError(f"The question is too long ({len(q):,} characters; the limit is {MAX_CHARS:,}).", 413)
    return q, mode, k


def _base_context(datasette: Any, name: str, status: Status) -> dict[str, Any]:
    return {
        "database": name,
        "database_url": datasette.urls.database(name),
        "ask_url": ask_url(datasette, name),
        "expected_wait": workers.expected_wait(),
        "counts": status.counts,
        "model": status.meta.get("embedding_model"),
        "tables": [{"name": t, "url": datasette.urls.table(name, t)} for t in ("sources", "chunks", "chunk_sources")],
        "queries": [
            {"name": title, "url": datasette.urls.query(name, query)}
            for query, title in (
                ("keyword_search", "keyword"),
                ("semantic_search", "semantic"),
                ("hybrid_search", "hybrid"),
            )
        ],
    }


def answer_parts(text: str) -> list[dict[str, Any]]:
    """The answer as text runs and citation markers, so the template links [n] without marking text safe."""
    parts: list[dict[str, Any]] = []
    position = 0
    for match in CITATION.finditer(text):  # kb's own marker syntax, as the checks read it
        if match.start() > position:
            parts.append({"text": text[position : match.start()]})
        parts.append({"cites": [int(k) for k in re.findall(r"\d+", match.group(1))]})
        position = match.end()
    if position < len(text):
        parts.append({"text": text[position:]})
    return parts


def _answer_context(datasette: Any, name: str, status: Status, answer: Any) -> dict[str, Any]:
    data = answer.to_dict()
    for record in [*data["citations"], *data["nearest"]]:
        record.update(_links(datasette, name, status, record))
    # Nothing in an answer may phone home: no image, no link but the citations kb made (kb/injection.py).
    data = clean_answer_record(data)
    citations = [
        {**_clean_view(_hit_view(datasette, name, status, e.hit)), "key": e.key, "origin": answer.origin}
        for e in answer.cited
    ]
    return {
        "answer": {
            "parts": answer_parts(data["answer"]),
            "abstained": answer.abstained,
            "citations": citations,
            "nearest": [_clean_view(_hit_view(datasette, name, status, h)) for h in answer.nearest]
            if answer.abstained
            else [],
            "warnings": [clean_answer(w) for w in answer.warnings],
            "seconds": round(answer.timings.get("total_s", 0.0), 1),
            "origin": answer.origin,
        },
        "json": data,
    }


def _clean_view(view: dict[str, Any]) -> dict[str, Any]:
    """A passage shown under an answer: its text without images, links or URLs (its own links stay)."""
    return {**view, "text": clean_answer(view["text"])}


def _links(datasette: Any, name: str, status: Status, record: dict[str, Any]) -> dict[str, Any]:
    """The row, source view, stored file and "open there" URLs of a hit or citation record.

    `link` becomes what the browser can open (a served URL or the web page), not the KB's own
    link: file:// is refused from an http page, and a learner copy's links are relative to it.
    """
    source = status.sources.get(status.uris.get(record["source"]["uri"], -1))
    chunk_id = record["chunk_id"]
    return {
        "row_url": datasette.urls.row(name, "chunks", str(chunk_id)),
        "view_url": view_url(datasette, name, source.id, chunk_id) if source else None,
        "file_url": file_url(datasette, name, source),
        "link": open_url(datasette, name, source, chunk_id, record.get("page"), record.get("link")),
    }


def _hit_view(datasette: Any, name: str, status: Status, hit: Any) -> dict[str, Any]:
    loc = hit.locator
    text = " ".join(hit.text.split())
    links = _links(datasette, name, status, {**hit.to_dict(), "chunk_id": hit.chunk_id})
    return {
        "chunk_id": hit.chunk_id,
        "title": hit.source.title or hit.source.uri,
        "where": locator_label(loc.page, loc.slide, loc.start_s, loc.heading),
        "heading": loc.heading,
        "text": text if len(text) <= 400 else text[:400].rsplit(" ", 1)[0] + " …",
        **links,
    }


def _hit_json(datasette: Any, name: str, status: Status, hit: Any) -> dict[str, Any]:
    record = hit.to_dict()
    return {**record, **_links(datasette, name, status, record)}
