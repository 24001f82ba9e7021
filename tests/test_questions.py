"""`kb questions` without the real model: the checks on planted questions, the table and its commands,
every export read back by an independent reader, and what the learner copy carries.

The KB is real (two documents of the sample course, embedded by the deterministic test embedder);
the model is the stand-in of tests/questions_llm.py, since what is under test here is kb's code.
The real model's questions and checks are tested in test_questions_real.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3 as stdlib_sqlite3
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from gift_parser import parse as parse_gift
from questions_llm import QuestionsLLM

from kb import KB
from kb.questions import BLANK, Question, checks, store
from kb.questions.generate import Generator, baselines
from tests.helpers import COURSE, TEST_PLUGINS, kb_cli

SOURCES = ["field-guide-measuring-rainfall.md", "handout-soil-moisture-and-infiltration.docx"]
GAUGE = "It has a copper or plastic body and a funnel with a sharp brass rim exactly 5 inches (127 mm) in diameter."


@pytest.fixture(scope="module")
def kb_file(tmp_path_factory):
    """Two documents of the sample course in a real KB file, embedded by the test embedder."""
    folder = tmp_path_factory.mktemp("course")
    for name in SOURCES:
        shutil.copy(COURSE / name, folder / name)
    db = folder.parent / "questions.db"
    proc = kb_cli("ingest", str(db), str(folder), "--embedder", "hash", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    return db


@pytest.fixture(scope="module")
def made(kb_file):
    """`kb questions` over the first three passages, four questions each (every kind), by the stand-in."""
    with QuestionsLLM() as llm:
        proc = kb_cli(
            "questions",
            str(kb_file),
            "--llm-url",
            llm.url,
            "--per-section",
            "4",
            "--limit",
            "3",
            "--json",
            env_extra=TEST_PLUGINS,
        )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def gauge_chunk(db) -> tuple[int, str]:
    with KB.open(db) as kb:
        for chunk_id, text in kb.conn.execute("SELECT id, text FROM chunks"):
            if GAUGE in " ".join(text.split()):
                return chunk_id, text
    raise AssertionError("the gauge passage is not in the KB")


def test_the_command_makes_every_kind_saves_all_and_reports_why(made, kb_file):
    assert made["made"] == 12
    assert set(made["by_kind"]) == {"short", "mcq", "truefalse", "cloze"}
    assert made["kept"] + sum(made["rejected"].values()) == made["made"]
    assert made["kept"] >= 1
    assert all(row["made"] for row in made["by_source"].values())
    with KB.open(kb_file) as kb:
        saved = store.select(kb)
        chunk_text = dict(kb.conn.execute("SELECT id, text FROM chunks"))
    assert len(saved) == 12
    for q in saved:
        assert q.chunk_id in chunk_text and q.locator and q.source_id
        if q.status == "rejected":
            assert q.reason in made["rejected"]
            continue
        # A kept question passed every check: its quote is in its chunk, and the answer engine answered it.
        assert checks.grounding(Question(**{**q.to_dict(), "checks": {}}), chunk_text[q.chunk_id]) is None
        engine = q.checks["engine"]
        assert not engine["abstained"] and engine["agrees"]
        assert_engine_agrees(q, chunk_text)


def assert_engine_agrees(q, chunk_text: dict[int, str]) -> None:
    """The engine cited the question's own chunk, or a cited chunk that holds its quote or backs its answer."""
    engine = q.checks["engine"]
    if engine["agrees"] == "its own passage":
        assert q.chunk_id in engine["cited"]
        return
    other = int(engine["agrees"].removeprefix("passage "))
    text = chunk_text[other]
    assert other in engine["cited"]
    assert checks.occurs(q.quote, text) or checks.Passage(text).support(q.correct_text) >= checks.CITED_SUPPORT


