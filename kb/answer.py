"""The answer engine, after PaperQA: retrieve, judge the evidence, answer from it, check every claim.

1. Retrieve candidates by hybrid search; a relevance gate computed from retrieval scores drops
   what is plainly off-topic (and abstains without loading a model when nothing is left).
2. Judge (capable models): the model's P(yes) that the passages answer, weighed with what retrieval
   says (`support()`), abstains below a threshold; then one grammar-forced call over the best
   candidates, each cut to its sentences nearest the question and labelled, names the sentences
   that answer (the supporting quotes, exact by construction). When it names none that stand, the
   model writes from the passages directly, as in `--fast`, under the same checks.
3. Write: the model answers from its checked quotes in the same conversation (llama.cpp re-reads
   nothing), streamed, citing [n].
4. Check (kb/checks.py): every sentence must be backed by what it cites; repetitions, loops and
   unfinished sentences go. When nothing stands, the answer is the quotes themselves.

Models that cannot judge (the low-memory tier) and `--fast` skip step 2: retrieval alone decides
whether the evidence answers (`grounding()`), the model writes from the gated passages directly and
the same checks apply.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from . import prompts
from .db import transaction
from .errors import KBError
from .evidence import Verdict, excerpt_units, focus, judge_constraint, labelled, sentence_ids, verdict_from, where
from .grounding import MAX_ANSWER_SENTENCES, check_answer, coverage, declines, extract, looping
from .injection import as_evidence, clean_answer
from .llm import LLM, Generation, load_llm  # noqa: F401 - load_llm: kb_plugin and scripts import it from here
from .search import Searcher
from .store import KB, utcnow
from .text import sentence_ends, sentences_and_pairs, with_citations
from .types import Answer, Evidence, Hit

MAX_QUESTION_CHARS = 2000
ABSTAIN_TEXT = "The knowledge base does not answer this question."

Stage = Callable[[str], None]
"""on_stage(name): "retrieving", "judging", "writing" — what the engine is doing now."""


@dataclass
class AskSettings:
    """How `kb ask` works; every field is logged with the answer."""

    candidates: int = 8
    """Chunks retrieved by hybrid search."""
    max_evidence: int = 4
    """Most passages shown to the model."""
    min_score: float = 2.5
    """Passages below this relevance (0-10, from retrieval) are dropped; none left means abstain."""
    keep_margin: float = 3.0
    """Passages more than this below the best one are dropped."""
    excerpt_chars: int = 1400
    """All passages together are cut to about this many characters (~350 prompt tokens): the model
    reads prompts at ~95 tokens/s on 2 cores, so this bounds the wait for the first word."""
    fast: bool = False
    """Skip the judge call: the model writes from the gated passages directly."""
    judge: str = "auto"
    """"auto": the model judges when it can (the default model, or one you chose); "llm": always;
    "retrieval": never (retrieval scores alone decide what is evidence)."""
    extract_only: bool = False
    """No model at all: the answer is the evidence's own best sentences."""
    min_support: float = 0.32
    """Below this support (see `support()`: the model's P(yes) that the passages answer the question,
    less what retrieval says against it) kb abstains before writing a word. Chosen with the weights in
    `support()` on development questions nobody here wrote (100 + 100 SciQ from offsets the reported
    run never asks, benchmarks/bench_quality.py --calibrate): SciQ abstained on 85% of held-out
    questions (96% of those whose answer is in no ingested passage) and on 8% of answerable ones,
    where the gate without the spread term (0.47) did on 81% (98%) and 10%. The course's 18
    near-subject traps against its 34 answerable questions: 78% and 12% (before: 78% and 15%). No
    threshold on these signals reaches 90% at 5% on SciQ: in two-fold cross-validation a gate fitted
    for 5% false abstention abstained on 78% of held-out questions, and about half of the held-out
    questions' answers do occur in the ingested half."""
    min_grounding: float = 0.64
    """Without a judge (the low-memory tier, `--fast`, extraction) nothing but retrieval can abstain, and
    the relevance gate lets through every question on the course's subject: below this `grounding()`
    kb abstains. Chosen on the development questions min_support was (benchmarks/bench_quality.py
    --calibrate): SciQ abstained on 74% of held-out questions and 5% of answerable ones (before:
    none), the course's near-subject traps on 33% at 6% of its answerable questions (the two it
    loses, the rain shadow and Darcy's law, score relevance 4.5 of 10: their passages use other
    words than the question)."""
    judge_tokens: int = 64
    """The grammar closes a reply naming three sentences in about 25 tokens (about 10 when llama.cpp is
    given its opening and no "sufficient" is asked); the rest is room for a server that ignores the
    schema and quotes one sentence's text instead."""
    answer_tokens: int = 160
    """One to three sentences at ~29 tokens/s on 2 cores; generation also stops after
    MAX_ANSWER_SENTENCES or at a loop."""


