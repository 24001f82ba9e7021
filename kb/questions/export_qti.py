"""QTI 1.2 (what Canvas, Blackboard and D2L import): a zip with imsmanifest.xml and one assessment.

Written directly in the shape text2qti and Canvas's own exports use: each item has Canvas's
question_type metadata, a response_lid (multiple choice, true/false) or response_str (short
answer, cloze) and a resprocessing that sets SCORE to 100 for the right response; the source and
quote are the item's general feedback.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

from .export_gift import feedback
from .types import BLANK, Question

NS = "http://www.imsglobal.org/xsd/ims_qtiasiv1p2"
CANVAS_TYPES = {
    "mcq": "multiple_choice_question",
    "truefalse": "true_false_question",
    "short": "short_answer_question",
    "cloze": "short_answer_question",
}


def _material(parent: ET.Element, text: str) -> None:
    ET.SubElement(ET.SubElement(parent, "material"), "mattext", {"texttype": "text/plain"}).text = text


def item(q: Question) -> ET.Element:
    element = ET.Element("item", {"ident": f"kb-{q.id}", "title": f"Question {q.id}"})
    fields = ET.SubElement(ET.SubElement(element, "itemmetadata"), "qtimetadata")
    for label, entry in (("question_type", CANVAS_TYPES[q.kind]), ("points_possible", "1")):
        field = ET.SubElement(fields, "qtimetadatafield")
        ET.SubElement(field, "fieldlabel").text = label
        ET.SubElement(field, "fieldentry").text = entry
    presentation = ET.SubElement(element, "presentation")
    _material(presentation, q.question.replace(BLANK, "____") if q.kind == "cloze" else q.question)
    if q.kind in ("mcq", "truefalse"):
        choices = q.options if q.kind == "mcq" else ["True", "False"]
        right = q.correct if q.kind == "mcq" else (0 if q.answer == "true" else 1)
        response = ET.SubElement(presentation, "response_lid", {"ident": "response1", "rcardinality": "Single"})
        render = ET.SubElement(response, "render_choice")
        for i, choice in enumerate(choices):
            _material(ET.SubElement(render, "response_label", {"ident": f"choice{i}"}), choice)
        answers = [f"choice{right}"]
        test = "varequal"
    else:
        response = ET.SubElement(presentation, "response_str", {"ident": "response1", "rcardinality": "Single"})
        ET.SubElement(response, "render_fib", {"fibtype": "String", "prompt": "Box"})
        answers = [q.answer]
        test = "varequal"
    processing = ET.SubElement(element, "resprocessing")
    outcomes = ET.SubElement(processing, "outcomes")
    ET.SubElement(outcomes, "decvar", {"maxvalue": "100", "minvalue": "0", "varname": "SCORE", "vartype": "Decimal"})
    general = ET.SubElement(processing, "respcondition", {"continue": "Yes"})
    ET.SubElement(ET.SubElement(general, "conditionvar"), "other")
    ET.SubElement(general, "displayfeedback", {"feedbacktype": "Response", "linkrefid": "general_fb"})
    for answer in answers:
        condition = ET.SubElement(processing, "respcondition", {"continue": "No"})
        ET.SubElement(ET.SubElement(condition, "conditionvar"), test, {"respident": "response1"}).text = answer
        ET.SubElement(condition, "setvar", {"action": "Set", "varname": "SCORE"}).text = "100"
    fb = ET.SubElement(element, "itemfeedback", {"ident": "general_fb"})
    _material(ET.SubElement(fb, "flow_mat"), feedback(q))
    return element


def assessment(questions: list[Question], title: str) -> str:
    root = ET.Element("questestinterop", {"xmlns": NS})
    test = ET.SubElement(root, "assessment", {"ident": "kb-questions", "title": title or "kb study questions"})
    section = ET.SubElement(test, "section", {"ident": "root_section"})
    for q in questions:
        section.append(item(q))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<manifest identifier="kb-questions-manifest" xmlns="http://www.imsglobal.org/xsd/imsccv1p1/imscp_v1p1">
  <metadata><schema>IMS Content</schema><schemaversion>1.1.3</schemaversion></metadata>
  <organizations/>
  <resources>
    <resource identifier="kb-questions" type="imsqti_xmlv1p2">
      <file href="kb-questions/kb-questions.xml"/>
    </resource>
  </resources>
</manifest>
"""


def export(questions: list[Question], out: str | Path, title: str) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("imsmanifest.xml", MANIFEST)
        archive.writestr("kb-questions/kb-questions.xml", assessment(questions, title))