def test_the_report_is_readable_without_json(kb_file, tmp_path):
    db = tmp_path / "copy.db"
    shutil.copy(kb_file, db)
    with QuestionsLLM() as llm:
        proc = kb_cli(
            "questions",
            str(db),
            "--llm-url",
            llm.url,
            "--kinds",
            "cloze",
            "--source",
            "handout*",
            "--limit",
            "1",
            env_extra=TEST_PLUGINS,
        )
    assert proc.returncode == 0, proc.stderr
    assert "Made 1, kept" in proc.stdout and "Handout: measuring soil moisture" in proc.stdout, proc.stdout
    bad = kb_cli(
        "questions", str(db), "--llm-url", "http://127.0.0.1:9/v1", "--source", "nothing*", env_extra=TEST_PLUGINS
    )
    assert bad.returncode == 1 and "matches no source" in bad.stderr and "Traceback" not in bad.stderr


def planted(chunk_id: int) -> dict[str, Question]:
    def q(kind, question, answer, quote=GAUGE, **more):
        return Question(kind=kind, question=question, answer=answer, quote=quote, chunk_id=chunk_id, **more)

    return {
        "answer_not_in_quote": q("short", "How wide is the funnel of the Met Office standard gauge?", "8 inches"),
        "leans_on_text": q("short", "According to the passage, how wide is the funnel of the gauge?", "5 inches"),
        "quote_not_in_chunk": q("short", "How wide is the funnel?", "5 inches", quote="The funnel is 5 inches wide."),
        "not_one_correct": q(
            "mcq",
            "How wide is the funnel of the Met Office standard gauge?",
            "5 inches",
            options=["5 inches", "127 mm", "8 inches", "2 metres"],
            correct=0,
        ),
        "options": q(
            "mcq",
            "How wide is the funnel of the Met Office standard gauge?",
            "5 inches",
            options=["5 inches", "8 inches", "8 inches", "2 metres"],
            correct=0,
        ),
        "longest_correct": q(
            "mcq",
            "How wide is the funnel of the Met Office standard gauge?",
            "exactly 5 inches (127 mm) in diameter",
            options=["8 inches", "exactly 5 inches (127 mm) in diameter", "2 metres", "1 foot"],
            correct=1,
        ),
        "cloze_blanks": q(
            "cloze", f"It has a {BLANK} or plastic body and a funnel with a sharp {BLANK} rim.", "copper"
        ),
    }


def test_planted_bad_questions_are_rejected_with_their_reason(kb_file):
    chunk_id, text = gauge_chunk(kb_file)
    for reason, question in planted(chunk_id).items():
        assert checks.grounding(question, text) == reason, (reason, question.checks)
    good = Question(
        kind="mcq",
        question="How wide is the funnel of the Met Office standard gauge?",
        answer="5 inches",
        quote=GAUGE,
        chunk_id=chunk_id,
        options=["8 inches", "5 inches", "2 metres", "1 foot"],
        correct=1,
    )
    assert checks.grounding(good, text) is None
    false = Question(
        kind="truefalse",
        question="The Met Office gauge has a funnel 9 inches across.",
        answer="false",
        quote=GAUGE,
        chunk_id=chunk_id,
    )
    assert checks.grounding(false, text) is None
    cloze = Question(
        kind="cloze", question=GAUGE.replace("brass", BLANK), answer="brass", quote=GAUGE, chunk_id=chunk_id
    )
    assert checks.grounding(cloze, text) is None


def test_a_near_duplicate_is_rejected(kb_file, hash_embedder):
    from kb.plugins import get_embedder
    from kb.search import embed_query

    embedder = get_embedder(hash_embedder)
    duplicates = checks.Duplicates(lambda text: embed_query(embedder, text))
    first = Question(
        kind="short", question="How wide is the funnel of the gauge?", answer="5 inches", quote=GAUGE, id=1
    )
    duplicates.add(first)
    again = Question(kind="short", question="How wide is the funnel of the gauge?", answer="5 inches", quote=GAUGE)
    assert duplicates.check(again) == "duplicate" and again.checks["duplicate_of"] == 1
    other = Question(
        kind="short",
        question="What does a weighing gauge measure with a load cell?",
        answer="the mass of the collected water",
        quote=GAUGE,
    )
    assert duplicates.check(other) is None


