"""Datasette's own pages of a KB, arranged to start with the course (the plugin's template overrides).

The templates in templates/ extend Datasette's defaults ("default:database.html") and change only
what these variables give them, so files that are not KBs get Datasette's pages unchanged: the
index and database pages lead with the ask page and the sources table, a table's descriptions
fold away above its rows, and a passage's row page says where it is and links to it in its source.
"""

from __future__ import annotations

from typing import Any

from datasette.utils import tilde_decode
from markupsafe import Markup, escape

from .catalog import TABLES
from .cells import locator_label
from .status import KB, known_status
from .targets import open_url, view_url

FIRST = ("sources", "chunks", "chunk_sources")
"""What a learner looks for first; the rest follow in Datasette's order."""


def course_first(tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`tables` (Datasette's dicts with a "name") with the course's own tables first."""
    rank = {name: i for i, name in enumerate(FIRST)}
    return sorted(tables, key=lambda t: rank.get(t.get("name"), len(FIRST)))


def folded(table: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The table's metadata with its description and column notes folded into one <details>."""
    info = TABLES.get(table, {})
    columns = metadata.get("columns") or info.get("columns") or {}
    description = metadata.get("description_html") or escape(metadata.get("description") or info.get("description", ""))
    if not columns and not description:
        return metadata
    notes = Markup("").join(Markup("<dt>{}</dt><dd>{}</dd>").format(k, v) for k, v in columns.items())
    html = Markup('<details class="kb-about"><summary>About this table</summary>{}{}</details>').format(
        Markup(f"<p>{description}</p>") if description else "", Markup(f"<dl>{notes}</dl>") if notes else ""
    )
    return {**{k: v for k, v in metadata.items() if k not in ("columns", "description")}, "description_html": html}


def _is_kb(datasette: Any, database: str | None) -> bool:
    status = known_status(datasette, database) if database else None
    return status is not None and status.kind == KB


def template_vars(template: str, database: str | None, table: str | None, request: Any, datasette: Any) -> Any:
    """The extra_template_vars of one page: only KB pages get any."""
    if template == "index.html":
        return _index_vars(datasette)
    if not _is_kb(datasette, database):
        return {}
    if template == "database.html":
        return {"kb_course_first": course_first}
    if template == "table.html" and table:
        return {"kb_metadata": folded(table, datasette.table_metadata(database, table))}
    if template == "row.html" and table == "chunks" and request is not None:
        return _row_vars(datasette, database, request)
    return {}


def _index_vars(datasette: Any) -> dict[str, Any]:
    from .pages import ask_url

    kbs = [name for name in list(datasette.databases) if _is_kb(datasette, name)]
    if not kbs:
        return {}

    def arrange(databases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        arranged = []
        for db in databases:
            if db.get("name") in kbs:
                shown = [t for t in db.get("tables_and_views_truncated", []) if t.get("name") not in FIRST[:2]]
                lead = [{"name": name, "count": None, "private": False} for name in FIRST[:2]]
                db = {**db, "tables_and_views_truncated": lead + shown[:3]}
            arranged.append(db)
        return arranged

    return {
        "kb_asks": [{"name": name, "url": ask_url(datasette, name)} for name in kbs],
        "kb_arrange": arrange,
    }


async def _row_vars(datasette: Any, database: str, request: Any) -> dict[str, Any]:
    from .pages import ascii_int

    chunk_id = ascii_int(tilde_decode(request.url_vars.get("pks", "")), 0, 2**63 - 1)
    if chunk_id is None:
        return {}
    rows = await datasette.get_database(database).execute(
        "SELECT id, source_id, page, slide, start_s, heading, link FROM chunks WHERE id = ?", [chunk_id]
    )
    row = rows.first()
    status = known_status(datasette, database)
    source = status.sources.get(row["source_id"]) if row is not None and status is not None else None
    if source is None:
        return {}
    return {
        "kb_row": {
            "title": source.title,
            "where": locator_label(row["page"], row["slide"], row["start_s"], row["heading"]),
            "heading": row["heading"],
            "view_url": view_url(datasette, database, source.id, row["id"]),
            "open_url": open_url(datasette, database, source, row["id"], row["page"], row["link"]),
        }
    }
