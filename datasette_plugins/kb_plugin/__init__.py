"""kb's Datasette plugin: ask and search KB files in the browser, and browse them with working deep links.

Registered through the `datasette` entry point (pyproject.toml), so a plain `datasette course.db`
uses it too; `kb serve` starts Datasette with it. Each hook is a line or two over the modules:
status (which files are KBs, connection setup), catalog (descriptions, stored queries), cells
(links in tables), targets (where a link leads), pages (the ask page), quiz (the self-test page),
sourceview (a source's text with the cited passage), files (stored originals, by range), browse
(Datasette's own pages, course first) and engine (kb's answer engine off the event loop).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from datasette import hookimpl

from kb.terminal import printable

from . import browse, catalog, cells, failures, files, pages, quiz, sourceview
from .status import KB, REFUSED, database_status, file_status, known_status, lock_extension_loading, prepare


@hookimpl
def prepare_connection(conn: Any, database: str, datasette: Any) -> None:
    # Whatever else runs, SQL sent to Datasette must never load an extension.
    lock_extension_loading(conn)
    if database == "_memory" and datasette.crossdb:
        conn.execute("PRAGMA trusted_schema = OFF")  # KB files get attached to it
    prepare(conn, database_status(datasette, database), datasette.setting("sql_time_limit_ms"))


@hookimpl
def startup(datasette: Any) -> Any:
    async def check_files() -> None:
        """Check every file once (the quick check reads it whole) and take out the refused ones.

        A damaged file makes every Datasette page fail, not just its own, so it is not served.
        """
        loop = asyncio.get_running_loop()
        taken = pages.refused.setdefault(datasette, {})
        for name, db in list(datasette.databases.items()):
            if db.is_memory or not db.path:
                continue
            status = await loop.run_in_executor(None, file_status, db.path)
            if status.kind == REFUSED:
                datasette.remove_database(name)
                taken[name] = status.reason
                print(printable(f"kb: not serving {name}: {status.reason}"), file=sys.stderr)

    return check_files


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    return [
        (r"^/-/kb(\.(?P<format>json))?$", pages.kb_index),
        (r"^/-/kb/(?P<database>[^/]+?)(\.(?P<format>json))?$", pages.kb_page),
        (r"^/-/kb/(?P<database>[^/]+?)/quiz$", quiz.quiz_page),
        (r"^/-/kb/(?P<database>[^/]+?)/source/(?P<source>[0-9]{1,18})$", sourceview.source_page),
        (r"^/-/kb/(?P<database>[^/]+?)/files/(?P<source>[0-9]{1,18})/(?P<name>[^/]+)$", files.serve_file),
        # Anything else under /-/kb/ is answered here: Datasette 0.65's own 404 page raises when
        # rich is installed (print_exception outside an except block), which made it a 500.
        (r"^/-/kb/", files.not_found),
    ]


@hookimpl
def handle_exception(datasette: Any, request: Any, exception: BaseException) -> Any:
    return failures.handle(datasette, request, exception)


@hookimpl
def get_metadata(datasette: Any, key: str, database: str | None, table: str | None) -> dict[str, Any]:
    merged: dict[str, Any] = {"databases": {}}
    for name in list(datasette.databases):
        status = known_status(datasette, name)
        if status is not None and status.kind == KB:
            block = catalog.database_metadata(
                name, status, pages.ask_url(datasette, name), lambda table, name=name: datasette.urls.table(name, table)
            )
            merged["databases"].update(block["databases"])
    return merged


@hookimpl
def canned_queries(datasette: Any, database: str, actor: Any) -> dict[str, Any] | None:
    status = known_status(datasette, database)
    return catalog.canned_queries(status) if status is not None and status.kind == KB else None


@hookimpl
def render_cell(row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any) -> Any:
    status = known_status(datasette, database)
    if status is None or status.kind != KB:
        return None
    return cells.render(row, value, column, table, database, datasette, status)


@hookimpl
def extra_template_vars(template: str, database: str | None, table: str | None, request: Any, datasette: Any) -> Any:
    return browse.template_vars(template, database, table, request, datasette)


@hookimpl
def database_actions(datasette: Any, actor: Any, database: str, request: Any) -> list[dict[str, str]] | None:
    status = known_status(datasette, database)
    if status is None or status.kind != KB:
        return None
    return [{"href": pages.ask_url(datasette, database), "label": "Ask this course a question"}]


@hookimpl
def menu_links(datasette: Any, actor: Any, request: Any) -> list[dict[str, str]]:
    links = []
    for name in list(datasette.databases):
        status = known_status(datasette, name)
        if status is not None and status.kind == KB:
            links.append({"href": pages.ask_url(datasette, name), "label": f"Ask {name}"})
    return links
