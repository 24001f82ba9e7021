"""`kb questions export`: the approved questions (or all that passed) in the format a tool reads."""

from __future__ import annotations

from pathlib import Path

from ..errors import KBError
from ..store import KB
from . import export_anki, export_gift, export_jsonl, export_moodle, export_qti, store

FORMATS = ("gift", "moodle-xml", "apkg", "qti", "jsonl")
BINARY = ("apkg", "qti")
"""Formats written as a file (a zip), never to standard output."""


def title_of(kb: KB) -> str:
    return kb.path.stem


def chosen(kb: KB, everything: bool) -> list:
    """Approved questions; with `everything`, drafts too (never rejected ones)."""
    return store.select(kb, ("draft", "approved") if everything else ("approved",))


def export(kb: KB, fmt: str, out: str | Path | None, everything: bool = False) -> tuple[int, str | None]:
    """Write the questions to `out` (text formats: returned instead when `out` is None or "-")."""
    if fmt not in FORMATS:
        raise KBError(f"Unknown format {fmt!r}; choose from {', '.join(FORMATS)}.")
    questions = chosen(kb, everything)
    if not questions:
        raise KBError(
            f"{kb.path} has no {'questions that passed their checks' if everything else 'approved questions'} "
            "to export" + ("; approve some with `kb questions approve`, or pass --all." if not everything else ".")
        )
    to_stdout = out in (None, "-")
    if fmt in BINARY and to_stdout:
        raise KBError(f"--format {fmt} writes a file; give its name.")
    title = title_of(kb)
    uid = kb.meta().get("questions_uid") or kb.path.stem
    if fmt == "apkg":
        export_anki.export(questions, out, uid, title)
        return len(questions), None
    if fmt == "qti":
        export_qti.export(questions, out, title)
        return len(questions), None
    if fmt == "gift":
        text = export_gift.export(questions, title)
    elif fmt == "moodle-xml":
        text = export_moodle.export(questions, title)
    else:
        links = dict(kb.conn.execute("SELECT id, link FROM chunks WHERE link IS NOT NULL").fetchall())
        text = export_jsonl.export(questions, links)
    if to_stdout:
        return len(questions), text
    Path(out).write_text(text, encoding="utf-8")
    return len(questions), None