def test_the_correct_option_is_not_guessable_by_position():
    generator = Generator.__new__(Generator)  # placing options needs no model
    generator.positions = [0, 0, 0, 0]
    made = []
    for n in range(40):
        q = Question(kind="mcq", question=f"Question number {n}?", answer=f"right {n}", quote="")
        generator.place(q, [f"wrong a {n}", f"wrong b {n}", f"wrong c {n}"])
        generator.positions[q.correct] += 1
        assert q.options[q.correct] == q.answer and len(q.options) == 4
        made.append(q)
    scores = baselines(made)
    assert all(scores[f"always_{letter}"] == 0.25 for letter in "ABCD"), scores
    assert len({q.correct for q in made[:8]}) == 4  # not a fixed rotation either way round: all used early


# -- the table and its commands -------------------------------------------------------------------------


@pytest.fixture
def decided(kb_file, made, tmp_path):
    """A copy of the KB whose kept questions are approved, bar the last, which stays a draft."""
    db = tmp_path / "decided.db"
    shutil.copy(kb_file, db)
    with KB.open(db) as kb:
        kept = [q.id for q in store.select(kb, ("draft",))]
    assert len(kept) >= 2, made
    proc = kb_cli("questions", "approve", str(db), *map(str, kept[:-1]))
    assert proc.returncode == 0 and f"Approved {len(kept) - 1} question" in proc.stdout, proc.stderr
    return db


def test_list_approve_reject_and_edit(decided, tmp_path):
    listed = kb_cli("questions", "list", str(decided), "--status", "approved", "--json")
    assert listed.returncode == 0, listed.stderr
    approved = json.loads(listed.stdout)
    assert approved and all(q["status"] == "approved" for q in approved)
    target = approved[0]["id"]
    assert kb_cli("questions", "reject", str(decided), str(target)).returncode == 0
    with KB.open(decided) as kb:
        assert store.get(kb, target).status == "rejected" and store.get(kb, target).reason == "teacher"
    # $EDITOR is any program that edits the file it is given: here one that rewrites the question line.
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
        "new = 'question: What is the edited question?'\n"
        "lines = [new if l.startswith('question:') else l for l in p.read_text().splitlines()]\n"
        "p.write_text('\\n'.join(lines) + '\\n')\n"
    )
    proc = kb_cli("questions", "edit", str(decided), str(target), env_extra={"EDITOR": f"{sys.executable} {editor}"})
    assert proc.returncode == 0 and "Saved question" in proc.stdout, proc.stderr
    with KB.open(decided) as kb:
        edited = store.get(kb, target)
    assert edited.question == "What is the edited question?" and edited.checks["edited"]
    missing = kb_cli("questions", "approve", str(decided), "999999")
    assert missing.returncode == 1 and "no question 999999" in missing.stderr


def test_nothing_approved_nothing_exported(kb_file, made):
    proc = kb_cli("questions", "export", str(kb_file), "-", "--format", "gift")
    assert proc.returncode == 1 and "no approved questions" in proc.stderr and "Traceback" not in proc.stderr


# -- exports, read back -----------------------------------------------------------------------------------


SPECIAL = "Which of ~ = # { } : \\ marks does GIFT escape?"


def sample(chunk_id: int) -> list[Question]:
    """One approved question of each kind, one with every character GIFT reserves."""
    common = {
        "chunk_id": chunk_id,
        "source_id": 1,
        "locator": "Field guide, § Types > The standard manual gauge",
        "quote": GAUGE,
        "status": "approved",
    }
    return [
        Question(kind="short", question=SPECIAL, answer="all: ~ = # { } : \\", id=1, **common),
        Question(
            kind="mcq",
            question="How wide is the funnel?",
            answer="5 inches",
            id=2,
            options=["8 inches", "5 inches", "2 metres", "1 foot"],
            correct=1,
            **common,
        ),
        Question(kind="truefalse", question="The funnel is 9 inches wide.", answer="false", id=3, **common),
        Question(kind="cloze", question=f"The rim is made of {BLANK}.", answer="brass", id=4, **common),
    ]


