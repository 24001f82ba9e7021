"""`kb eval`: retrieval and answer quality on a questions file (corpora/questions.jsonl's format)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .answer import AnswerEngine
from .errors import KBError
from .types import Hit, Locator

REQUIRED = ("question", "answerable")


@dataclass
class Question:
    """One line of a questions file."""

    id: str
    question: str
    answerable: bool
    expected_source: str | None = None
    expected_page: int | None = None
    expected_slide: int | None = None
    expected_heading: str | None = None
    expected_start_s: float | None = None
    keywords: list[str] = field(default_factory=list)
    near_subject: bool = False
    """An unanswerable question close to the course's subject: passages come near, none answers."""

    @property
    def labelled(self) -> bool:
        """Whether retrieval can be scored on it: answerable, with the source that answers it named."""
        return self.answerable and bool(self.expected_source)

    def matches(self, hit: Hit) -> bool:
        """Whether `hit` is the expected source at the expected locator."""
        return self.matches_at(hit.source.uri, hit.locator)

    def names_source(self, uri: str) -> bool:
        """Whether `uri` (a source's, maybe with a #fragment) is the expected source."""
        if not self.expected_source:
            return False
        uri = uri.split("#", 1)[0]
        return uri == self.expected_source or uri.endswith("/" + self.expected_source.lstrip("/"))

    def matches_at(self, uri: str, loc: Locator) -> bool:
        """Whether a chunk of the source `uri` at `loc` is the expected source at the expected locator
        (kb tune finds the gold chunks of a KB with it, without making a Hit of each)."""
        if not self.names_source(uri):
            return False
        if self.expected_page is not None and loc.page != self.expected_page:
            return False
        if self.expected_slide is not None and loc.slide != self.expected_slide:
            return False
        if self.expected_heading is not None and not heading_matches(self.expected_heading, loc.heading):
            return False
        if self.expected_start_s is not None and not (
            loc.start_s is not None and loc.end_s is not None and loc.start_s <= self.expected_start_s <= loc.end_s
        ):
            return False
        return True


_NUMBERING = re.compile(
    r"^(?:(?:chapter|section|part|appendix|lecture|unit)\s+[0-9a-z]+(?:\.[0-9a-z]+)*[.:]?\s+"
    r"|[0-9]+(?:\.[0-9]+)*[.)]?\s+|[a-z][.)]\s+|[ivxlc]+[.)]\s+)"
)
_NOT_WORD = re.compile(r"[^\w]+")


def normal_heading(text: str) -> str:
    """A heading as compared by `kb eval`: lower case, permalink marks, punctuation and a leading
    number ("8.3.", "2)", "Chapter 4:", "A.") dropped, spaces collapsed."""
    text = text.strip().lower().replace("\u00b6", " ")
    text = _NUMBERING.sub("", text)
    return " ".join(_NOT_WORD.sub(" ", text).split())


def heading_matches(expected: str, heading: str | None) -> bool:
    """Whether the stored heading path ends with the expected one, part by part, each part normalised:
    "Types of rain gauge" matches "Field guide > 2. Types of Rain Gauge¶"."""
    want = [normal_heading(part) for part in expected.split(">")]
    have = [normal_heading(part) for part in (heading or "").split(">")]
    return bool(want) and len(want) <= len(have) and have[len(have) - len(want) :] == want


def load_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KBError(f"Cannot read {path} ({exc.strerror}).") from exc
    questions = []
    fields = set(Question.__dataclass_fields__)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise KBError(f"{path} line {number} is not JSON ({exc}).") from exc
        if not isinstance(data, dict) or any(k not in data for k in REQUIRED):
            raise KBError(f"{path} line {number} needs the keys {', '.join(REQUIRED)}.")
        data.setdefault("id", f"q{number}")
        questions.append(Question(**{k: v for k, v in data.items() if k in fields}))
    if not questions:
        raise KBError(f"{path} holds no questions.")
    return questions


@dataclass
class Result:
    """How kb did on one question."""

    id: str
    answerable: bool
    rank: int | None
    """1-based rank of the first hit at the expected locator within the top k, None if absent."""
    abstained: bool
    keyword_hit: bool | None
    citations: int
    valid_citations: int
    raw_citations: int
    raw_valid_citations: int
    cites_expected: bool | None
    origin: str
    seconds: float
    answer: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate(
    engine: AnswerEngine, questions: list[Question], k: int = 5, progress: Callable[[Result], None] | None = None
) -> dict[str, Any]:
    """Run every question through retrieval and the answer engine; return per-question results and totals."""
    results = []
    for q in questions:
        hits = engine.searcher.search(q.question, k=k)
        rank = next((h.rank for h in hits if q.matches(h)), None) if q.answerable else None
        answer = engine.ask(q.question, log=False)
        evidence_keys = {e.key for e in answer.evidence}
        evidence_ids = {e.hit.chunk_id for e in answer.evidence}
        text = answer.text.lower()
        result = Result(
            id=q.id,
            answerable=q.answerable,
            rank=rank,
            abstained=answer.abstained,
            keyword_hit=(all(kw.lower() in text for kw in q.keywords) if q.keywords else None)
            if q.answerable
            else None,
            citations=len(answer.cited),
            valid_citations=sum(1 for e in answer.cited if e.hit.chunk_id in evidence_ids),
            raw_citations=len(answer.raw_citations),
            raw_valid_citations=sum(1 for key in answer.raw_citations if key in evidence_keys),
            cites_expected=any(q.matches(e.hit) for e in answer.cited) if q.answerable else None,
            origin=answer.origin,
            seconds=answer.timings.get("total_s", 0.0),
            answer=answer.text,
        )
        results.append(result)
        if progress:
            progress(result)
    return {"k": k, "results": [r.to_dict() for r in results], "summary": summarise(results, k)}


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def summarise(results: list[Result], k: int) -> dict[str, Any]:
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    cited = sum(r.citations for r in results)
    raw = sum(r.raw_citations for r in results)
    return {
        "questions": len(results),
        f"recall@{k}": _rate([r.rank is not None for r in answerable]),
        "mrr": round(sum(1 / r.rank for r in answerable if r.rank) / len(answerable), 3) if answerable else None,
        "keyword_hit_rate": _rate([bool(r.keyword_hit) for r in answerable if r.keyword_hit is not None]),
        "citation_precision": round(sum(r.valid_citations for r in results) / cited, 3) if cited else None,
        "model_citation_precision": round(sum(r.raw_valid_citations for r in results) / raw, 3) if raw else None,
        "cites_expected_rate": _rate([bool(r.cites_expected) for r in answerable if not r.abstained]),
        "abstention_rate": _rate([r.abstained for r in unanswerable]),
        "false_abstention_rate": _rate([r.abstained for r in answerable]),
        "model_answer_rate": _rate([r.origin == "model" for r in results if not r.abstained]),
        "mean_seconds": round(sum(r.seconds for r in results) / len(results), 2) if results else None,
    }
