"""The questions table: save what a run made, list, decide and edit; every write is one transaction."""

from __future__ import annotations

import json
from typing import Any

from ..db import transaction
from ..errors import KBError
from ..store import KB, utcnow
from .types import KINDS, STATUSES, Question

COLUMNS = (
    "id, kind, question, answer, options, correct, quote, chunk_id, source_id, locator, status, reason, checks, model"
)


def _row(row: Any) -> Question:
    (
        qid,
        kind,
        question,
        answer,
        options,
        correct,
        quote,
        chunk_id,
        source_id,
        locator,
        status,
        reason,
        checks,
        model,
    ) = row
    return Question(
        id=qid,
        kind=kind,
        question=question,
        answer=answer,
        options=json.loads(options) if options else [],
        correct=correct,
        quote=quote,
        chunk_id=chunk_id,
        source_id=source_id,
        locator=locator or "",
        status=status,
        reason=reason,
        checks=json.loads(checks) if checks else {},
        model=model or "",
    )


def _values(q: Question) -> tuple[Any, ...]:
    return (
        q.kind,
        q.question,
        q.answer,
        json.dumps(q.options, ensure_ascii=False) if q.kind == "mcq" else None,
        q.correct if q.kind == "mcq" else None,
        q.quote,
        q.chunk_id,
        q.source_id,
        q.locator,
        q.status,
        q.reason,
        json.dumps(q.checks, ensure_ascii=False, default=str),
        q.model,
    )


def save(kb: KB, q: Question) -> Question:
    """Insert `q` (new) or update it (it has an id); returns it with its id."""
    if kb.readonly:
        raise KBError(f"{kb.path} is open read-only; questions cannot be saved in it.")
    with transaction(kb.conn):
        if q.id is None:
            cursor = kb.conn.execute(
                "INSERT INTO questions(kind, question, answer, options, correct, quote, chunk_id, source_id, "
                "locator, status, reason, checks, model, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_values(q), utcnow()),
            )
            q.id = cursor.lastrowid
        else:
            kb.conn.execute(
                "UPDATE questions SET kind = ?, question = ?, answer = ?, options = ?, correct = ?, quote = ?, "
                "chunk_id = ?, source_id = ?, locator = ?, status = ?, reason = ?, checks = ?, model = ?, "
                "updated_at = ? WHERE id = ?",
                (*_values(q), utcnow(), q.id),
            )
    return q


def get(kb: KB, question_id: int) -> Question:
    row = kb.conn.execute(f"SELECT {COLUMNS} FROM questions WHERE id = ?", (question_id,)).fetchone()
    if row is None:
        raise KBError(f"There is no question {question_id} in {kb.path}.")
    return _row(row)


def select(kb: KB, statuses: tuple[str, ...] = (), kinds: tuple[str, ...] = ()) -> list[Question]:
    """Questions in id order, of the given statuses and kinds (all when empty)."""
    for value, allowed, what in ((statuses, STATUSES, "status"), (kinds, KINDS, "kind")):
        bad = [v for v in value if v not in allowed]
        if bad:
            raise KBError(f"Unknown {what} {bad[0]!r}; choose from {', '.join(allowed)}.")
    where, params = [], []
    if statuses:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        params.extend(statuses)
    if kinds:
        where.append(f"kind IN ({', '.join('?' * len(kinds))})")
        params.extend(kinds)
    if not kb.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'questions'").fetchone():
        return []  # a KB of schema v3/v4 opened read-only (not upgraded) holds no questions
    sql = f"SELECT {COLUMNS} FROM questions" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
    return [_row(r) for r in kb.conn.execute(sql, params)]


def set_status(kb: KB, ids: list[int], status: str, reason: str | None = None) -> int:
    """Approve or reject questions by id; a rejection by the teacher records `reason` ("teacher")."""
    if status not in STATUSES:
        raise KBError(f"Unknown status {status!r}.")
    missing = [i for i in ids if kb.conn.execute("SELECT 1 FROM questions WHERE id = ?", (i,)).fetchone() is None]
    if missing:
        raise KBError(f"There is no question {missing[0]} in {kb.path}.")
    with transaction(kb.conn):
        for question_id in ids:
            kb.conn.execute(
                "UPDATE questions SET status = ?, reason = ?, updated_at = ? WHERE id = ?",
                (status, reason if status == "rejected" else None, utcnow(), question_id),
            )
    return len(ids)


def counts(kb: KB) -> dict[str, int]:
    return dict(kb.conn.execute("SELECT status, count(*) FROM questions GROUP BY status").fetchall())
