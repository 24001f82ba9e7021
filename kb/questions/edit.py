"""A question as text a teacher edits in $EDITOR, and back: one "field: value" line per field."""

from __future__ import annotations

from ..errors import KBError
from .types import KIND_NAMES, KINDS, STATUSES, Question

HELP = "# Lines starting with # are ignored. Keep one field per line; multiple choice has four option lines."


def to_text(q: Question) -> str:
    lines = [f"# kb question {q.id} ({KIND_NAMES[q.kind]}) from {q.locator}", HELP]
    lines += [f"kind: {q.kind}", f"status: {q.status}", f"question: {q.question}"]
    if q.kind == "mcq":
        lines += [f"option: {o}" for o in q.options]
        lines.append(f"correct: {'ABCD'[q.correct] if q.correct is not None else ''}")
    else:
        lines.append(f"answer: {q.answer}")
    lines.append(f"quote: {q.quote}")
    return "\n".join(lines) + "\n"


def from_text(text: str, q: Question) -> Question:
    """`q` with the edited fields; a field left out keeps its value."""
    fields: dict[str, str] = {}
    options: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition(":")
        key, value = key.strip().lower(), " ".join(value.split())
        if not sep or key not in ("kind", "status", "question", "answer", "option", "correct", "quote"):
            raise KBError(f'Line {number} is not "field: value" with a field kb knows: {line.strip()[:60]!r}.')
        if key == "option":
            options.append(value)
        else:
            fields[key] = value
    kind = fields.get("kind", q.kind)
    if kind not in KINDS:
        raise KBError(f"Unknown kind {kind!r}; choose from {', '.join(KINDS)}.")
    status = fields.get("status", q.status)
    if status not in STATUSES:
        raise KBError(f"Unknown status {status!r}; choose from {', '.join(STATUSES)}.")
    q.kind, q.status = kind, status
    q.question = fields.get("question", q.question)
    q.quote = fields.get("quote", q.quote)
    if kind == "mcq":
        if options:
            q.options = options
        letter = fields.get("correct", "ABCD"[q.correct] if q.correct is not None else "").upper()
        if len(letter) != 1 or letter not in "ABCD"[: len(q.options)]:
            raise KBError(f"correct must be the letter of one of the {len(q.options)} options.")
        q.correct = "ABCD".index(letter)
        q.answer = q.options[q.correct]
    else:
        q.answer = fields.get("answer", q.answer)
        if kind == "truefalse":
            q.answer = q.answer.lower()
            if q.answer not in ("true", "false"):
                raise KBError("A true/false question's answer is true or false.")
    if status != "rejected":
        q.reason = None
    return q
