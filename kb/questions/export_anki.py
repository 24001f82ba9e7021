"""Anki decks (.apkg) through genanki: one note per question, the citation on the back.

The note type has a fixed model id and each note's GUID is `genanki.guid_for(KB uid, question id)`,
so importing a second export of the same KB updates the cards the first one made (Anki matches
notes by GUID) instead of adding copies; an edited question keeps its card and its review history.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from .types import BLANK, Question

MODEL_ID = 1_607_392_014
"""kb's note type; never change it, or every deck imported before gets a second note type."""
FIELDS = ["Question", "Answer", "Quote", "Source", "Kind", "KBQuestion"]
CSS = (
    ".card { font-family: sans-serif; font-size: 20px; text-align: left; }\n"
    ".kb-quote { color: #444; }\n.kb-source { font-size: 14px; color: #666; }"
)


def model():
    import genanki

    return genanki.Model(
        MODEL_ID,
        "kb study question",
        fields=[{"name": name} for name in FIELDS],
        templates=[
            {
                "name": "Question",
                "qfmt": "{{Question}}",
                "afmt": '{{FrontSide}}<hr id="answer">{{Answer}}'
                '<p class="kb-quote">{{Quote}}</p><p class="kb-source">{{Source}}</p>',
            }
        ],
        css=CSS,
    )


def deck_id(uid: str) -> int:
    # A deck id of the KB's own, stable across exports (genanki wants a positive 63-bit integer).
    return int(uid[:15], 16) or 1


def front(q: Question) -> str:
    text = escape(q.question)
    if q.kind == "cloze":
        text = text.replace(BLANK, "[…]")
    if q.kind == "truefalse":
        return f"True or false? {text}"
    if q.kind == "mcq":
        items = "".join(f"<li>{'ABCD'[i]}. {escape(o)}</li>" for i, o in enumerate(q.options))
        return f'{text}<ol style="list-style: none">{items}</ol>'
    return text


def back(q: Question) -> str:
    if q.kind == "mcq" and q.correct is not None:
        return f"{'ABCD'[q.correct]}. {escape(q.correct_text)}"
    if q.kind == "truefalse":
        return "True" if q.answer == "true" else "False"
    return escape(q.answer)


def note(q: Question, uid: str):
    import genanki

    fields = [front(q), back(q), f"“{escape(q.quote)}”", escape(q.locator), q.kind, str(q.id)]
    return genanki.Note(model=model(), fields=fields, guid=genanki.guid_for(uid, q.id), tags=["kb", q.kind])


def export(questions: list[Question], out: str | Path, uid: str, title: str) -> None:
    import genanki

    deck = genanki.Deck(deck_id(uid), title or "kb study questions")
    for q in questions:
        deck.add_note(note(q, uid))
    genanki.Package(deck).write_to_file(str(out))
