"""Failures under `kb serve`: one sentence for the browser, one line in the log, never a traceback.

Datasette 0.65's own error page prints every exception with rich's traceback and its local
variables (about 63 KB a request, measured on a damaged file), and its 404 raises when rich is
installed, which made unknown paths 500s. The plugin's handle_exception hook answers instead: 404
for what does not exist, the status Datasette chose for its own errors (a bad SQL query is 400),
400 for a query past the memory bound, and 500 with one logged line for anything else. Datasette
calls every handle_exception hook, so `kb serve` blocks its default one (kb/serve.py), which
would still print the traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from datasette.utils.asgi import Response

from kb.terminal import printable

MAX_LOGGED = 300
"""Characters of an error message written to the log."""


def log_line(request: Any, status: int, exc: BaseException) -> None:
    """One line on stderr: the status, what was asked for, and why it failed."""
    path = getattr(request, "path", "?") if request is not None else "?"
    message = " ".join(str(exc).split())[:MAX_LOGGED]
    print(printable(f"kb: {status} {path}: {type(exc).__name__}: {message}"), file=sys.stderr, flush=True)


def failure(request: Any, exc: BaseException, status: int) -> tuple[str, int]:
    """(the sentence the page shows, the status), with one log line for the server's operator."""
    from kb.errors import KBError

    log_line(request, status, exc)
    if isinstance(exc, KBError):
        return str(exc), status
    from kb.db import sqlite3

    if isinstance(exc, sqlite3.DatabaseError):
        return f"The KB file could not be read ({' '.join(str(exc).split())[:200]}); it may be damaged.", status
    return "kb could not answer this request because of an error on the server; it has been logged.", status


MEMORY = "The query needs more memory than this server allows; ask for less (fewer rows, smaller values)."


def handle(datasette: Any, request: Any, exception: BaseException) -> Any:
    """The plugin's handle_exception hook: a short page for every error, JSON where JSON was asked for."""
    from datasette.utils.asgi import Base400, NotFound
    from datasette.views.base import DatasetteError

    async def respond() -> Response:
        if isinstance(exception, NotFound):
            status, message = 404, "There is nothing at this address."
        elif isinstance(exception, Base400):
            status, message = exception.status, str(exception)
        elif isinstance(exception, DatasetteError):  # Datasette's own (a query it refused, say)
            status, message = exception.status, " ".join(str(exception.message).split())[:MAX_LOGGED]
            if status >= 500:
                log_line(request, status, exception)
        elif isinstance(exception, MemoryError):
            # SQL typed into Datasette ran into SQLite's heap limit (status.HEAP_LIMIT): the asker's
            # request was too big, the server is fine.
            status, message = 400, MEMORY
            log_line(request, status, exception)
        else:
            status = 500
            message, _ = failure(request, exception, status)
        wants_json = request is not None and (
            request.path.endswith(".json") or "json" in request.headers.get("accept", "")
        )
        if wants_json:
            return Response.json({"ok": False, "error": message, "status": status}, status=status)
        return Response.text(message, status=status)

    return respond