def relevance(question: str, hit: Hit) -> float:
    """Relevance 0-10 from the cosine similarity to the question and the share of its words present.

    Calibrated on corpora/questions.jsonl with all-MiniLM-L6-v2: every answerable question's best
    chunk scores >= 4.3 and every off-topic one's <= 1.5, hence the gate at 2.5. Questions near the
    course's subject that it does not answer score 3.6-5.6: retrieval alone cannot tell them
    apart, the judge can.
    """
    similarity = 1.0 - (hit.distance if hit.distance is not None else 1.0)
    covered = coverage(question, f"{hit.locator.heading or ''} {hit.text}")
    raw = 0.75 * similarity + 0.25 * covered
    return round(max(0.0, min(10.0, (raw - 0.15) / 0.55 * 10.0)), 2)


def grounding(question: str, evidence: list[Evidence]) -> dict:
    """How far retrieval alone says the evidence answers: the best passage's relevance (0-10) and the
    largest share of the question's content words one sentence (or pair of neighbouring sentences)
    of the evidence holds, 3:1 (`grounding`, 0-1).

    An answer is nearly always one sentence's: a question whose words are spread thin over a
    passage is on its subject, not answered by it. On SciQ development questions this needs no
    model and separates as well as the support score with the model's P(yes) does (cross-validated
    AUC 0.93 either way).
    """
    best = max(e.score for e in evidence)
    held = max((coverage(question, unit) for e in evidence for unit in sentences_and_pairs(e.hit.text)), default=0.0)
    return {
        "relevance": round(best, 2),
        "sentence_covered": round(held, 3),
        "grounding": round(0.75 * best / 10.0 + 0.25 * held, 4),
    }


SUPPORT_RELEVANCE_WEIGHT = 0.5
SUPPORT_MISSING_WEIGHT = 0.1
SUPPORT_SPREAD_WEIGHT = 0.4


def support(p_yes: float, best_relevance: float, covered: float, best_covered: float = 1.0) -> float:
    """How far the evidence answers the question: P(yes), less the best passage's shortfall from full
    relevance (0-10 scale), the share of the question's content words no passage contains, and the
    share the best-covering passage lacks.

    A small model says yes to passages on the right subject that do not answer (P(yes) 0.59 to "what
    is the residence time of water in a swamp or marsh?" over the course's residence times of other
    stores); retrieval knows the best passage scores 6.1 of 10 and that "swamp" and "marsh" are in
    none of them. An answer is nearly always one passage's: when the question's words are found only
    spread over several passages (its subject in one, its property in another), none of them says it.
    On 100 + 100 SciQ development questions P(yes) alone had AUC 0.96; the spread term halved false
    abstention at the same abstention (see AskSettings.min_support).
    """
    return (
        p_yes
        - SUPPORT_RELEVANCE_WEIGHT * max(0.0, 10.0 - best_relevance) / 10.0
        - SUPPORT_MISSING_WEIGHT * (1.0 - covered)
        - SUPPORT_SPREAD_WEIGHT * (1.0 - best_covered)
    )


def enough(text: str) -> bool:
    """Stop the answer after the sentences the checks would keep, or when it loops."""
    return sentence_ends(text) >= MAX_ANSWER_SENTENCES or looping(text)


def check_question(question: str) -> str:
    question = " ".join(question.split())
    if not question:
        raise KBError("The question is empty.")
    if len(question) > MAX_QUESTION_CHARS:
        raise KBError(f"The question is too long ({len(question):,} characters; the limit is {MAX_QUESTION_CHARS:,}).")
    return question


_ENGLISH_HINTS = frozenset("the is are of to what how why which does do and with can".split())


def language_warning(question: str) -> str | None:
    """A note for questions that do not look English: the default embedding model is English-only."""
    words = [w.lower() for w in re.findall(r"[^\W\d_]+", question)]
    if not words:
        return None
    letters = "".join(words)
    latin = sum(1 for ch in letters if ch.isascii()) / len(letters)
    if latin < 0.8 or (len(words) >= 4 and not _ENGLISH_HINTS & set(words)):
        return (
            "This question does not look English; the default embedding model (all-MiniLM-L6-v2) is "
            "English-only, so matches may be poor."
        )
    return None


