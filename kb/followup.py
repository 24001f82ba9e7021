"""Follow-up questions made standalone before retrieval: "and how is it measured?" after a question about rain.

Retrieval sees one question, so a follow-up that leans on the conversation ("it", "and why?") is
rewritten first by one short, grammar-forced model call over the last turns. What the model returns
is checked in code (one line, a question, bounded); when it fails, the earlier question and the
follow-up are searched together, which still finds the earlier topic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from . import prompts
from .answer import MAX_QUESTION_CHARS
from .llm import LLM, Constraint
from .search import _WORD, STOPWORDS

MAX_TURNS = 4
"""Earlier messages shown to the rewrite call: enough for "it" to find its noun, and a short prompt
(the model reads ~95 prompt tokens/s on 2 cores)."""
MAX_TURN_CHARS = 300
"""Each earlier message is cut to this (an earlier answer's Sources list adds nothing)."""
MAX_REWRITE_CHARS = 240
REWRITE_TOKENS = 64


@dataclass(frozen=True)
class Turn:
    """One earlier message of a conversation: who said it and what."""

    role: str
    """"user" or "assistant"."""
    text: str


def rewrite_constraint() -> Constraint:
    """A JSON object holding one single-line question: a grammar for llama.cpp, a schema for servers."""
    gbnf = rf"""
root ::= "{{" ws "\"question\":" ws "\"" char{{3,{MAX_REWRITE_CHARS}}} "?\"" ws "}}"
char ::= [^"\\\n\r?]
ws ::= [ ]?
"""
    schema = {
        "type": "object",
        "properties": {"question": {"type": "string", "maxLength": MAX_REWRITE_CHARS}},
        "required": ["question"],
    }
    return Constraint(gbnf=gbnf, schema=schema)


def _cut(text: str) -> str:
    """An earlier message as the rewrite call sees it: its answer without kb's Sources list, bounded."""
    text = " ".join(text.split("\n\nSources:", 1)[0].split())  # kb's own answers end with their Sources list
    if len(text) > MAX_TURN_CHARS:
        text = text[:MAX_TURN_CHARS].rsplit(" ", 1)[0] + " …"
    return text


def rewrite_messages(history: list[Turn], question: str) -> list[dict[str, str]]:
    return prompts.rewrite_messages([(t.role, _cut(t.text)) for t in history[-MAX_TURNS:]], question)


def fallback(history: list[Turn], question: str) -> str:
    """The earlier question and the follow-up together: retrieval still finds the earlier topic."""
    earlier = next((t.text for t in reversed(history) if t.role == "user"), "")
    # The whole stays within the question limit the follow-up itself met.
    room = max(0, min(MAX_TURN_CHARS, MAX_QUESTION_CHARS - len(question) - 1))
    return " ".join(f"{' '.join(earlier.split())[:room]} {question}".split())


_REFERRING = frozenset("it its they them their this that these those he she his her one ones".split())


def _asks(text: str) -> set[str]:
    """The words that say what a question asks (not the ones that point back at the conversation)."""
    words = {w.lower() for w in _WORD.findall(text)}
    return words - STOPWORDS - _REFERRING


def parse_rewrite(raw: str, followup: str = "") -> str | None:
    """The rewritten question, or None when the reply is not one bounded single-line question that
    still asks what `followup` asked (the small model sometimes repeats the earlier question instead)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    question = value.get("question") if isinstance(value, dict) else None
    if not isinstance(question, str):
        return None
    question = " ".join(question.split())
    if not (4 <= len(question) <= MAX_REWRITE_CHARS + 1) or not question.endswith("?") or question.count("?") > 1:
        return None
    said = {w[:5] for w in _asks(question)}  # "measured" and "measure" are the same ask
    if any(w[:5] not in said for w in _asks(followup)):
        return None
    return question


def standalone(llm: LLM, history: list[Turn], question: str) -> str:
    """`question` rewritten to stand alone, given the earlier turns (returned as is without any)."""
    if not any(t.role == "user" for t in history):
        return question
    result = llm.generate(
        rewrite_messages(history, question), max_tokens=REWRITE_TOKENS, constraint=rewrite_constraint()
    )
    return parse_rewrite(result.text, question) or fallback(history, question)
