"""`kb questions`: study questions made passage by passage by the instruct model, each checked, all saved.

For each passage (a chunk, so a question has its page, slide, heading or time) the model writes
one question per kind asked for, as JSON a grammar forces (kb/questions/prompts.py). Code builds
what the model must not decide: the four options' positions (balanced over the run, so no fixed
position wins), the cloze's blank, whether a true/false statement is to be true. Every question then
goes through kb/questions/checks.py and is saved with its status: draft when it passed (for the
teacher to approve), rejected with its reason when it did not.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from ..answer import AnswerEngine, AskSettings
from ..errors import KBError
from ..evidence import occurs, snap
from ..llm import LLM
from ..reports import locator_label
from ..search import embed_query
from ..store import KB
from ..types import Locator
from . import checks, prompts, store
from .types import BLANK, KINDS, Question, RunReport, Section

MIN_SECTION_CHARS = 200
"""Shorter chunks (a title slide, a heading alone) hold too little to ask about."""
QUESTION_TOKENS = 220
"""Room for the longest reply (multiple choice: question, four answers, the quote)."""

OnQuestion = Callable[[int, int, Question], None]
"""on_question(section number, sections, question) after each question is checked and saved."""


def sections(kb: KB, source_globs: tuple[str, ...] = ()) -> list[Section]:
    """The chunks to make questions from, in source and reading order, of the sources matching a glob."""
    rows = kb.conn.execute(
        "SELECT c.id, c.source_id, c.text, s.title, s.uri, s.kind, c.page, c.slide, c.start_s, c.end_s, c.heading, "
        "c.flags FROM chunks c JOIN sources s ON s.id = c.source_id WHERE s.status = 'ok' ORDER BY s.id, c.ordinal"
    ).fetchall()
    matched: set[str] = set()
    out = []
    for chunk_id, source_id, text, title, uri, _kind, page, slide, start_s, end_s, heading, flags in rows:
        if source_globs:
            hits = [g for g in source_globs if _matches(g, uri, title)]
            if not hits:
                continue
            matched.update(hits)
        # A passage that addresses an AI (kb/injection.py) is no course text to learn from.
        if "instructions" in (flags or "") or len(text.strip()) < MIN_SECTION_CHARS:
            continue
        where = locator_label(Locator(page=page, slide=slide, start_s=start_s, end_s=end_s, heading=heading))
        label = f"{title}, {where}" if title and where else (title or where or _name(uri))
        out.append(Section(chunk_id, source_id, text, title or _name(uri), heading, label, uri))
    unmatched = [g for g in source_globs if g not in matched]
    if unmatched:
        raise KBError(f"--source {unmatched[0]!r} matches no source of {kb.path}.")
    return out


def _name(uri: str) -> str:
    return PurePosixPath(unquote(urlsplit(uri).path)).name or uri


def _matches(glob: str, uri: str, title: str | None) -> bool:
    path = unquote(urlsplit(uri).path)
    return any(
        fnmatch.fnmatch(candidate, glob) or fnmatch.fnmatch(candidate, f"*/{glob}")
        for candidate in (uri, path, _name(uri), title or "")
    )


def _stable(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class Generator:
    """Makes, checks and saves questions for one KB with one loaded model."""

    def __init__(self, kb: KB, llm: LLM, settings: AskSettings | None = None):
        self.kb = kb
        self.llm = llm
        self.engine = AnswerEngine(kb, lambda: llm, settings or AskSettings())
        embedder = self.engine.searcher.embedder
        self.duplicates = checks.Duplicates(lambda text: embed_query(embedder, text))
        self.positions = [0, 0, 0, 0]
        self.truths = 0
        for q in store.select(kb, ("draft", "approved")):
            self.duplicates.add(q)
            if q.kind == "mcq" and q.correct is not None:
                self.positions[q.correct] += 1

    # -- making --------------------------------------------------------------------------------

    def make(self, section: Section, kind: str, avoid: list[str]) -> Question:
        """One question of `kind` about `section`, as the model writes it and code completes it."""
        variant = ""
        if kind == "truefalse":
            variant = "true" if self.truths % 2 == 0 else "false"
            self.truths += 1
        messages = prompts.messages(kind, section.locator, section.text, variant)
        if avoid:
            listed = "; ".join(avoid)
            messages[-1]["content"] += f" Ask about another fact than these questions do: {listed}"
        reply = self.llm.generate(messages, max_tokens=QUESTION_TOKENS, constraint=prompts.constraint(kind))
        q = self.parse(kind, reply.text, section, variant)
        q.model = self.llm.describe().get("model", "")
        return q

    def parse(self, kind: str, raw: str, section: Section, variant: str = "") -> Question:
        """The model's JSON as a Question of `kind`; an unreadable reply becomes a `malformed` one."""
        q = Question(kind=kind, question="", answer="", quote="", chunk_id=section.chunk_id)
        q.source_id, q.locator = section.source_id, section.locator
        try:
            data = json.loads(raw)
            fields = {k: data[k] for k in prompts.FIELDS[kind]}
            # A server that ignores the schema (--llm-url) may send other types: one malformed
            # question, not the end of the run.
            if not all(isinstance(v, list if k == "wrong_answers" else str) for k, v in fields.items()):
                raise TypeError(kind)
        except (ValueError, KeyError, TypeError):
            q.checks["raw"] = raw[:500]
            return q
        clean = {k: " ".join(v.split()) if isinstance(v, str) else v for k, v in fields.items()}
        if kind == "short":
            q.question, q.answer, q.quote = clean["question"], clean["answer"], clean["quote"]
        elif kind == "mcq":
            q.question, q.answer, q.quote = clean["question"], clean["answer"], clean["quote"]
            wrong = [" ".join(str(w).split()) for w in clean["wrong_answers"]]
            self.place(q, wrong)
        elif kind == "truefalse":
            q.question, q.quote, q.answer = clean["statement"], clean["quote"], variant or "true"
        else:
            sentence, term = clean["sentence"], clean["term"].strip(" .,;:")
            q.quote, q.answer = sentence, term
            # The blank is made in code: every place the term occurs is blanked, so a term the sentence
            # holds twice (or not at all) fails the one-blank check instead of leaving a giveaway.
            lowered = sentence.lower()
            if term and lowered.count(term.lower()) >= 1:
                stem, position = "", 0
                while (found := lowered.find(term.lower(), position)) >= 0:
                    stem += sentence[position:found] + BLANK
                    position = found + len(term)
                q.question = stem + sentence[position:]
            else:
                q.question = sentence
        if q.quote and not occurs(q.quote, section.text):
            # As the judge's quotes: a near copy of a sentence stands as the passage's own words.
            snapped = snap(q.quote, section.text)
            if snapped:
                q.checks["quote_snapped_from"] = q.quote
                if kind == "cloze" and q.answer.lower() in snapped.lower():
                    q.question = snapped.replace(q.answer, BLANK) if q.answer in snapped else q.question
                q.quote = snapped
        return q

    def place(self, q: Question, wrong: list[str]) -> None:
        """The four options: the wrong ones in a stable order, the correct one at the position used
        least so far (ties broken by the question's hash), so no fixed position is a winning guess."""
        wrong = sorted(wrong, key=lambda w: _stable(q.question + w))
        low = min(self.positions)
        free = [i for i, n in enumerate(self.positions) if n == low]
        position = free[_stable(q.question) % len(free)]
        q.options = wrong[:position] + [q.answer] + wrong[position:]
        q.correct = position

    # -- checking ------------------------------------------------------------------------------

    def check(self, q: Question, chunk_text: str) -> Question:
        """Run every check, cheapest first; the first failure rejects `q` with its reason."""
        reason = checks.grounding(q, chunk_text, self.engine._similarity)
        if reason is None:
            reason = self.duplicates.check(q)
        if reason is None:
            reason = checks.answered_by_engine(q, lambda text: self.engine.ask(text, log=False))
        q.status, q.reason = ("rejected", reason) if reason else ("draft", None)
        if reason is None:
            self.duplicates.add(q)
            if q.kind == "mcq" and q.correct is not None:
                self.positions[q.correct] += 1
        return q

    def run(
        self,
        kinds: tuple[str, ...] = KINDS,
        per_section: int = 1,
        source_globs: tuple[str, ...] = (),
        on_question: OnQuestion | None = None,
        limit: int | None = None,
        per_source: int | None = None,
    ) -> RunReport:
        """Questions for every section: `per_section` each, their kinds taken in turn over the run.

        `limit` stops after that many sections; `per_source` takes only the first that many of each
        source (a sample of the whole course, as the benchmark uses)."""
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise KBError(f"Unknown kind {bad[0] if bad else ''!r}; choose from {', '.join(KINDS)}.")
        todo = sections(self.kb, source_globs)
        if per_source:
            taken: dict[int, int] = {}
            sample = []
            for section in todo:
                taken[section.source_id] = taken.get(section.source_id, 0) + 1
                if taken[section.source_id] <= per_source:
                    sample.append(section)
            todo = sample
        todo = todo[:limit]
        if not todo:
            raise KBError(f"{self.kb.path} has no passage long enough to make questions from.")
        report = RunReport()
        started = time.monotonic()
        turn = 0
        for number, section in enumerate(todo, 1):
            made: list[Question] = []
            # All of a passage's questions first, then their checks: the generation calls share the
            # passage's evaluated prefix, which the answer engine's calls would evict.
            for _ in range(per_section):
                kind = kinds[turn % len(kinds)]
                turn += 1
                made.append(self.make(section, kind, [m.question for m in made if m.question]))
            for q in made:
                self.check(q, section.text)
                store.save(self.kb, q)
                report.count(q, section.title)
                if on_question:
                    on_question(number, len(todo), q)
        report.seconds = time.monotonic() - started
        report.baselines = baselines(store.select(self.kb, ("draft", "approved"), ("mcq",)))
        return report


def baselines(questions: list[Question]) -> dict[str, float]:
    """How often always answering the longest option, or always the same position, would be right."""
    if not questions:
        return {}
    questions = [q for q in questions if len(q.options) == 4]  # a teacher's edit may leave fewer
    if not questions:
        return {}
    n = len(questions)
    longest = sum(max(range(4), key=lambda i: len(q.options[i])) == q.correct for q in questions) / n
    out = {"questions": n, "longest_option": round(longest, 3)}
    for position in range(4):
        out[f"always_{'ABCD'[position]}"] = round(sum(q.correct == position for q in questions) / n, 3)
    return out
