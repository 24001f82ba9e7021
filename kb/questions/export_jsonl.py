"""A JSON-lines dataset in chat-message form, for teachers who fine-tune a local model on their course.

Each line: {"messages": [system, user, assistant]} (the form llama.cpp's, Axolotl's and OpenAI's
fine-tuning tools read), plus the question, answer, supporting passage and citation as fields.
"""

from __future__ import annotations

import json

from .types import Question

SYSTEM = "You answer questions about the course from its materials and say where the answer is."


def prompt(q: Question) -> str:
    if q.kind == "mcq":
        return q.question + "\n" + "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(q.options))
    if q.kind == "truefalse":
        return f"True or false: {q.question}"
    if q.kind == "cloze":
        return f"Fill in the blank: {q.question}"
    return q.question


def answer(q: Question) -> str:
    return q.answer.capitalize() if q.kind == "truefalse" else q.correct_text


def reply(q: Question) -> str:
    said = f"{'ABCD'[q.correct]}. {q.correct_text}" if q.kind == "mcq" and q.correct is not None else answer(q)
    return f'{said.rstrip(".")}. The course says: "{q.quote}" ({q.locator})'


def record(q: Question, link: str | None = None) -> dict:
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt(q)},
            {"role": "assistant", "content": reply(q)},
        ],
        "kind": q.kind,
        "question": q.question,
        "options": q.options if q.kind == "mcq" else None,
        "answer": answer(q),
        "passage": q.quote,
        "citation": {"chunk_id": q.chunk_id, "source_id": q.source_id, "locator": q.locator, "link": link},
    }


def export(questions: list[Question], links: dict[int, str] | None = None) -> str:
    links = links or {}
    return "".join(
        json.dumps(record(q, links.get(q.chunk_id) if q.chunk_id else None), ensure_ascii=False) + "\n"
        for q in questions
    )
