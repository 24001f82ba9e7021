"""`kb tune`: a KB's fusion chosen on its own labelled questions, recorded in kb_meta, used by search."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import pytest

from kb import KB, Ingester, KBError, Searcher
from kb.evaluate import load_questions
from kb.fusion import DEFAULT, Fusion, fuse, ranking
from kb.reports import format_tuning
from kb.tune import (
    GUARD_ALPHA,
    KEYWORDS_ALONE,
    MIN_QUESTIONS,
    VECTORS_ALONE,
    Case,
    firsts,
    gather,
    gold_chunks,
    grid,
    select,
    sign_test,
    tune,
)
from tests.helpers import COURSE, ROOT, TEST_PLUGINS, kb_cli

QUESTIONS = ROOT / "corpora" / "questions.jsonl"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sample course embedded by the deterministic test embedder, ingested once for the module.

    With that embedder the vector list is weak (hashed words), so the tuned setting leans on the
    keywords and differs from kb's default: the tests can see a change land."""
    import kb_test_plugins

    from kb.plugins import ensure_plugins_loaded, pm

    ensure_plugins_loaded()
    pm.register(kb_test_plugins, "kb_test_plugins")
    try:
        db = tmp_path_factory.mktemp("tune") / "course.db"
        with KB.open(db, create=True) as kb:
            Ingester(kb, embedder="test/hash-embedder").run([str(COURSE)])
    finally:
        pm.unregister(name="kb_test_plugins")
    return db


@pytest.fixture
def db(built, tmp_path, hash_embedder):
    """A private copy of the built course, with the test embedder registered for this test."""
    target = tmp_path / "course.db"
    shutil.copyfile(built, target)
    return target


def key(scores):
    return (scores.hit1, scores.hit5, scores.mrr)


def first_gold_by_search(db, fusion: Fusion, questions) -> list[int | None]:
    """Each question's first gold rank as `Searcher.search` returns hits (not tune's own fusing)."""
    with KB.open(db, readonly=True) as kb:
        searcher = Searcher(kb)
        assert searcher.fusion == fusion
        ranks = []
        for q in questions:
            hits = searcher.search(q.question, k=10)
            ranks.append(next((h.rank for h in hits if q.matches(h)), None))
    return ranks


def test_tuning_picks_a_setting_at_least_as_good_as_the_current_one(db):
    questions = load_questions(QUESTIONS)
    with KB.open(db, readonly=True) as kb:
        result = tune(kb, questions, record=False)
    assert result.before == DEFAULT
    assert result.n == sum(q.answerable and bool(q.expected_source) for q in questions)
    assert key(result.table["tuned"]) >= key(result.table["before"])
    # On this KB the keyword list is the better one: tuning finds it and gains at hit@1.
    assert result.table["tuned"].hit1 > result.table["before"].hit1
    assert result.changed and result.chosen in grid()


def test_the_recorded_fusion_is_what_search_uses(db):
    questions = [q for q in load_questions(QUESTIONS) if q.answerable and q.expected_source]
    before = first_gold_by_search(db, DEFAULT, questions)
    ran = kb_cli("tune", str(db), str(QUESTIONS), "--json", env_extra=TEST_PLUGINS)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    chosen = Fusion(**report["chosen"])
    with KB.open(db, readonly=True) as kb:
        meta = kb.meta()
    assert Fusion.from_meta(meta) == chosen != DEFAULT
    assert meta["fusion_tuned_questions"] == str(len(questions))
    after = first_gold_by_search(db, chosen, questions)
    # The table's figures are what searching the KB now gives, question by question.
    assert report["table"]["tuned"]["hit@1"] == round(sum(r == 1 for r in after) / len(after), 3)
    assert report["table"]["before"]["hit@1"] == round(sum(r == 1 for r in before) / len(before), 3)
    assert before != after
    explained = kb_cli("search", str(db), questions[0].question, "--explain", env_extra=TEST_PLUGINS)
    assert explained.returncode == 0, explained.stderr
    assert chosen.describe() in explained.stdout
    assert f"Tuned by kb tune on {len(questions)} questions" in explained.stdout


