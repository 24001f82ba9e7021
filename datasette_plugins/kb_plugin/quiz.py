"""The self-test page (/-/kb/DB/quiz?n=N): one approved study question at a time, answer, then reveal.

The learner's answer never leaves the browser: the input has no name and the form is never sent
(a small script checks it and opens the reveal; without script, the reveal opens by a click), so
the page works on a read-only learner copy, offline, and nothing the learner types is stored or
logged. The reveal shows the answer, the course's own words and a link to the source there.
"""

from __future__ import annotations

import json
from typing import Any

from datasette.utils import tilde_decode
from datasette.utils.asgi import Response

from .targets import kb_path, open_url, view_url


async def quiz_page(datasette: Any, request: Any) -> Response:
    from .pages import PageError, ascii_int, ask_url, kb_database

    context: dict[str, Any] = {}
    code = 200
    try:
        name, status = await kb_database(datasette, request, tilde_decode(request.url_vars["database"]))
        context.update(database=name, database_url=datasette.urls.database(name), ask_url=ask_url(datasette, name))
        raw = request.args.get("n") or "1"
        number = ascii_int(raw, 1, 2**31)
        if number is None:
            raise PageError("n must be a question number from 1.")
        db = datasette.get_database(name)
        has_table = (
            await db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'questions'")
        ).first()
        total = 0
        if has_table:
            total = (await db.execute("SELECT count(*) FROM questions WHERE status = 'approved'")).first()[0]
        context["total"] = total
        if total:
            number = min(number, total)
            row = (
                await db.execute(
                    "SELECT q.id, q.kind, q.question, q.answer, q.options, q.correct, q.quote, q.chunk_id, "
                    "q.source_id, q.locator, c.page, c.link FROM questions q LEFT JOIN chunks c ON c.id = q.chunk_id "
                    "WHERE q.status = 'approved' ORDER BY q.id LIMIT 1 OFFSET ?",
                    [number - 1],
                )
            ).first()
            context.update(number=number, question=_view(datasette, name, status, dict(row)))
            here = kb_path(datasette, name, "quiz")
            context["next_url"] = f"{here}?n={number + 1}" if number < total else None
            context["previous_url"] = f"{here}?n={number - 1}" if number > 1 else None
            context["first_url"] = f"{here}?n=1"
    except PageError as exc:
        context["error"], code = str(exc), exc.status
    html = await datasette.render_template("kb_quiz.html", context, request=request)
    return Response.html(html, status=code)


def _view(datasette: Any, name: str, status: Any, row: dict[str, Any]) -> dict[str, Any]:
    source = status.sources.get(row["source_id"]) if row["source_id"] is not None else None
    if source is not None and row["chunk_id"] is not None:
        link = open_url(datasette, name, source, row["chunk_id"], row["page"], row["link"])
    else:
        link = view_url(datasette, name, source.id) if source is not None else None
    options = json.loads(row["options"]) if row["kind"] == "mcq" and row["options"] else []
    if row["kind"] == "truefalse":
        options, correct = ["True", "False"], 0 if row["answer"] == "true" else 1
    else:
        correct = row["correct"]
    answer = options[correct] if options and correct is not None and 0 <= correct < len(options) else row["answer"]
    return {
        "id": row["id"],
        "kind": row["kind"],
        "text": row["question"],
        "options": options,
        "correct": correct,
        "answer": answer,
        "quote": row["quote"],
        "locator": row["locator"],
        "source_title": source.title if source else None,
        "link": link,
    }