@pytest.fixture
def exported(kb_file, tmp_path):
    db = tmp_path / "export.db"
    shutil.copy(kb_file, db)
    chunk_id, _ = gauge_chunk(db)
    with KB.open(db) as kb:
        kb.conn.execute("DELETE FROM questions")
        for q in sample(chunk_id):
            q.id = None
            store.save(kb, q)
    return db


def test_gift_is_parsed_back(exported, tmp_path):
    out = tmp_path / "quiz.gift"
    proc = kb_cli("questions", "export", str(exported), str(out), "--format", "gift")
    assert proc.returncode == 0, proc.stderr
    parsed = parse_gift(out.read_text())
    assert [q["kind"] for q in parsed] == ["shortanswer", "multichoice", "truefalse", "missingword"]
    short, mcq, tf, cloze = parsed
    assert short["text"] == SPECIAL and short["answers"][0]["text"] == "all: ~ = # { } : \\"
    assert [a["text"] for a in mcq["answers"]] == ["8 inches", "5 inches", "2 metres", "1 foot"]
    assert [a["correct"] for a in mcq["answers"]] == [False, True, False, False]
    assert tf["answer"] is False
    assert cloze["text"] == "The rim is made of" and cloze["after"] == "." and cloze["answers"][0]["text"] == "brass"
    for q in parsed:
        assert q["general_feedback"].startswith("Source: Field guide, § Types > The standard manual gauge.")
        assert GAUGE in q["general_feedback"]
    with pytest.raises(ValueError):
        parse_gift("An unescaped { brace {=x}")  # the reader is strict: a missing escape would show


def test_moodle_xml_has_the_structure_moodles_importer_reads(exported):
    proc = kb_cli("questions", "export", str(exported), "-", "--format", "moodle-xml")
    assert proc.returncode == 0, proc.stderr
    quiz = ET.fromstring(proc.stdout.encode())
    assert quiz.tag == "quiz"
    items = [q for q in quiz.findall("question") if q.get("type") != "category"]
    assert [q.get("type") for q in items] == ["shortanswer", "multichoice", "truefalse", "cloze"]
    for q in items:
        assert q.findtext("name/text") and q.findtext("questiontext/text")
        assert q.find("questiontext").get("format") == "html"
        assert "Source: Field guide" in q.findtext("generalfeedback/text")
        fractions = [float(a.get("fraction")) for a in q.findall("answer")]
        if q.get("type") == "cloze":
            assert q.findtext("questiontext/text").count("{1:SHORTANSWER:=brass}") == 1 and not fractions
        else:
            assert fractions.count(100.0) == 1 and all(f in (0.0, 100.0) for f in fractions)
    mcq = items[1]
    assert mcq.findtext("single") == "true" and len(mcq.findall("answer")) == 4
    assert [a.findtext("text") for a in items[2].findall("answer")] == ["true", "false"]


def anki_notes(path: Path, tmp_path: Path) -> list[dict]:
    """The notes of an .apkg, read from the SQLite collection inside the zip."""
    with zipfile.ZipFile(path) as archive:
        assert "collection.anki2" in archive.namelist()
        archive.extract("collection.anki2", tmp_path)
    conn = stdlib_sqlite3.connect(tmp_path / "collection.anki2")
    rows = conn.execute("SELECT id, guid, mid, flds, tags FROM notes ORDER BY id").fetchall()
    models = json.loads(conn.execute("SELECT models FROM col").fetchone()[0])
    conn.close()
    os.unlink(tmp_path / "collection.anki2")
    return [
        {"guid": g, "mid": m, "fields": f.split("\x1f"), "tags": t.split(), "models": models} for _, g, m, f, t in rows
    ]


