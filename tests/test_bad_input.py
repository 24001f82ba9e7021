"""Hostile and broken input: every bad source gets a clear status and reason, the run goes on,
time and memory stay bounded, nothing already in the KB changes, and a KB path that is not a kb
file (or is from a newer kb) is refused with one sentence.

Everything here uses real files in tmp_path, real SQLite files and the hash embedder.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sqlite3 as stdlib_sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from connectors import ocr
from kb import KB, Ingester, Limits, Searcher
from tests.helpers import COURSE, TEST_PLUGINS, TESTS, children_cpu_s, kb_cli, run_kb, run_kb_measured

KEPT = "kept the version ingested before"
NO_TEXT_LAYER = "no text layer (scanned?)"
# A picture with no words in it: tesseract (when installed) reads it and finds nothing.
SCAN_REASON = NO_TEXT_LAYER + ("; OCR found no text" if shutil.which("tesseract") else "; " + ocr.INSTALL_HINT)
NEEDS_PASSWORD = (
    "encrypted PDF: a password is needed to open it; give it with --pdf-password "
    "(or a file of passwords with --pdf-passwords)"
)
TEN_MB = 10 * 2**20
PLUGINS = TEST_PLUGINS


# -- helpers --------------------------------------------------------------------------------------


def ingest(db: Path, *targets, limits: Limits | None = None, options: dict | None = None):
    with KB.open(db, create=True) as kb:
        ingester = Ingester(kb, embedder="test/hash-embedder", limits=limits, options=options)
        return ingester.run([str(t) for t in targets])


def by_name(reports) -> dict:
    """Reports (SourceReport objects or --json dicts) keyed by file name."""
    out = {}
    for report in reports:
        record = report if isinstance(report, dict) else report.to_dict()
        name = record["uri"].rsplit("/", 1)[-1]
        assert name not in out, f"{name} reported twice"
        out[name] = record
    return out


def only(result) -> dict:
    assert len(result.reports) == 1, result.to_dict()
    return result.reports[0].to_dict()


def text_pdf(pages: int = 10, lines: int = 20) -> bytes:
    """A real PDF with a text layer, made with fpdf2 (its content streams are compressed)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    for page in range(1, pages + 1):
        pdf.add_page()
        for line in range(lines):
            pdf.cell(
                0,
                8,
                f"Page {page} line {line}: groundwater recharge feeds the aquifer below the basin.",
                new_x="LMARGIN",
                new_y="NEXT",
            )
    return bytes(pdf.output())


def tiny_text_pages_pdf(pages: int) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format=(200, 200), unit="pt")
    pdf.set_font("helvetica", size=8)
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.text(20, 40, f"Runoff page {page}")
    return bytes(pdf.output())


def blank_pages_pdf(pages: int) -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def scanned_pdf(pages: int = 3) -> bytes:
    """Pages that carry only a picture and drawings, like a scan without OCR."""
    from fpdf import FPDF
    from PIL import Image, ImageDraw

    pdf = FPDF()
    for page in range(pages):
        image = Image.new("L", (300, 400), 255)
        draw = ImageDraw.Draw(image)
        for y in range(20, 380, 12):  # grey bars where the lines of print would be
            draw.rectangle([20, y, 280 - (y * 7 + page * 13) % 90, y + 6], fill=60)
        pdf.add_page()
        pdf.image(image, x=10, y=10, w=150)
        pdf.set_fill_color(200)
        pdf.rect(10, 200, 150, 40, style="F")
    return bytes(pdf.output())


