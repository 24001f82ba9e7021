"""Scanned PDFs and images read by the real tesseract; old Office files through the real LibreOffice."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time

import pytest

from kb import KB, Ingester, Searcher
from tests.helpers import COURSE, TEST_PLUGINS, kb_cli

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None or shutil.which("pdftoppm") is None,
    reason="needs tesseract-ocr and poppler-utils (make test installs them)",
)

PAGES = [
    "Chapter one. Infiltration capacity falls as the soil wets.\nA dry loam takes in rain quickly.",
    "Chapter two. Evapotranspiration returns water to the air.\nPlants draw it from the root zone.",
]


def page_image(text: str):
    """Text drawn as pixels, as a scanner would see a printed page: no text layer anywhere."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1654, 2339), 255)  # A4 at 200 dpi
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=44)
    for n, line in enumerate(text.splitlines()):
        draw.text((120, 160 + n * 80), line, fill=0, font=font)
    return image


def scanned_pdf(texts: list[str]) -> bytes:
    images = [page_image(t) for t in texts]
    out = io.BytesIO()
    images[0].save(out, format="PDF", save_all=True, append_images=images[1:], resolution=200)
    return out.getvalue()


def ingest(db, *targets, **options):
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder="test/hash-embedder", options=options).run([str(t) for t in targets])


@needs_tesseract
def test_a_scanned_pdf_is_read_by_ocr_with_its_page_numbers(tmp_path, hash_embedder):
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf(PAGES))
    import pypdf

    assert not any(p.extract_text().strip() for p in pypdf.PdfReader(path).pages)  # really no text layer
    db = tmp_path / "kb.db"
    started = time.monotonic()
    [report] = ingest(db, path).reports
    seconds = time.monotonic() - started
    print(f"OCR of a 2-page scan: {seconds:.1f} s ({seconds / 2:.1f} s a page)")
    assert report.status == "ok", report
    assert report.note == "OCR (eng) on pages 1-2"
    with KB.open(db) as kb:
        pages = dict(kb.conn.execute("SELECT page, group_concat(text, ' ') FROM chunks GROUP BY page"))
        assert set(pages) == {1, 2}
        assert "Infiltration capacity" in pages[1] and "Evapotranspiration" in pages[2]
        [hit, *_] = Searcher(kb).search("evapotranspiration root zone", k=3)
        assert hit.locator.page == 2 and hit.link.endswith("scan.pdf#page=2")
    never = ingest(tmp_path / "never.db", path, ocr="never").reports[0]
    assert never.status == "empty" and never.reason == "no text layer (scanned?); OCR is off (--ocr never)"


@needs_tesseract
def test_images_are_sources_and_a_missing_language_names_its_package(tmp_path):
    photo = tmp_path / "whiteboard.png"
    page_image("Baseflow is the groundwater part of river flow.").save(photo)
    db = tmp_path / "kb.db"
    proc = kb_cli("ingest", str(db), str(photo), "--embedder", "hash", "--json", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    [source] = json.loads(proc.stdout)["sources"]
    assert source["status"] == "ok" and source["kind"] == "image" and source["note"] == "OCR (eng)"
    hits = json.loads(kb_cli("search", str(db), "groundwater baseflow", "--json", env_extra=TEST_PLUGINS).stdout)
    assert hits and hits[0]["source"]["uri"].endswith("whiteboard.png") and "Baseflow" in hits[0]["text"]
    other = kb_cli(
        "ingest", str(tmp_path / "x.db"), str(photo), "--ocr-lang", "xyz", "--embedder", "hash", "--json",
        env_extra=TEST_PLUGINS,
    )  # fmt: skip
    [failed] = json.loads(other.stdout)["sources"]
    assert failed["status"] == "error" and "apt-get install tesseract-ocr-xyz" in failed["reason"]
    bomb = tmp_path / "bomb.png"
    from PIL import Image

    Image.new("1", (9000, 9000)).save(bomb)  # 81 million pixels in a few kilobytes
    proc = kb_cli("ingest", str(tmp_path / "b.db"), str(bomb), "--embedder", "hash", "--json", env_extra=TEST_PLUGINS)
    [refused] = json.loads(proc.stdout)["sources"]
    assert refused["status"] == "error" and refused["reason"].startswith("image too large to read (9,000 x 9,000")


@pytest.mark.skipif(shutil.which("soffice") is None, reason="needs LibreOffice (libreoffice-writer-nogui)")
def test_an_old_word_file_is_converted_by_libreoffice(tmp_path, hash_embedder):
    folder = tmp_path / "convert"
    subprocess.run(
        ["soffice", f"-env:UserInstallation={(tmp_path / 'profile').as_uri()}", "--headless", "--convert-to", "doc"]
        + ["--outdir", str(folder), str(COURSE / "handout-soil-moisture-and-infiltration.docx")],
        check=True,
        capture_output=True,
        timeout=180,
    )
    old = folder / "handout-soil-moisture-and-infiltration.doc"
    assert old.read_bytes()[:8] == bytes.fromhex("d0cf11e0a1b11ae1")  # a real Word 97-2003 (OLE) file
    db = tmp_path / "kb.db"
    [report] = ingest(db, old).reports
    assert report.status == "ok" and report.chunks > 3, report
    with KB.open(db) as kb:
        headings = {r[0] for r in kb.conn.execute("SELECT heading FROM chunks")}
        text = " ".join(r[0] for r in kb.conn.execute("SELECT text FROM chunks"))
        meta = json.loads(kb.conn.execute("SELECT metadata FROM sources").fetchone()[0])
    assert "infiltration" in text.lower() and any(h and ">" in h for h in headings)
    assert meta["converted_by"] == "LibreOffice (.doc to .docx)"


def test_without_libreoffice_an_old_file_says_what_to_do(tmp_path):
    old = tmp_path / "handout.doc"
    old.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 600)
    # A PATH with no soffice on it: the machine of a teacher without LibreOffice.
    proc = kb_cli(
        "ingest", str(tmp_path / "kb.db"), str(old), "--embedder", "hash", "--json",
        env_extra={**TEST_PLUGINS, "PATH": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    [report] = json.loads(proc.stdout)["sources"]
    assert report["status"] == "error"
    assert report["reason"].startswith("an old Word file (.doc): save it as .docx in Word or LibreOffice")
    assert "apt-get install libreoffice-writer-nogui" in report["reason"]