def test_apkg_notes_fields_and_guids_and_a_second_export_updates(exported, tmp_path):
    import genanki

    from kb.questions.export_anki import FIELDS, MODEL_ID

    first, second = tmp_path / "a.apkg", tmp_path / "b.apkg"
    assert kb_cli("questions", "export", str(exported), str(first), "--format", "apkg").returncode == 0
    notes = anki_notes(first, tmp_path)
    with KB.open(exported) as kb:
        uid = kb.meta()["questions_uid"]
        saved = store.select(kb, ("approved",))
    assert len(notes) == 4 and {n["mid"] for n in notes} == {MODEL_ID}
    assert [f["name"] for f in notes[0]["models"][str(MODEL_ID)]["flds"]] == FIELDS
    assert [n["guid"] for n in notes] == [genanki.guid_for(uid, q.id) for q in saved]
    assert notes[1]["fields"][1] == "B. 5 inches" and "Field guide" in notes[1]["fields"][3]
    assert "brass rim exactly 5 inches" in notes[0]["fields"][2]
    # The teacher edits a question and exports again: same notes (GUIDs), new text: Anki updates them.
    with KB.open(exported) as kb:
        q = saved[0]
        q.question = "Which characters does GIFT reserve?"
        store.save(kb, q)
    assert kb_cli("questions", "export", str(exported), str(second), "--format", "apkg").returncode == 0
    again = anki_notes(second, tmp_path)
    assert [n["guid"] for n in again] == [n["guid"] for n in notes]
    assert again[0]["fields"][0] == "Which characters does GIFT reserve?" != notes[0]["fields"][0]


def test_qti_and_jsonl(exported, tmp_path):
    out = tmp_path / "quiz.zip"
    assert kb_cli("questions", "export", str(exported), str(out), "--format", "qti").returncode == 0
    with zipfile.ZipFile(out) as archive:
        manifest = ET.fromstring(archive.read("imsmanifest.xml"))
        href = manifest.find(".//{*}file").get("href")
        root = ET.fromstring(archive.read(href))
    ns = {"q": "http://www.imsglobal.org/xsd/ims_qtiasiv1p2"}
    items = root.findall(".//q:item", ns)
    kinds = [i.find(".//q:qtimetadatafield/q:fieldentry", ns).text for i in items]
    assert kinds == [
        "short_answer_question",
        "multiple_choice_question",
        "true_false_question",
        "short_answer_question",
    ]
    mcq = items[1]
    right = mcq.find(".//q:respcondition[@continue='No']/q:conditionvar/q:varequal", ns).text
    labels = [r.get("ident") for r in mcq.findall(".//q:response_label", ns)]
    assert len(labels) == 4 and right == labels[1]
    proc = kb_cli("questions", "export", str(exported), "-", "--format", "jsonl")
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 4
    for record in records:
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
        assert record["passage"] == GAUGE and record["citation"]["locator"].startswith("Field guide")
        assert record["answer"] in record["messages"][2]["content"]
    assert "A. 8 inches" in records[1]["messages"][1]["content"]


def test_the_learner_copy_carries_only_approved_questions(decided, tmp_path):
    with KB.open(decided) as kb:
        approved = {q.id for q in store.select(kb, ("approved",))}
        others = {q.id for q in store.select(kb, ("draft", "rejected"))}
    assert approved and others
    copy = tmp_path / "learner.db"
    proc = kb_cli("export", str(decided), str(copy), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["questions"] == len(approved) and report["questions_left_out"] == len(others)
    conn = stdlib_sqlite3.connect(copy)
    rows = conn.execute("SELECT id, status FROM questions").fetchall()
    conn.close()
    assert {r[0] for r in rows} == approved and {r[1] for r in rows} == {"approved"}
    none = tmp_path / "none.db"
    assert kb_cli("export", str(decided), str(none), "--questions", "none").returncode == 0
    conn = stdlib_sqlite3.connect(none)
    assert conn.execute("SELECT count(*) FROM questions").fetchone()[0] == 0
    conn.close()


@pytest.mark.parametrize("command", ["make", "list", "approve", "reject", "edit", "export"])
def test_every_questions_command_has_help_with_an_example(command):
    from click.testing import CliRunner

    from kb.cli import cli

    result = CliRunner().invoke(cli, ["questions", command, "--help"], prog_name="kb")
    assert result.exit_code == 0 and "Example" in result.output and "kb questions" in result.output