def test_hits_are_fused_as_the_recorded_setting_says(db):
    """Search's ranking after tuning equals the chosen fusion applied to the two lists by hand."""
    questions = load_questions(QUESTIONS)
    with KB.open(db, write=True) as kb:
        chosen = tune(kb, questions).chosen
    with KB.open(db, readonly=True) as kb:
        searcher = Searcher(kb)
        for q in questions[:8]:
            keyword, nearest, _ = searcher.lists(q.question)
            expected = ranking(fuse(chosen, keyword, nearest))[:5]
            assert [h.chunk_id for h in searcher.search(q.question, k=5)] == expected


def test_a_second_tuning_keeps_the_setting_and_writes_nothing(db):
    questions = load_questions(QUESTIONS)
    with KB.open(db, write=True) as kb:
        first = tune(kb, questions)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    with KB.open(db, write=True) as kb:
        second = tune(kb, questions)
        meta = kb.meta()
    assert second.before == second.chosen == first.chosen and not second.changed
    assert Fusion.from_meta(meta) == first.chosen
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_dry_run_writes_nothing(db):
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    ran = kb_cli("tune", str(db), str(QUESTIONS), "--dry-run", env_extra=TEST_PLUGINS)
    assert ran.returncode == 0, ran.stderr
    assert "Dry run: nothing recorded." in ran.stdout
    for label in ("before", "tuned", "keywords alone", "vectors alone"):
        assert label in ran.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    with KB.open(db, readonly=True) as kb:
        assert Fusion.from_meta(kb.meta()) == DEFAULT


