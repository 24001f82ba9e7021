"""A small GIFT reader, written from Moodle's documented grammar (docs.moodle.org/en/GIFT_format), for tests.

No maintained Python package parses GIFT, so the export is read back with this: `//` comment lines;
questions separated by blank lines; an optional `::title::`; the question text, then one answer
block in braces (text after it makes a missing-word question): `TRUE`/`T`/`FALSE`/`F`, or answers
each starting with `=` (right) or `~` (wrong), with optional `%weight%` and `#feedback`; `####`
before the general feedback. `\\~ \\= \\# \\{ \\} \\: \\\\` are the escaped characters and `\\n` a newline.
Anything else (an unescaped brace in the text, two answer blocks) is refused with ValueError.
"""

from __future__ import annotations

import re

_ESCAPES = {"~": "\ue000", "=": "\ue001", "#": "\ue002", "{": "\ue003", "}": "\ue004", ":": "\ue005", "\\": "\ue006"}
_BACK = {v: k for k, v in _ESCAPES.items()}


def _protect(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "n":
                out.append("\n")
                i += 2
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _restore(text: str) -> str:
    return "".join(_BACK.get(ch, ch) for ch in text).strip()


def _blocks(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
    blocks, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            blocks.append(" ".join(current))
            current = []
    if current:
        blocks.append(" ".join(current))
    return blocks


def _answer(token: str) -> dict:
    mark, body = token[0], token[1:]
    weight = None
    found = re.match(r"%(-?\d+(?:\.\d+)?)%", body)
    if found:
        weight, body = float(found.group(1)), body[found.end() :]
    text, _, feedback = body.partition("#")
    return {"text": _restore(text), "correct": mark == "=", "weight": weight, "feedback": _restore(feedback)}


def parse_question(block: str) -> dict:
    raw = _protect(block)
    title = None
    found = re.match(r"\s*::(.*?)::", raw, re.S)
    if found:
        title, raw = _restore(found.group(1)), raw[found.end() :]
    raw = re.sub(r"^\s*\[(html|moodle|plain|markdown)\]", "", raw)
    if raw.count("{") != 1 or raw.count("}") != 1 or raw.index("{") > raw.index("}"):
        raise ValueError(f"not one answer block in braces: {block[:80]!r}")
    start, end = raw.index("{"), raw.index("}")
    before, inner, after = raw[:start], raw[start + 1 : end], raw[end + 1 :]
    answers_part, _, general = inner.partition("####")
    question = {
        "title": title,
        "text": _restore(before),
        "after": _restore(after),
        "general_feedback": _restore(general),
    }
    body = answers_part.strip()
    tf = re.fullmatch(r"(TRUE|T|FALSE|F)((?:#[^#]*){0,2})", body)
    if tf:
        question.update(kind="truefalse", answer=tf.group(1) in ("TRUE", "T"), answers=[])
        return question
    tokens = re.findall(r"[=~][^=~]*", body)
    if not tokens or "".join(tokens).strip() != body:
        raise ValueError(f"answers must start with = or ~: {block[:80]!r}")
    answers = [_answer(t.strip()) for t in tokens]
    wrong = any(not a["correct"] for a in answers)
    kind = "multichoice" if wrong else "shortanswer"
    if question["after"] and kind == "shortanswer":
        kind = "missingword"
    question.update(kind=kind, answers=answers)
    return question


def parse(text: str) -> list[dict]:
    """Every question of a GIFT file, as dicts: title, text, after, kind, answers, general_feedback."""
    return [parse_question(block) for block in _blocks(text)]
