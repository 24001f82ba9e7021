"""The records study questions are made of: a question with its grounding, and what a run made."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("short", "mcq", "truefalse", "cloze")
"""Short answer, multiple choice (four options), true/false, cloze (one blank)."""
KIND_NAMES = {"short": "short answer", "mcq": "multiple choice", "truefalse": "true/false", "cloze": "cloze"}
STATUSES = ("draft", "approved", "rejected")
BLANK = "_____"
"""The one blank of a cloze question, as the stem shows it."""

REASONS = {
    "malformed": "the model's reply was not a question of this kind",
    "leans_on_text": 'it leans on the text ("according to the passage", "the author")',
    "quote_not_in_chunk": "its quote does not occur in its passage",
    "answer_not_in_quote": "its answer is not supported by its quote",
    "options": "multiple choice needs four distinct options",
    "not_one_correct": "not exactly one option is correct",
    "longest_correct": "the correct option is the longest by a margin (guessable)",
    "cloze_blanks": "a cloze needs exactly one blank",
    "answer_in_question": "the question gives its answer away",
    "duplicate": "it nearly repeats a kept question",
    "kb_abstained": "kb's answer engine does not answer it from the course",
    "answered_elsewhere": "kb's answer engine answers it from another fact",
}
"""Why a question was rejected: the stable key stored in questions.reason, and its sentence."""


@dataclass
class Question:
    """One study question, the passage it was made from, and the checks it went through."""

    kind: str
    """One of KINDS."""
    question: str
    """The stem: the question; a true/false question's statement; a cloze's sentence with one BLANK."""
    answer: str
    """The answer: short answer's words, the correct option's text, "true"/"false", the cloze's missing words."""
    quote: str
    """The passage's own words that support the answer (checked to occur in the chunk)."""
    chunk_id: int | None = None
    """The chunk it was made from: its locator says page, slide, heading or time."""
    options: list[str] = field(default_factory=list)
    """Multiple choice: the four options in the order shown (positions shuffled)."""
    correct: int | None = None
    """Multiple choice: the index of the correct option in `options`."""
    source_id: int | None = None
    locator: str = ""
    """Where the chunk is, for a person: "Lecture notes, p. 4 · Hortonian flow"."""
    status: str = "draft"
    reason: str | None = None
    """Why it was rejected: a key of REASONS."""
    checks: dict[str, Any] = field(default_factory=dict)
    """What each check found (support scores, the answer engine's reply and citations)."""
    model: str = ""
    id: int | None = None

    @property
    def correct_text(self) -> str:
        if self.kind == "mcq" and self.correct is not None and 0 <= self.correct < len(self.options):
            return self.options[self.correct]
        return self.answer

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "question": self.question,
            "answer": self.answer,
            "options": list(self.options),
            "correct": self.correct,
            "quote": self.quote,
            "chunk_id": self.chunk_id,
            "source_id": self.source_id,
            "locator": self.locator,
            "status": self.status,
            "reason": self.reason,
            "checks": self.checks,
            "model": self.model,
        }


@dataclass
class Section:
    """A chunk questions are made from, with what a question needs to say where it comes from."""

    chunk_id: int
    source_id: int
    text: str
    title: str
    heading: str | None
    locator: str
    uri: str


@dataclass
class RunReport:
    """What `kb questions` made: per source, how many were made, kept, and rejected for what."""

    made: int = 0
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    by_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    baselines: dict[str, float] = field(default_factory=dict)
    """Multiple choice: accuracy of always picking the longest option, and of each fixed position."""

    def count(self, question: Question, source: str) -> None:
        kept = question.status != "rejected"
        self.made += 1
        self.kept += kept
        kind = self.by_kind.setdefault(question.kind, {"made": 0, "kept": 0})
        kind["made"] += 1
        kind["kept"] += kept
        row = self.by_source.setdefault(source, {"made": 0, "kept": 0, "rejected": {}})
        row["made"] += 1
        row["kept"] += kept
        if not kept and question.reason:
            self.rejected[question.reason] = self.rejected.get(question.reason, 0) + 1
            row["rejected"][question.reason] = row["rejected"].get(question.reason, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "made": self.made,
            "kept": self.kept,
            "share_kept": round(self.kept / self.made, 3) if self.made else 0.0,
            "rejected": dict(self.rejected),
            "by_kind": self.by_kind,
            "by_source": self.by_source,
            "seconds": round(self.seconds, 1),
            "seconds_per_kept": round(self.seconds / self.kept, 1) if self.kept else None,
            "baselines": self.baselines,
        }
