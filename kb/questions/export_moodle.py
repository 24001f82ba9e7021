"""Moodle XML (question/format/xml): the structure Moodle's importer reads, one <question> per question.

multichoice (single answer, fractions 100 and 0), truefalse (answers "true" and "false"),
shortanswer, and cloze (Moodle's embedded-answers type, one {1:SHORTANSWER:=…} where the blank is).
Each question's source and quote are its general feedback.
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from .export_gift import feedback
from .types import BLANK, Question

TYPES = {"mcq": "multichoice", "truefalse": "truefalse", "short": "shortanswer", "cloze": "cloze"}


def _text(parent: ET.Element, tag: str, value: str, fmt: str | None = "html") -> ET.Element:
    element = ET.SubElement(parent, tag, {"format": fmt} if fmt else {})
    ET.SubElement(element, "text").text = value
    return element


def _html(text: str) -> str:
    from html import escape

    return f"<p>{escape(text)}</p>"


def _cloze_escape(text: str) -> str:
    # Inside an embedded answer these characters end or split it (Moodle's qtype_multianswer).
    for ch in '\\}#~/"':
        text = text.replace(ch, "\\" + ch)
    return text


def _answer(parent: ET.Element, fraction: int, value: str, fmt: str = "moodle_auto_format") -> None:
    answer = ET.SubElement(parent, "answer", {"fraction": str(fraction), "format": fmt})
    ET.SubElement(answer, "text").text = value


def question(q: Question) -> ET.Element:
    element = ET.Element("question", {"type": TYPES[q.kind]})
    name = ET.SubElement(element, "name")
    ET.SubElement(name, "text").text = f"kb-{q.id}" if q.id is not None else q.question[:60]
    if q.kind == "cloze":
        before, _, after = q.question.partition(BLANK)
        from html import escape

        text = f"<p>{escape(before)}{{1:SHORTANSWER:={_cloze_escape(q.answer)}}}{escape(after)}</p>"
        _text(element, "questiontext", text)
    else:
        _text(element, "questiontext", _html(q.question))
    _text(element, "generalfeedback", _html(feedback(q)))
    ET.SubElement(element, "defaultgrade").text = "1"
    ET.SubElement(element, "penalty").text = "0.3333333"
    ET.SubElement(element, "hidden").text = "0"
    if q.kind == "mcq":
        ET.SubElement(element, "single").text = "true"
        ET.SubElement(element, "shuffleanswers").text = "false"  # kb balanced the positions itself
        ET.SubElement(element, "answernumbering").text = "abc"
        for i, option in enumerate(q.options):
            _answer(element, 100 if i == q.correct else 0, _html(option), "html")
    elif q.kind == "truefalse":
        _answer(element, 100 if q.answer == "true" else 0, "true")
        _answer(element, 100 if q.answer == "false" else 0, "false")
    elif q.kind == "short":
        ET.SubElement(element, "usecase").text = "0"
        _answer(element, 100, q.answer)
    return element


def export(questions: list[Question], title: str = "") -> str:
    quiz = ET.Element("quiz")
    if title:
        category = ET.SubElement(quiz, "question", {"type": "category"})
        ET.SubElement(ET.SubElement(category, "category"), "text").text = f"$course$/kb/{title}"
    for q in questions:
        quiz.append(question(q))
    ET.indent(quiz)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(quiz, encoding="unicode") + "\n"