def encrypted(data: bytes, user_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    try:
        import cryptography  # noqa: F401

        algorithm = "AES-256"
    except ImportError:  # pragma: no cover - cryptography is a dependency of kb
        algorithm = "RC4-128"
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def junk(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def one_line(size: int = TEN_MB, spaces: bool = True) -> str:
    if not spaces:
        return "x" * size
    rng = random.Random(7)
    words = ["river", "basin", "aquifer", "rain", "gauge", "flow", "storm", "soil", "infiltration"]
    text = " ".join(f"{rng.choice(words)}{rng.randrange(1000)}" for _ in range(size // 7 + 10))
    return text[:size]


def snapshot(db: Path) -> dict:
    """Every row kb keeps for sources, chunks, embeddings, plus the index and FTS sizes."""
    with KB.open(db) as kb:
        tables = {
            table: kb.conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("sources", "chunks", "embeddings")
        }
        tables["chunks_vec"] = kb.conn.execute("SELECT count(*) FROM chunks_vec").fetchone()[0]
        tables["chunks_fts"] = kb.conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
    return tables


def assert_one_line_refusal(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def good_md(tmp_path) -> Path:
    path = tmp_path / "good" / "infiltration.md"
    path.parent.mkdir()
    path.write_text(
        "# Infiltration\n\nInfiltration is water soaking into the soil. " * 3
        + "\n\n## Rates\n\nSandy soils take in water fastest; clay is slowest.\n"
    )
    return path


# -- empty files, junk, truncated and encrypted PDFs ----------------------------------------------


@pytest.mark.parametrize("name", ["empty.pdf", "empty.md", "empty.txt", "empty.html"])
@pytest.mark.parametrize("content", [b"", b"  \n\t\n  "], ids=["zero-bytes", "whitespace"])
def test_empty_file(tmp_path, hash_embedder, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    db = tmp_path / "kb.db"
    report = only(ingest(db, path))
    assert report["status"] == "error" and report["reason"] == "empty file", report
    with KB.open(db) as kb:
        row = kb.conn.execute("SELECT status, error FROM sources").fetchone()
        assert tuple(row) == ("error", "empty file")
        assert kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0


def test_binary_junk_named_pdf(tmp_path, hash_embedder):
    path = tmp_path / "lecture.pdf"
    path.write_bytes(junk(50_000))
    report = only(ingest(tmp_path / "kb.db", path))
    assert report["status"] == "error" and report["kind"] == "pdf"
    assert report["reason"] == "not a PDF file (no %PDF header)"


def test_pdf_header_followed_by_junk(tmp_path, hash_embedder):
    path = tmp_path / "lecture.pdf"
    path.write_bytes(b"%PDF-1.7\n" + junk(50_000, seed=3))
    report = only(ingest(tmp_path / "kb.db", path))
    assert report["status"] == "error"
    assert report["reason"].startswith("corrupt or truncated PDF ("), report


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_pdf_is_an_error_and_the_run_goes_on(tmp_path, hash_embedder, good_md, fraction):
    data = text_pdf(pages=10)
    cut = tmp_path / "truncated.pdf"
    cut.write_bytes(data[: int(len(data) * fraction)])
    whole = tmp_path / "whole.pdf"
    whole.write_bytes(data)
    result = ingest(tmp_path / "kb.db", cut, whole, good_md)
    reports = by_name(result.reports)
    # pypdf cannot find the cross-reference table nor rebuild it from fpdf2's compressed streams:
    # the PDF is refused as a whole rather than half-read.
    assert reports["truncated.pdf"]["status"] == "error"
    assert reports["truncated.pdf"]["reason"].startswith("corrupt or truncated PDF ("), reports["truncated.pdf"]
    assert reports["whole.pdf"]["status"] == "ok" and reports["whole.pdf"]["pages"] == 10
    assert reports["infiltration.md"]["status"] == "ok"
    # The same bytes give the same answer every time.
    again = only(ingest(tmp_path / "again.db", cut))
    assert again["status"] == "error" and again["reason"] == reports["truncated.pdf"]["reason"]


def test_encrypted_pdf_with_user_password_is_refused(tmp_path, hash_embedder):
    path = tmp_path / "locked.pdf"
    path.write_bytes(encrypted(text_pdf(pages=2), user_password="secret"))
    report = only(ingest(tmp_path / "kb.db", path))
    assert report["status"] == "error"
    assert report["reason"] == NEEDS_PASSWORD
    wrong = only(ingest(tmp_path / "wrong.db", path, options={"pdf_passwords": ["guess"]}))
    assert wrong["status"] == "error" and wrong["reason"] == "encrypted PDF: the password given does not open it"
    opened = only(ingest(tmp_path / "right.db", path, options={"pdf_passwords": ["guess", "secret"]}))
    assert opened["status"] == "ok" and opened["pages"] == 2 and opened["chunks"] >= 2, opened


def test_owner_password_only_pdf_is_read(tmp_path, hash_embedder):
    path = tmp_path / "course-pack.pdf"
    path.write_bytes(encrypted(text_pdf(pages=3), user_password=""))
    db = tmp_path / "kb.db"
    report = only(ingest(db, path))
    assert report["status"] == "ok" and report["pages"] == 3 and report["chunks"] >= 3, report
    with KB.open(db) as kb:
        pages = {r[0] for r in kb.conn.execute("SELECT page FROM chunks WHERE text LIKE '%aquifer%'")}
    assert pages == {1, 2, 3}


# -- thousands of pages, scanned pages ------------------------------------------------------------


def cpu_seconds(work) -> tuple[float, object]:
    """CPU time of `work()` in this process: unlike wall-clock time, it barely moves when the machine is busy."""
    started = time.process_time()
    result = work()
    return time.process_time() - started, result


def test_thousands_of_blank_pages_within_bounded_time(tmp_path, hash_embedder):
    small, path = tmp_path / "blank-300.pdf", tmp_path / "blank.pdf"
    small.write_bytes(blank_pages_pdf(300))
    path.write_bytes(blank_pages_pdf(3000))
    base, _ = cpu_seconds(lambda: ingest(tmp_path / "small.db", small))
    cost, result = cpu_seconds(lambda: ingest(tmp_path / "kb.db", path))
    report = only(result)
    # Ten times the pages may cost about ten times the work, never a hundred (quadratic).
    assert cost < 25 * max(base, 0.05), (cost, base)
    assert report["status"] == "empty" and report["reason"] == NO_TEXT_LAYER and report["pages"] == 3000, report

    limited = only(ingest(tmp_path / "limited.db", path, limits=Limits(max_pages=1000)))
    assert limited["status"] == "error"
    assert limited["reason"] == "too many pages (3,000; the limit is 1,000)"


def test_thousands_of_text_pages_within_bounded_time(tmp_path, hash_embedder):
    small, path = tmp_path / "pages-300.pdf", tmp_path / "pages.pdf"
    small.write_bytes(tiny_text_pages_pdf(300))
    path.write_bytes(tiny_text_pages_pdf(3000))
    db = tmp_path / "kb.db"
    base, _ = cpu_seconds(lambda: ingest(tmp_path / "small.db", small))
    cost, result = cpu_seconds(lambda: ingest(db, path))
    report = only(result)
    assert cost < 25 * max(base, 0.05), (cost, base)  # linear in pages, not quadratic
    assert report["status"] == "ok" and report["pages"] == 3000 and report["chunks"] == 3000, report
    with KB.open(db) as kb:
        assert kb.conn.execute("SELECT text FROM chunks WHERE page = 2999").fetchone()[0] == "Runoff page 2999"
    limited = only(ingest(tmp_path / "limited.db", path, limits=Limits(max_pages=1000)))
    assert limited["status"] == "error" and limited["reason"].startswith("too many pages (3,000;")


def test_scanned_pdf_has_no_text_layer(tmp_path, hash_embedder):
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf(3))
    db = tmp_path / "kb.db"
    report = only(ingest(db, path))
    assert report["status"] == "empty" and report["reason"] == SCAN_REASON and report["pages"] == 3, report
    with KB.open(db) as kb:
        assert tuple(kb.conn.execute("SELECT status, error FROM sources").fetchone()) == ("empty", SCAN_REASON)
        assert kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 0


# -- encodings and NUL bytes ----------------------------------------------------------------------


TEXT = "Le caf\u00e9 du bassin \u2014 \u201cgroundwater\u201d recharge near the river. Ground water moves slowly.\n"
NUL_TEXT = "# Ground\x00water notes\n\nThe caf\u00e9 well\x00 draws ground\x00water from the aqui\x00fer.\n" * 5


@pytest.mark.parametrize(
    "name,data,encoding",
    [
        ("cp1252.txt", TEXT.encode("cp1252"), "cp1252"),
        ("cp1252.md", ("# Caf\u00e9 notes\n\n" + TEXT).encode("cp1252"), "cp1252"),
        ("latin1.txt", b"Le caf\xe9 du bassin \x81 est pr\xe8s de la rivi\xe8re; the caf\xe9 floods.\n", "latin-1"),
        ("nul-utf8.md", NUL_TEXT.encode("utf-8"), "utf-8"),
        ("nul-cp1252.txt", NUL_TEXT.encode("cp1252"), "cp1252"),
        ("utf16.txt", TEXT.encode("utf-16"), "utf-16"),
    ],
    ids=lambda value: value if isinstance(value, str) and "." in value else "",
)
def test_non_utf8_and_nul_bytes_are_searchable_text(tmp_path, hash_embedder, name, data, encoding):
    path = tmp_path / name
    path.write_bytes(data)
    db = tmp_path / "kb.db"
    report = only(ingest(db, path))
    assert report["status"] == "ok" and report["chunks"] >= 1, report
    with KB.open(db) as kb:
        title, recorded = kb.conn.execute("SELECT title, json_extract(metadata, '$.encoding') FROM sources").fetchone()
        assert recorded == encoding
        rows = kb.conn.execute("SELECT text, coalesce(heading, '') FROM chunks").fetchall()
        everything = title + " ".join(t + h for t, h in rows)
        assert "\x00" not in everything, repr(everything[:200])
        assert "caf\u00e9" in " ".join(t for t, _ in rows)
        hits = Searcher(kb).search("caf\u00e9", k=3)
        assert hits and hits[0].bm25_rank == 1 and "caf\u00e9" in hits[0].text
        if "nul" in name:
            # A NUL inside a word does not split it: "ground\0water" is found as "groundwater".
            assert any("groundwater" in t for t, _ in rows)
            assert Searcher(kb).search("groundwater", k=3)[0].bm25_rank == 1


def test_nul_heavy_text_is_binary(tmp_path, hash_embedder):
    path = tmp_path / "dump.txt"
    path.write_bytes(b"\x00\x00\x00\x01ab\x00\x00" * 4000)
    report = only(ingest(tmp_path / "kb.db", path))
    assert report["status"] == "error" and report["reason"] == "binary data, not text (too many NUL bytes)"


# -- a 10 MB single line --------------------------------------------------------------------------


@pytest.mark.parametrize("spaces", [True, False], ids=["words", "no-spaces"])
def test_ten_mb_single_line(tmp_path, hash_embedder, spaces):
    path = tmp_path / "one-line.txt"
    path.write_text(one_line(TEN_MB, spaces))
    assert path.stat().st_size == TEN_MB and b"\n" not in path.read_bytes()

    started = time.process_time()  # CPU, not the wall clock a busy machine stretches
    refused = only(ingest(tmp_path / "default.db", path))
    assert refused["status"] == "error"
    assert refused["reason"] == "too much text (10,485,760 characters; the limit is 5,000,000)"
    assert time.process_time() - started < 10

    db = tmp_path / "big.db"
    started = time.process_time()
    report = only(ingest(db, path, limits=Limits(max_chars=20_000_000)))
    assert time.process_time() - started < 40
    assert report["status"] == "ok" and report["chunks"] > TEN_MB // 900, report
    with KB.open(db) as kb:
        count, longest, total = kb.conn.execute(
            "SELECT count(*), max(length(text)), sum(length(text)) FROM chunks"
        ).fetchone()
        assert count == report["chunks"] and longest <= 900 and total >= TEN_MB * 0.95
        assert kb.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == count


def test_ten_mb_single_line_cli_memory_is_bounded(tmp_path):
    path = tmp_path / "one-line.md"
    path.write_text(one_line(TEN_MB, spaces=False))
    args = ["ingest", str(tmp_path / "kb.db"), str(path), "--json", "--embedder", "hash", "--max-chars", "20000000"]
    proc, peak_kib = run_kb_measured(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["sources"][0]
    assert report["status"] == "ok" and report["chunks"] > TEN_MB // 900
    assert peak_kib < 1024 * 1024


# -- missing, unreadable, symlink loops -----------------------------------------------------------


def test_missing_path_is_an_error_and_the_rest_ingests(tmp_path, hash_embedder, good_md):
    missing = tmp_path / "no-such-notes.md"
    missing_dir = tmp_path / "no-such-folder"
    result = ingest(tmp_path / "kb.db", missing, good_md, missing_dir)
    reports = by_name(result.reports)
    assert [r.status for r in result.reports] == ["error", "ok", "error"]
    assert reports["no-such-notes.md"]["reason"] == "no such file or folder"
    assert reports["no-such-folder"]["reason"] == "no such file or folder"
    assert reports["infiltration.md"]["chunks"] >= 1

    proc = run_kb(
        "ingest",
        str(tmp_path / "cli.db"),
        str(missing),
        str(good_md),
        "--json",
        "--embedder",
        "hash",
        env_extra=PLUGINS,
    )
    assert proc.returncode == 1, proc.stderr
    cli = by_name(json.loads(proc.stdout)["sources"])
    assert (
        cli["no-such-notes.md"]["status"] == "error" and cli["no-such-notes.md"]["reason"] == "no such file or folder"
    )
    assert cli["infiltration.md"]["status"] == "ok"


def _nobody_can_run_kb(env: dict) -> bool:
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            "import kb, kb_test_plugins",
        ],
        env=env,
        capture_output=True,
        timeout=60,
    )
    return probe.returncode == 0


def test_unreadable_file_and_folder(tmp_path, hash_embedder):
    as_root = os.geteuid() == 0
    if as_root and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    with tempfile.TemporaryDirectory(prefix="kb-unreadable-") as tmp:
        base = Path(tmp)
        base.chmod(0o777)
        folder = base / "course"
        folder.mkdir()
        folder.chmod(0o777)
        readable = folder / "readable.md"
        readable.write_text("# Evaporation\n\nEvaporation turns lake water into vapour.\n")
        readable.chmod(0o644)
        secret = folder / "secret.md"
        secret.write_text("# Secret\n\nNobody may read this.\n")
        secret.chmod(0)
        locked = folder / "locked"
        locked.mkdir()
        (locked / "inside.md").write_text("# Inside\n\nHidden.\n")
        locked.chmod(0)
        db = base / "kb.db"
        try:
            if as_root:
                env = dict(os.environ, **PLUGINS, HOME=str(base))
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
                if not _nobody_can_run_kb(env):
                    pytest.skip(f"user nobody cannot run {sys.executable} or import kb")
                proc = subprocess.run(
                    [
                        "setpriv",
                        "--reuid=65534",
                        "--regid=65534",
                        "--clear-groups",
                        sys.executable,
                        "-m",
                        "kb",
                        "ingest",
                        str(db),
                        str(folder),
                        "--json",
                        "--embedder",
                        "hash",
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert proc.returncode == 1, proc.stderr
                assert "Traceback" not in proc.stderr
                reports = by_name(json.loads(proc.stdout)["sources"])
            else:
                reports = by_name(ingest(db, folder).reports)
        finally:
            secret.chmod(0o644)
            locked.chmod(0o755)
        assert set(reports) == {"readable.md", "secret.md", "locked"}, reports
        assert reports["readable.md"]["status"] == "ok" and reports["readable.md"]["chunks"] == 1
        assert reports["secret.md"]["status"] == "error" and reports["secret.md"]["reason"] == "permission denied"
        assert reports["locked"]["status"] == "error"
        assert reports["locked"]["reason"] == "cannot list folder (Permission denied)"
        with KB.open(db) as kb:
            rows = {
                Path(uri).name: (status, error)
                for uri, status, error in kb.conn.execute("SELECT uri, status, error FROM sources")
            }
        assert rows == {"readable.md": ("ok", None), "secret.md": ("error", "permission denied")}


def test_symlink_loops_terminate_and_each_file_is_read_once(tmp_path):
    root = tmp_path / "course"
    (root / "a" / "c").mkdir(parents=True)
    (root / "notes.md").write_text("# Notes\n\nStreamflow is measured at a weir.\n")
    (root / "a" / "lecture.txt").write_text("Transpiration moves water from roots to leaves.\n")
    (root / "a" / "c" / "deep.md").write_text("# Deep\n\nPercolation carries water down to the water table.\n")
    (root / "a" / "b").symlink_to(root / "a", target_is_directory=True)  # a/b -> a
    (root / "a" / "up").symlink_to("..", target_is_directory=True)  # a link to the parent
    (root / "a" / "c" / "back").symlink_to("../../a", target_is_directory=True)
    (root / "twin.txt").symlink_to(root / "a" / "lecture.txt")  # a second name for a real file
    (root / "loop.md").symlink_to("loop.md")  # a link to itself
    (root / "gone.md").symlink_to("nowhere.md")  # a dangling link
    db = tmp_path / "kb.db"
    # Listed twice and once through the loop: still each real file once.
    proc = run_kb(
        "ingest",
        str(db),
        str(root),
        str(root / "a" / "b" / "b"),
        "--json",
        "--embedder",
        "hash",
        env_extra=PLUGINS,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, proc.stderr  # the self-link and the dangling link are errors
    reports = json.loads(proc.stdout)["sources"]
    statuses = sorted((r["uri"].split("/course/", 1)[1], r["status"], r["reason"]) for r in reports)
    assert statuses == [
        ("a/c/deep.md", "ok", None),
        ("a/lecture.txt", "ok", None),
        ("gone.md", "error", "broken symbolic link"),
        ("loop.md", "error", "cannot read (Too many levels of symbolic links)"),
        ("notes.md", "ok", None),
    ], statuses
    with stdlib_sqlite3.connect(db) as conn:
        uris = sorted(r[0].split("/course/", 1)[1] for r in conn.execute("SELECT uri FROM sources"))
        assert uris == ["a/c/deep.md", "a/lecture.txt", "notes.md"]
        assert conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 3
        assert conn.execute("SELECT count(DISTINCT text) FROM chunks").fetchone()[0] == 3


# -- nothing already in the KB changes ------------------------------------------------------------


def test_a_broken_new_version_keeps_what_was_ingested(course, tmp_path, hash_embedder):
    notes = course / "notes.txt"
    notes.write_text("Baseflow is the part of streamflow fed by groundwater.\n")
    db = tmp_path / "kb.db"
    first = ingest(db, course)
    assert {r.status for r in first.reports} == {"ok"} and "notes.txt" in by_name(first.reports), first.to_dict()
    before = snapshot(db)
    assert before["chunks"] and len(before["embeddings"]) == len(before["chunks"]) == before["chunks_vec"]

    pdf = course / "hydrology-lecture-notes.pdf"
    md = course / "field-guide-measuring-rainfall.md"
    html = course / "glossary-web" / "index.html"
    original_pdf = pdf.read_bytes()
    pdf.write_bytes(original_pdf[: len(original_pdf) // 2])
    md.write_bytes(b"\x00\x01\x02\x03" * 5000)
    html.write_bytes(b"")
    notes.write_text(one_line(6_000_000))
    second = ingest(db, course)
    reports = by_name(second.reports)
    expected = {
        "hydrology-lecture-notes.pdf": "corrupt or truncated PDF (",
        "field-guide-measuring-rainfall.md": "binary data, not text (too many NUL bytes)",
        "index.html": "empty file",
        "notes.txt": "too much text (6,000,000 characters; the limit is 5,000,000)",
    }
    for name, reason in expected.items():
        assert reports[name]["status"] == "error", reports[name]
        assert reports[name]["reason"].startswith(reason), reports[name]
        assert reports[name]["reason"].endswith("; " + KEPT), reports[name]
    assert snapshot(db) == before

    # An encrypted PDF, a file gone missing, and junk named .pdf: still nothing changes.
    pdf.write_bytes(encrypted(original_pdf, user_password="secret"))
    md.unlink()
    html.write_bytes(junk(4096))
    html.rename(html.with_suffix(".pdf"))
    third = ingest(db, pdf, md, html.with_suffix(".pdf"))
    reports = by_name(third.reports)
    assert reports["hydrology-lecture-notes.pdf"]["reason"] == NEEDS_PASSWORD + "; " + KEPT
    # A file ingested before and named again after it was deleted is missing, its chunks kept until pruned.
    assert reports["field-guide-measuring-rainfall.md"]["status"] == "missing"
    assert reports["field-guide-measuring-rainfall.md"]["reason"] == "no such file or folder"
    assert reports["index.pdf"]["reason"] == "not a PDF file (no %PDF header)"
    after = snapshot(db)
    assert {k: v for k, v in after.items() if k != "sources"} == {k: v for k, v in before.items() if k != "sources"}
    unchanged = [row for row in after["sources"][: len(before["sources"])] if row[9] != "missing"]
    assert unchanged == [row for row in before["sources"] if not row[1].endswith(".md")]
    assert [row[1].rsplit("/", 1)[-1] for row in after["sources"] if row[9] == "missing"] == [md.name]
    assert [r[1].rsplit("/", 1)[-1] for r in after["sources"][len(before["sources"]) :]] == ["index.pdf"]

    with KB.open(db) as kb:
        hits = Searcher(kb).search("Darcy's law", k=3)
    assert hits and hits[0].source.kind == "pdf"


# -- the run goes on ------------------------------------------------------------------------------


def test_one_run_with_every_kind_of_bad_input(tmp_path, good_md):
    bad = tmp_path / "bad"
    bad.mkdir()
    files: dict[str, bytes] = {
        "empty.pdf": b"",
        "empty.md": b"",
        "empty.txt": b"",
        "empty.html": b"",
        "junk.pdf": junk(20_000),
        "truncated.pdf": text_pdf(6)[:3000],
        "locked.pdf": encrypted(text_pdf(2), "secret"),
        "owner-only.pdf": encrypted(text_pdf(2), ""),
        "thousands.pdf": blank_pages_pdf(3000),
        "scan.pdf": scanned_pdf(2),
        "binary.txt": b"\x00\x00\xff\x00" * 3000,
        "cp1252.txt": TEXT.encode("cp1252"),
        "one-line.txt": one_line(TEN_MB).encode(),
        "data.xyz": b"not a known type",
    }
    for name, data in files.items():
        (bad / name).write_bytes(data)
    targets = [str(bad / name) for name in files]
    targets[5:5] = [str(tmp_path / "missing.pdf"), str(good_md)]
    db = tmp_path / "kb.db"
    started = children_cpu_s()  # the timeout guards against a hang; CPU time bounds the work
    proc = run_kb("ingest", str(db), *targets, "--json", "--embedder", "hash", env_extra=PLUGINS, timeout=240)
    assert children_cpu_s() - started < 60
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    sources = report["sources"]
    assert [s["uri"].rsplit("/", 1)[-1] for s in sources] == [Path(t).name for t in targets]
    got = {s["uri"].rsplit("/", 1)[-1]: (s["status"], s["reason"]) for s in sources}
    assert got == {
        "empty.pdf": ("error", "empty file"),
        "empty.md": ("error", "empty file"),
        "empty.txt": ("error", "empty file"),
        "empty.html": ("error", "empty file"),
        "junk.pdf": ("error", "not a PDF file (no %PDF header)"),
        "missing.pdf": ("error", "no such file or folder"),
        "infiltration.md": ("ok", None),
        "truncated.pdf": ("error", got["truncated.pdf"][1]),
        "locked.pdf": ("error", NEEDS_PASSWORD),
        "owner-only.pdf": ("ok", None),
        "thousands.pdf": ("empty", NO_TEXT_LAYER),
        "scan.pdf": ("empty", SCAN_REASON),
        "binary.txt": ("error", "binary data, not text (too many NUL bytes)"),
        "cp1252.txt": ("ok", None),
        "one-line.txt": ("error", "too much text (10,485,760 characters; the limit is 5,000,000)"),
        "data.xyz": ("error", 'kb does not read .xyz files (the README\'s "What kb reads" lists the formats it does)'),
    }
    assert got["truncated.pdf"][1].startswith("corrupt or truncated PDF (")
    assert report["totals"] == {"error": 11, "ok": 3, "empty": 2, "chunks": report["totals"]["chunks"]}
    assert report["totals"]["chunks"] == sum(s["chunks"] for s in sources) > 0
    info = kb_cli("info", str(db), "--json", env_extra=PLUGINS)
    assert info.returncode == 0, info.stderr
    recorded = {Path(s["uri"]).name: s["status"] for s in json.loads(info.stdout)["sources"]}
    # Missing paths leave nothing behind; every file that exists is on record with its status.
    assert "missing.pdf" not in recorded
    assert recorded["infiltration.md"] == "ok" and recorded["locked.pdf"] == "error"
    assert recorded["thousands.pdf"] == "empty" and len(recorded) == len(files) + 1


# -- KB files that are not kb files ---------------------------------------------------------------


def _real_kb(path: Path) -> Path:
    with KB.open(path, create=True) as kb:
        result = Ingester(kb, embedder="test/hash-embedder").run([str(COURSE / "field-guide-measuring-rainfall.md")])
    assert result.reports[0].status == "ok"
    return path


def _make_not_a_kb(kind: str, path: Path, tmp_path: Path) -> None:
    if kind == "text":
        path.write_text("These are my lecture notes, not a database.\n")
    elif kind == "random":
        path.write_bytes(junk(64 * 1024, seed=11))
    elif kind == "other-sqlite":
        conn = stdlib_sqlite3.connect(path)
        conn.execute("CREATE TABLE grades (student TEXT, mark INTEGER)")
        conn.execute("INSERT INTO grades VALUES ('ada', 19)")
        conn.commit()
        conn.close()
    elif kind == "truncated-kb":
        data = _real_kb(tmp_path / "real.db").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["text", "random", "other-sqlite", "truncated-kb"])
def test_kb_path_that_is_not_a_kb_file(tmp_path, hash_embedder, kind, good_md):
    path = tmp_path / "course.db"
    _make_not_a_kb(kind, path, tmp_path)
    before = path.read_bytes()
    siblings = sorted(p.name for p in tmp_path.iterdir())
    for args in (["info"], ["search", "how is rain measured"], ["ingest", "--embedder", "hash", str(good_md)]):
        command, *rest = args
        proc = kb_cli(command, str(path), *rest, env_extra=PLUGINS)
        line = assert_one_line_refusal(proc, str(path), "not a kb file")
        assert line.startswith("Error: ") and line.endswith("."), line
        assert path.read_bytes() == before, f"kb {command} changed the file"
        assert sorted(p.name for p in tmp_path.iterdir()) == siblings
    with pytest.raises(Exception) as excinfo:
        KB.open(path)
    assert type(excinfo.value).__name__ == "NotAKBFile"
    assert path.read_bytes() == before


def test_kb_file_from_a_newer_kb(tmp_path, hash_embedder, good_md):
    path = _real_kb(tmp_path / "course.db")
    conn = stdlib_sqlite3.connect(path)
    conn.execute("UPDATE kb_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    siblings = sorted(p.name for p in tmp_path.iterdir())
    for args in (["info"], ["search", "how is rain measured"], ["ingest", "--embedder", "hash", str(good_md)]):
        command, *rest = args
        proc = kb_cli(command, str(path), *rest, env_extra=PLUGINS)
        line = assert_one_line_refusal(proc, "newer kb", "schema v99", "upgrade kb")
        assert line.endswith("."), line
        assert path.read_bytes() == before, f"kb {command} changed the file"
        assert sorted(p.name for p in tmp_path.iterdir()) == siblings


def test_random_bytes_named_as_text_are_refused(tmp_path, hash_embedder):
    for name in ("junk.txt", "junk.md"):
        path = tmp_path / name
        path.write_bytes(bytes(range(256)) * 40)
        result = ingest(tmp_path / "kb.db", path)
        report = result.reports[0]
        assert report.status == "error", report
        assert report.reason.startswith("binary data, not text")


# -- found in review ------------------------------------------------------------------------------


def test_lone_surrogates_and_terminal_escapes_are_cleaned(tmp_path, hash_embedder):
    from kb.chunker import clean_line, clean_text

    assert clean_text("ground\ud800water") == "ground\ufffdwater"
    assert clean_line("Evil \x1b[2J\x1b]0;owned\x07 Title\x9b") == "Evil [2J ]0;owned Title"
    path = tmp_path / "evil.md"
    path.write_text(
        "# Evil \x1b[2J\x1b]0;owned\x07 Title\n\n## Part \x1b[31mred\n\n" + "Rain falls on the hills. " * 20
    )
    report = only(ingest(tmp_path / "kb.db", path))
    assert report["status"] == "ok"
    with KB.open(tmp_path / "kb.db") as kb:
        title, heading = kb.conn.execute(
            "SELECT sources.title, chunks.heading FROM chunks JOIN sources ON sources.id = chunks.source_id"
        ).fetchone()
    assert "\x1b" not in title and "\x07" not in title and "\x1b" not in heading


def test_hostile_markdown_lines_stay_linear(tmp_path, hash_embedder):
    path = tmp_path / "brackets.md"
    lines = ["[" * 200_000, "[a](" * 50_000, "# a" + " " * 200_000 + "b", "Rain falls on the hills."]
    path.write_text("\n\n".join(lines))
    # Quadratic patterns would need hours here; the per-source deadline turns that into an error.
    report = only(ingest(tmp_path / "kb.db", path, limits=Limits(timeout_s=60)))
    assert report["status"] == "ok", report


def test_a_leading_rule_is_not_front_matter(tmp_path, hash_embedder):
    path = tmp_path / "rule.md"
    path.write_text("---\n\nIntroduction to infiltration.\n\n---\n\nMore text about runoff.\n")
    only(ingest(tmp_path / "kb.db", path))
    with KB.open(tmp_path / "kb.db") as kb:
        text = " ".join(r[0] for r in kb.conn.execute("SELECT text FROM chunks"))
    assert "infiltration" in text and "runoff" in text


def test_html_over_its_size_limit(tmp_path, hash_embedder):
    from connectors.html import MAX_HTML_BYTES

    path = tmp_path / "huge.html"
    path.write_bytes(b"<html><body>" + b"<i></i>" * (MAX_HTML_BYTES // 7 + 1) + b"</body></html>")
    report = only(ingest(tmp_path / "kb.db", path))
    assert report["status"] == "error" and report["reason"].startswith("HTML file too large")


def test_a_locked_kb_is_one_sentence(course_db, tmp_path):
    holder = stdlib_sqlite3.connect(course_db, timeout=1)
    holder.execute("BEGIN IMMEDIATE")
    try:
        note = tmp_path / "note.md"
        note.write_text("# Note\n\nSnow is measured as water equivalent.\n")
        proc = run_kb("ingest", str(course_db), str(note), env_extra=PLUGINS, timeout=120)
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    # The progress lines (plain, since stderr is no terminal) may come first; the error is one sentence.
    error = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and "being written by another process" in error[0]
    assert proc.stderr.splitlines()[-1] == error[0]


def test_unknown_embedder_leaves_no_file(tmp_path, good_md):
    proc = kb_cli("ingest", str(tmp_path / "new.db"), str(good_md), "--embedder", "nope")
    assert proc.returncode == 1 and "No embedder named 'nope'" in proc.stderr
    assert not (tmp_path / "new.db").exists()
