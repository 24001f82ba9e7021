"""Moodle's GIFT text format: one question per paragraph, the source and quote in the general feedback.

Written from Moodle's documented grammar (question/format/gift): `::name::` then the text, the
answers in braces (`=` right, `~` wrong, `{TRUE}`/`{FALSE}`), `####` before the general feedback;
the reserved characters `~ = # { } :` and the backslash are escaped with a backslash, as Moodle's
own exporter (repchar) does, and newlines become `\\n`.
"""

from __future__ import annotations

from .types import BLANK, Question

_RESERVED = {"\\": "\\\\", "~": "\\~", "=": "\\=", "#": "\\#", "{": "\\{", "}": "\\}", ":": "\\:"}


def escape(text: str) -> str:
    out = "".join(_RESERVED.get(ch, ch) for ch in text)
    return out.replace("\r", "").replace("\n", "\\n")


def feedback(q: Question) -> str:
    """Where the answer is in the course, and the course's own words: the general feedback."""
    return f'Source: {q.locator}. "{q.quote}"'


def question(q: Question) -> str:
    """One question in GIFT."""
    name = f"::kb-{q.id}::" if q.id is not None else ""
    general = f"####{escape(feedback(q))}"
    if q.kind == "mcq":
        options = " ".join(("=" if i == q.correct else "~") + escape(o) for i, o in enumerate(q.options))
        return f"{name}{escape(q.question)} {{{options} {general}}}"
    if q.kind == "truefalse":
        return f"{name}{escape(q.question)} {{{'TRUE' if q.answer == 'true' else 'FALSE'}{general}}}"
    if q.kind == "cloze":
        # Missing word: the answer braces stand where the blank is.
        before, _, after = q.question.partition(BLANK)
        return f"{name}{escape(before)}{{={escape(q.answer)} {general}}}{escape(after)}"
    return f"{name}{escape(q.question)} {{={escape(q.answer)} {general}}}"


def export(questions: list[Question], title: str = "") -> str:
    head = [f"// Study questions from {title}, made and checked by kb" if title else "// Study questions made by kb"]
    return "\n\n".join(head + [question(q) for q in questions]) + "\n"