class AnswerEngine:
    """Answers questions from one KB; the LLM is created on first need (abstaining needs none)."""

    def __init__(
        self,
        kb: KB,
        llm_factory: Callable[[], LLM],
        settings: AskSettings | None = None,
        searcher: Searcher | None = None,
    ):
        self.kb = kb
        self.settings = settings or AskSettings()
        self.searcher = searcher or Searcher(kb)
        self._llm_factory = llm_factory
        self._llm: LLM | None = None
        self.load_seconds = 0.0

    def configure(self, settings: AskSettings, llm_factory: Callable[[], LLM]) -> None:
        """Settings and model for the next questions (a server's per-request options). The factory is
        asked again on next need; a factory that returns the model already loaded costs nothing."""
        self.settings = settings
        if llm_factory is not self._llm_factory:
            self._llm_factory = llm_factory
            self._llm = None

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            started = time.monotonic()
            self._llm = self._llm_factory()
            self.load_seconds = time.monotonic() - started
        return self._llm

    def mode(self) -> str:
        """ "extract", "direct" (the model writes from the passages) or "judge" (quotes first)."""
        s = self.settings
        if s.extract_only:
            return "extract"
        if s.fast or s.judge == "retrieval":
            return "direct"
        if s.judge == "llm" or getattr(self.llm, "judges", True):
            return "judge"
        return "direct"

    def ask(
        self,
        question: str,
        on_token: Callable[[str], None] | None = None,
        log: bool = True,
        on_stage: Stage | None = None,
    ) -> Answer:
        question = check_question(question)
        stage = on_stage or (lambda name: None)
        timings: dict[str, float] = {}
        started = time.monotonic()
        stage("retrieving")
        # Course text is data: sentences that address a model, and markup, never reach the model,
        # a quote or a support check (search results keep the text as written).
        hits = as_evidence(self.searcher.search(question, k=self.settings.candidates))
        evidence = self._gate(question, hits)
        timings["retrieval_s"] = time.monotonic() - started

        mode = self.mode() if evidence else ""
        # Without a judge, retrieval decides alone whether the evidence answers.
        grounds = grounding(question, evidence) if evidence and mode != "judge" else {}
        if not evidence:
            answer = self._abstain(question, hits, "retrieval")
        elif grounds and grounds["grounding"] < self.settings.min_grounding:
            answer = self._abstain(question, hits, "grounding")
            answer.checks["grounding"] = grounds
            answer.checks["mode"] = mode
        else:
            if mode == "extract":
                answer = self._extractive(question, evidence)
            elif mode == "judge":
                answer = self._judged(question, evidence, hits, on_token, stage, timings, started)
            else:
                answer = self._direct(question, evidence, hits, on_token, stage, timings, started)
            answer.checks["mode"] = mode
            if grounds:
                answer.checks["grounding"] = grounds
        if self.load_seconds:
            timings["model_load_s"] = self.load_seconds
        timings["total_s"] = time.monotonic() - started
        # When the model streamed nothing, the first words the learner sees come at the end.
        timings.setdefault("first_token_s", timings["total_s"])
        answer.timings = timings
        answer.settings = {**asdict(self.settings), **answer.settings}
        answer.model = self._llm.describe() if self._llm is not None else {}
        # Nothing a client could render into a request elsewhere: no images, no URL kb did not make.
        answer.text = clean_answer(answer.text, [e.hit.link for e in answer.cited])
        # A KB made with a multilingual embedder expects questions in any language.
        multilingual = getattr(self.searcher.embedder, "multilingual", False)
        warning = None if multilingual else language_warning(question)
        if warning:
            answer.warnings.append(warning)
        if log:
            try:
                self.log(answer)
            except Exception as exc:  # a locked or read-only file must not cost the learner the answer
                answer.warnings.append(f"The answer could not be logged in the KB ({exc}).")
        return answer

    # -- the steps ---------------------------------------------------------------------------

    def _gate(self, question: str, hits: list[Hit]) -> list[Evidence]:
        """The retrieval-score gate: candidates relevant enough to show the model, best first."""
        s = self.settings
        scored = sorted(((relevance(question, h), h) for h in hits), key=lambda p: -p[0])
        best = scored[0][0] if scored else 0.0
        kept = [(score, h) for score, h in scored if score >= s.min_score and score >= best - s.keep_margin]
        evidence = [Evidence(key=i, hit=h, score=score) for i, (score, h) in enumerate(kept[: s.max_evidence], 1)]
        budget = max(200, s.excerpt_chars // max(1, len(evidence)))
        shown: set[str] = set()
        for piece in evidence:
            piece.units, piece.nearest = excerpt_units(question, piece.hit.text, budget, self._similarity, shown)
            piece.excerpt = " ".join(piece.units)
        # A passage whose sentences all appeared in a better one (overlapping chunks) adds nothing.
        evidence = [e for e in evidence if e.excerpt]
        for key, piece in enumerate(evidence, start=1):
            piece.key = key
        return evidence

    def _excerpts(self, evidence: list[Evidence], labels: bool = False) -> list[tuple[int, str, str]]:
        """(key, where, text) as the model reads each passage; `labels`: its sentences labelled (a), (b)…
        for the judge to name (the verdict call reads the same text, so the two share one prefix)."""
        return [(e.key, where(e.hit), labelled(e.units) if labels else e.excerpt) for e in evidence]

    def _judged(self, question, evidence, hits, on_token, stage, timings, started) -> Answer:
        stage("judging")
        phase = time.monotonic()
        excerpts = self._excerpts(evidence, labels=True)
        # The verdict first, as a probability: the model's P("Yes") to "do the passages answer this
        # question, about the very thing it names?" (AUC 0.96 on SciQ development questions, where the
        # JSON's own "sufficient" said true to nearly everything). Below the threshold kb abstains
        # before generating a word.
        p_yes = self.llm.yes_probability(prompts.verify_messages(question, excerpts))
        if p_yes is not None:
            grounds = _support_checks(question, evidence, p_yes)
            if grounds["support"] < self.settings.min_support:
                timings["evidence_s"] = time.monotonic() - phase
                answer = self._abstain(question, hits, "judge")
                answer.checks["judge"] = grounds
                return answer
        # With a probability the verdict is decided: the judge only names sentences.
        messages = prompts.judge_messages(question, excerpts, verdict=p_yes is None)
        ids = sentence_ids({e.key: e.units for e in evidence})
        constraint = judge_constraint(list(ids), verdict=p_yes is None)
        result = self.llm.generate(messages, max_tokens=self.settings.judge_tokens, constraint=constraint)
        verdict = verdict_from(result.text, {e.key: e.hit.text for e in evidence}, ids)
        verdict.p_yes = p_yes
        timings["evidence_s"] = time.monotonic() - phase
        checks = _verdict_checks(verdict)
        if p_yes is not None:
            checks["judge"].update(grounds)
        focused = focus(question, verdict.quotes)
        if len(focused) < len(verdict.quotes):
            checks["judge"]["set_aside"] = [key for key in verdict.quotes if key not in focused]
        verdict.quotes = focused
        kept = [e for e in evidence if e.key in verdict.quotes]
        # Without a probability (a server that gives no logprobs) the model's own word decides.
        if p_yes is None and (not kept or not verdict.sufficient):
            answer = self._abstain(question, hits, "judge")
            answer.checks.update(checks)
            return answer
        if not kept:
            # The support score said the passages answer, but the judge named no sentence that stands
            # (the quoting judge did so for 2 of 60 answerable SciQ questions, none held out): the model
            # writes from the passages, as in --fast; the checks decide, and a "does not say" abstains.
            answer = self._direct(question, evidence, hits, on_token, stage, timings, started)
            answer.checks.update(checks)
            answer.checks["judge"]["fallback"] = "direct"
            return answer
        for piece in kept:
            piece.quotes = verdict.quotes[piece.key]
        # A small model naming labels leans to a passage's first sentence ("1a"): the first kept
        # passage's sentence nearest the question joins its quotes when the judge passed it over
        # ("How much rain does one tip record?": named 1a, "records the timing of rain as well as
        # the amount", over 1c, "usually equivalent to 0.2 mm").
        lead = kept[0]
        if lead.nearest and lead.nearest not in lead.quotes and len(lead.quotes) < 3:
            lead.quotes = sorted([*lead.quotes, lead.nearest], key=_position(lead.units))
        quotes = [(e.key, q) for e in kept for q in e.quotes]
        generation = self._write(
            prompts.write_messages(messages, result.text, quotes, question), on_token, stage, timings, started
        )
        answer = check_answer(question, generation.text, kept, self._similarity)
        answer.checks.update(checks)
        return answer

    def _write(self, messages, on_token, stage, timings, started) -> Generation:
        """The streamed answer call, timed; it stops after enough sentences or at a loop."""
        stage("writing")
        phase = time.monotonic()
        generation = self.llm.generate(
            messages, max_tokens=self.settings.answer_tokens, on_token=on_token, stop=prompts.ANSWER_STOPS, until=enough
        )
        timings["answer_s"] = time.monotonic() - phase
        if generation.first_token_s is not None:
            timings["first_token_s"] = phase - started + generation.first_token_s
        return generation

    def _direct(self, question, evidence, hits, on_token, stage, timings, started) -> Answer:
        messages = prompts.direct_messages(question, self._excerpts(evidence))
        generation = self._write(messages, on_token, stage, timings, started)
        answer = check_answer(question, generation.text, evidence, self._similarity)
        if answer.origin == "extract" and declines(generation.text) and getattr(self.llm, "judges", False):
            # A model able to judge said the passages do not answer: believe the "no", never a "yes".
            declined = self._abstain(question, hits, "model declined")
            declined.raw_text = generation.text
            return declined
        return answer

    def _extractive(self, question: str, evidence: list[Evidence]) -> Answer:
        chosen = extract(question, evidence, self._similarity)
        by_key = {e.key: e for e in evidence}
        return Answer(
            question=question,
            text=" ".join(with_citations(sentence, [key]) for key, sentence in chosen),
            abstained=False,
            evidence=evidence,
            cited=[by_key[k] for k in dict.fromkeys(k for k, _ in chosen)],
            origin="extract",
        )

    def _abstain(self, question: str, hits: list[Hit], by: str) -> Answer:
        answer = Answer(question=question, abstained=True, origin="none", nearest=hits[:3], text=ABSTAIN_TEXT)
        answer.checks = {"abstained_by": by}
        return answer

    def _similarity(self, text: str, candidates: list[str]) -> list[float]:
        """Cosine similarity of `text` to each candidate, with the KB's own embedding model."""
        import numpy as np

        from .search import embed_query

        embedder = self.searcher.embedder  # its embed_query remembers texts it has embedded
        if embedder is None or not candidates:
            return [0.0] * len(candidates)
        query = np.asarray(embed_query(embedder, text), dtype=np.float32)
        return [float(np.asarray(embed_query(embedder, c), dtype=np.float32) @ query) for c in candidates]

    # -- log -------------------------------------------------------------------------------

    def log(self, answer: Answer) -> None:
        """Record the answer in the KB's answers table, whole or not at all."""
        if self.kb.readonly:
            return
        with transaction(self.kb.conn):
            self.kb.conn.execute(
                "INSERT INTO answers(asked_at, question, answer, abstained, citations, model, settings, timings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    utcnow(),
                    answer.question,
                    answer.text,
                    int(answer.abstained),
                    json.dumps([e.citation() for e in answer.cited], ensure_ascii=False),
                    json.dumps(answer.model),
                    json.dumps({**answer.settings, "origin": answer.origin, "checks": answer.checks}),
                    json.dumps({k: round(v, 3) for k, v in answer.timings.items()}),
                ),
            )


def _position(units: list[str]) -> Callable[[str], int]:
    """Sort key: where a quote stands among a passage's shown sentences (reading order)."""
    return lambda quote: units.index(quote) if quote in units else len(units)


def _verdict_checks(verdict: Verdict) -> dict:
    checks: dict = {"judge": {"sufficient": verdict.sufficient, "quotes": sum(map(len, verdict.quotes.values()))}}
    if verdict.rejected:
        checks["judge"]["rejected_quotes"] = [q for _, q in verdict.rejected]
    if not verdict.parsed:
        checks["judge"]["unparsed"] = verdict.raw[:500]
    return checks


def _support_checks(question: str, evidence: list[Evidence], p_yes: float) -> dict:
    """What the support score was made of, as the answer's checks record it."""
    best = max(e.score for e in evidence)
    texts = [f"{e.hit.locator.heading or ''} {e.hit.text}" for e in evidence]
    covered = coverage(question, " ".join(texts))
    best_covered = max(coverage(question, text) for text in texts)
    return {
        "p_yes": round(p_yes, 4),
        "relevance": round(best, 2),
        "covered": round(covered, 3),
        "best_covered": round(best_covered, 3),
        "support": round(support(p_yes, best, covered, best_covered), 4),
    }