def test_json_shape(db):
    ran = kb_cli("tune", str(db), str(QUESTIONS), "--dry-run", "--json", env_extra=TEST_PLUGINS)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert set(report) == {
        "db", "recorded", "questions", "not_found", "before", "chosen", "changed", "tried", "table", "passed_over",
    }  # fmt: skip
    assert report["recorded"] is False and report["not_found"] == []
    assert set(report["table"]) == {"before", "tuned", "keywords alone", "vectors alone"}
    for scores in report["table"].values():
        assert set(scores) == {"hit@1", "hit@5", "mrr"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert Fusion(**report["before"]) == DEFAULT
    assert report["tried"] == len(grid(DEFAULT))
    # On this KB the grid's best is trusted (it ties the keyword list alone): nothing was passed over.
    assert report["passed_over"] is None


def test_too_few_questions_are_refused_in_one_sentence(db, tmp_path):
    few = tmp_path / "few.jsonl"
    lines = QUESTIONS.read_text(encoding="utf-8").splitlines()
    answerable = [line for line in lines if json.loads(line)["answerable"]]
    unanswerable = [line for line in lines if not json.loads(line)["answerable"]]
    few.write_text("\n".join(answerable[: MIN_QUESTIONS - 1] + unanswerable), encoding="utf-8")
    ran = kb_cli("tune", str(db), str(few), env_extra=TEST_PLUGINS)
    assert ran.returncode == 1
    message = ran.stderr.strip()
    assert message.startswith(f"Error: Tuning needs at least {MIN_QUESTIONS} answerable questions")
    assert f"have {MIN_QUESTIONS - 1}" in message and "\n" not in message and "Traceback" not in message


def test_questions_whose_passage_is_not_in_the_kb_are_left_out_and_named(db, tmp_path):
    questions = load_questions(QUESTIONS)
    stray = tmp_path / "stray.jsonl"
    extra = {"id": "elsewhere", "question": "What is a syllabus?", "answerable": True, "expected_source": "other.pdf"}
    stray.write_text(QUESTIONS.read_text(encoding="utf-8") + json.dumps(extra) + "\n", encoding="utf-8")
    ran = kb_cli("tune", str(db), str(stray), "--dry-run", "--json", env_extra=TEST_PLUGINS)
    report = json.loads(ran.stdout)
    assert report["not_found"] == ["elsewhere"]
    assert report["questions"] == sum(q.answerable and bool(q.expected_source) for q in questions)


def test_gold_chunks_are_the_chunks_kb_eval_counts_as_hits(db):
    questions = [q for q in load_questions(QUESTIONS) if q.answerable]
    with KB.open(db, readonly=True) as kb:
        golds = gold_chunks(kb, questions)
        searcher = Searcher(kb)
        for q, gold in zip(questions[:10], golds):
            for hit in searcher.search(q.question, k=10):
                assert (hit.chunk_id in gold) == q.matches(hit)


def test_learner_copy_read_only_and_missing_files_are_refused(db, tmp_path):
    learner = tmp_path / "learner.db"
    assert kb_cli("export", str(db), str(learner), env_extra=TEST_PLUGINS).returncode == 0
    ran = kb_cli("tune", str(learner), str(QUESTIONS), env_extra=TEST_PLUGINS)
    assert ran.returncode == 1 and "is a learner copy (made by kb export)" in ran.stderr
    # A learner copy can still be measured.
    assert kb_cli("tune", str(learner), str(QUESTIONS), "--dry-run", env_extra=TEST_PLUGINS).returncode == 0
    with KB.open(db, readonly=True) as kb, pytest.raises(KBError, match="cannot be written here"):
        tune(kb, load_questions(QUESTIONS))
    missing = kb_cli("tune", str(tmp_path / "none.db"), str(QUESTIONS), env_extra=TEST_PLUGINS)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    no_file = kb_cli("tune", str(db), str(tmp_path / "none.jsonl"), env_extra=TEST_PLUGINS)
    assert no_file.returncode == 1 and "Cannot read" in no_file.stderr


def test_the_sign_test_is_the_exact_binomial_tail():
    assert sign_test(2, 0) == 0.25 > GUARD_ALPHA
    assert sign_test(3, 0) == 0.125 <= GUARD_ALPHA
    assert sign_test(6, 2) == 37 / 256
    assert sign_test(0, 0) == 1.0 and sign_test(1, 3) == 15 / 16


def test_a_fusion_that_beats_the_better_list_on_a_few_questions_only_is_not_trusted(db):
    """select() keeps the grid's best over the better list alone only when its wins pass the sign
    test: two wins and no loss (p = 0.25) could be luck among hundreds of settings, three (p = 0.125)
    are kept. The lists are this real KB's; the gold passages are set so that a fusion's first hit
    and the keyword list's each count where the test says."""
    with KB.open(db, readonly=True) as kb:
        cases, _ = gather(Searcher(kb), load_questions(QUESTIONS))
    fusion = Fusion("rrf", 0.5, 0.5, 50, 60)

    def top(rank, case: Case) -> int:
        return ranking(fuse(rank, case.keyword, case.nearest))[0]

    differ = [c for c in cases if top(fusion, c) != top(KEYWORDS_ALONE, c)]
    assert len(differ) >= 3, "this KB's lists no longer differ enough for the test"

    def relabelled(wins: int) -> list[Case]:
        # The first `wins` questions where the two differ: only the fusion's first chunk is gold;
        # every other question: both first chunks are, so the two tie there.
        won = {c.id for c in differ[:wins]}
        return [
            Case(c.id, frozenset({top(fusion, c)} if c.id in won else {top(fusion, c), top(KEYWORDS_ALONE, c)}),
                 c.keyword, c.nearest)
            for c in cases
        ]  # fmt: skip

    for wins, expected in ((2, KEYWORDS_ALONE), (3, fusion)):
        labelled = relabelled(wins)
        table = {s: firsts(labelled, s) for s in (KEYWORDS_ALONE, VECTORS_ALONE, fusion)}
        assert sum(r == 1 for r in table[fusion]) - sum(r == 1 for r in table[KEYWORDS_ALONE]) == wins
        assert select(table) == (fusion, expected)
    # A tie with the better list keeps the best: the current setting stays when tuning cannot tell.
    tied = {s: firsts(relabelled(0), s) for s in (fusion, KEYWORDS_ALONE, VECTORS_ALONE)}
    assert select(tied) == (fusion, fusion)


def test_the_table_says_when_the_best_was_passed_over(db):
    with KB.open(db, readonly=True) as kb:
        result = tune(kb, load_questions(QUESTIONS), record=False)
    assert "too few questions" not in format_tuning(result, str(db), recorded=False)
    fusion = Fusion("rrf", 0.5, 0.5, 50, 60)
    guarded = dataclasses.replace(result, chosen=KEYWORDS_ALONE, passed_over=fusion)
    text = format_tuning(guarded, str(db), recorded=False)
    assert f"The best fusion ({fusion.brief()}) beat the better list alone on too few questions" in text
    assert guarded.to_dict()["passed_over"] == dataclasses.asdict(fusion)
