"""Slides, Word handouts and the formats unstructured reads: locators, notes, tables, heading paths.

Real files throughout: the sample course's deck and handout, decks and documents the tests make
with python-pptx, python-docx and pandoc, real SQLite files, the hash embedder (and the real
default embedder once). The EPUB test runs kb with the network really off.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kb import KB, Ingester, Limits, Searcher
from tests.helpers import COURSE, run_kb_offline

DECK = COURSE / "snow-and-ice-lecture.pptx"
HANDOUT = COURSE / "handout-soil-moisture-and-infiltration.docx"
HANDOUT_TITLE = "Handout: measuring soil moisture and infiltration"


def ingest(db: Path, *targets, embedder: str | None = "test/hash-embedder", limits: Limits | None = None):
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder=embedder, limits=limits).run([str(t) for t in targets])


def chunks(db: Path, name: str) -> list[dict]:
    with KB.open(db) as kb:
        kb.conn.row_factory = None
        rows = kb.conn.execute(
            "SELECT chunks.slide, chunks.page, chunks.heading, chunks.link, chunks.text FROM chunks "
            "JOIN sources ON sources.id = chunks.source_id WHERE sources.uri LIKE ? ORDER BY chunks.ordinal",
            (f"%/{name}",),
        ).fetchall()
    return [dict(zip(("slide", "page", "heading", "link", "text"), row)) for row in rows]


def source_row(db: Path, name: str) -> dict:
    with KB.open(db) as kb:
        row = kb.conn.execute(
            "SELECT kind, title, status, error, metadata FROM sources WHERE uri LIKE ?", (f"%/{name}",)
        ).fetchone()
    kind, title, status, error, metadata = tuple(row)
    return {"kind": kind, "title": title, "status": status, "error": error, "metadata": json.loads(metadata or "{}")}


def text_at(rows: list[dict], **where) -> str:
    return "\n".join(r["text"] for r in rows if all(r[k] == v for k, v in where.items()))


# -- the sample course's deck ---------------------------------------------------------------------


def test_deck_slides_notes_tables_and_hidden_slide(tmp_path, hash_embedder):
    db = tmp_path / "kb.db"
    started = time.monotonic()
    result = ingest(db, DECK)
    elapsed = time.monotonic() - started
    assert [r.status for r in result.reports] == ["ok"], result.to_dict()
    print(f"deck ingest (hash embedder): {elapsed:.2f} s")
    rows = chunks(db, DECK.name)
    assert sorted({r["slide"] for r in rows}) == list(range(1, 9))
    assert all(r["page"] is None for r in rows)
    titles = {r["slide"]: r["heading"] for r in rows}
    assert titles[1] == "Snow and ice: the frozen stores"
    assert titles[6] == "River regimes fed by snow and ice"
    # Deep links open the slide.
    uri = DECK.resolve().as_uri()
    assert all(r["link"] == f"{uri}#slide={r['slide']}" for r in rows)
    # Speaker notes travel with their slide.
    assert "Speaker notes: The daily high flow of a glacier-fed stream comes in the late afternoon" in text_at(
        rows, slide=6
    )
    assert "snow pillow" in text_at(rows, slide=2)
    # Tables are read row by row, cells apart.
    assert "Fresh snow | 100 | 100 mm" in text_at(rows, slide=2)
    assert "Glacier ice | 917 | 11 mm" in text_at(rows, slide=2)
    # Text boxes inside a group shape, in their order.
    slide5 = text_at(rows, slide=5)
    assert slide5.index("Accumulation zone") < slide5.index("Ablation zone") < slide5.index("Equilibrium line")
    # The title is the heading, not repeated in the text; the hidden backup slide is read and marked.
    assert "Snowpack and snow water equivalent" not in text_at(rows, slide=2)
    assert "120 / 24 = 5 days" in text_at(rows, slide=7)
    source = source_row(db, DECK.name)
    assert source["kind"] == "slides" and source["title"] == "Snow and ice: the frozen stores"
    assert source["metadata"]["hidden_slides"] == [7]
    assert source["metadata"]["slides"] == 8 and source["metadata"]["slides_with_notes"] == 8
    assert source["metadata"]["author"] == "The Water Cycle course team"

    # A fact found only in the speaker notes is found at its slide.
    with KB.open(db) as kb:
        hits = Searcher(kb).search("At what time of day does a glacier-fed stream carry its highest flow?", k=3)
    assert hits[0].locator.slide == 6 and hits[0].link == f"{uri}#slide=6"


def test_slide_limit_is_respected(tmp_path, hash_embedder):
    result = ingest(tmp_path / "kb.db", DECK, limits=Limits(max_pages=5))
    report = result.reports[0]
    assert report.status == "error" and report.reason == "too many slides (8; the limit is 5)"


def made_deck() -> bytes:
    """A deck with nested groups, a title-less slide, merged table cells and an empty slide."""
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[5])
    slide.shapes.title.text = "Nested groups"
    outer = slide.shapes.add_group_shape()
    outer.shapes.add_textbox(Inches(1), Inches(2), Inches(3), Inches(1)).text_frame.text = "outer box"
    inner = outer.shapes.add_group_shape()
    inner.shapes.add_textbox(Inches(1), Inches(3), Inches(3), Inches(1)).text_frame.text = "inner box"
    box = slide.shapes.add_textbox(Inches(5), Inches(2), Inches(3), Inches(1))
    box.text_frame.text = "line one\vsoft break"
    slide = prs.slides.add_slide(prs.slide_layouts[6])  # blank layout: no title at all
    table = slide.shapes.add_table(3, 3, Inches(1), Inches(1), Inches(6), Inches(2)).table
    table.cell(0, 0).merge(table.cell(0, 1))
    table.cell(0, 0).text = "merged header"
    table.cell(0, 2).text = "right"
    for c in range(3):
        table.cell(1, c).text = f"r1c{c}"
    prs.slides.add_slide(prs.slide_layouts[6])  # nothing on it
    slide = prs.slides.add_slide(prs.slide_layouts[0])
    slide.shapes.title.text = "Part two"  # a title-only divider slide
    prs.core_properties.title = "PowerPoint Presentation"  # python-pptx's default, not a real title
    out = io.BytesIO()
    prs.save(out)
    return out.getvalue()


def test_made_deck_groups_tables_and_untitled_slides(tmp_path, hash_embedder):
    path = tmp_path / "made.pptx"
    path.write_bytes(made_deck())
    db = tmp_path / "kb.db"
    assert [r.status for r in ingest(db, path).reports] == ["ok"]
    rows = chunks(db, "made.pptx")
    assert {r["slide"] for r in rows} == {1, 2, 4}  # slide 3 has no text and no section
    one = text_at(rows, slide=1)
    assert one.index("outer box") < one.index("inner box") < one.index("line one soft break")
    assert text_at(rows, slide=2) == "merged header | right\n\nr1c0 | r1c1 | r1c2"
    assert [r["heading"] for r in rows if r["slide"] == 2] == [None]
    assert text_at(rows, slide=4) == "Part two"
    assert source_row(db, "made.pptx")["title"] == "Nested groups"


def test_fetched_deck_and_handout_link_to_their_url(tmp_path, hash_embedder):
    """A deck or handout brought in by a fetcher has no local path: the URL is its identity and link."""
    from kb import Fetched

    with KB.open(tmp_path / "kb.db", create=True) as kb:
        ingester = Ingester(kb, embedder=hash_embedder)
        deck = ingester.ingest_one(Fetched(uri="https://example.org/t/deck.pptx", name="deck.pptx", data=made_deck()))
        handout = ingester.ingest_one(
            Fetched(uri="https://example.org/t/notes.docx", name="notes.docx", data=made_docx())
        )
        assert deck.status == "ok" and handout.status == "ok", (deck, handout)
        hits = Searcher(kb).search("inner box outer box", k=1)
        assert hits[0].link == "https://example.org/t/deck.pptx#slide=1"
        titles = dict(kb.conn.execute("SELECT uri, title FROM sources").fetchall())
    assert titles == {"https://example.org/t/deck.pptx": "Nested groups", "https://example.org/t/notes.docx": "Rivers"}


# -- the sample course's Word handout -------------------------------------------------------------


def test_handout_heading_paths_lists_and_tables(tmp_path, hash_embedder):
    db = tmp_path / "kb.db"
    started = time.monotonic()
    result = ingest(db, HANDOUT)
    print(f"docx ingest (hash embedder): {time.monotonic() - started:.2f} s")
    assert [r.status for r in result.reports] == ["ok"], result.to_dict()
    rows = chunks(db, HANDOUT.name)
    headings = [r["heading"] for r in rows]
    prefix = HANDOUT_TITLE + " > "
    assert prefix + "Soil moisture > The gravimetric method" in headings
    assert prefix + "Infiltration > The double-ring infiltrometer" in headings
    assert prefix + "Field capacity and wilting point" in headings
    assert all(h == HANDOUT_TITLE or h.startswith(prefix) for h in headings)
    assert all(r["link"] == HANDOUT.resolve().as_uri() for r in rows)
    # Numbered list items carry their numbers, bullets a dash.
    gravimetric = text_at(rows, heading=prefix + "Soil moisture > The gravimetric method")
    assert "1. Take a soil sample with a corer" in gravimetric and "4. Weigh it again" in gravimetric
    assert "- Label every tin" in text_at(rows, heading=prefix + "Before you go")
    # The table stays between the paragraphs around it.
    section = text_at(rows, heading=prefix + "Soil moisture > From gravimetric to volumetric water content")
    assert section.index("gave:") < section.index("A | 152.0 | 128.0 | 0.19 | 0.24") < section.index("So the top")
    assert "Mean | | | 0.20 | 0.25" in section  # empty cells keep their place (spaces are collapsed)
    source = source_row(db, HANDOUT.name)
    assert source["kind"] == "docx" and source["title"] == HANDOUT_TITLE
    assert source["metadata"]["author"] == "The Water Cycle course team"


def made_docx() -> bytes:
    """A document with outline-level headings, a content control, a text box and numbering switched off."""
    from docx import Document
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls

    doc = Document()
    chapter = doc.styles.add_style("Chapter", WD_STYLE_TYPE.PARAGRAPH)
    chapter.element.get_or_add_pPr().append(parse_xml(f'<w:outlineLvl {nsdecls("w")} w:val="0"/>'))
    doc.add_paragraph("Rivers", style="Chapter")
    doc.add_paragraph("Rivers carry water to the sea.")
    lvl = doc.add_paragraph("Braided channels")
    lvl._p.get_or_add_pPr().append(parse_xml(f'<w:outlineLvl {nsdecls("w")} w:val="1"/>'))
    doc.add_paragraph("Braided rivers split around gravel bars.")
    body = doc.element.body
    sdt = parse_xml(
        f"<w:sdt {nsdecls('w')}><w:sdtContent><w:p><w:r><w:t>Inside a content control.</w:t></w:r></w:p>"
        "</w:sdtContent></w:sdt>"
    )
    body.insert(len(body) - 1, sdt)
    item = doc.add_paragraph("Not a list item any more", style="List Number")
    item._p.get_or_add_pPr().append(parse_xml(f'<w:numPr {nsdecls("w")}><w:numId w:val="0"/></w:numPr>'))
    doc.add_paragraph("Gravel", style="List Number")
    doc.add_paragraph("Sand", style="List Number")
    doc.add_heading("Lakes", level=1)
    tracked = doc.add_paragraph("Lakes are ")
    tracked._p.append(parse_xml(f"<w:del {nsdecls('w')}><w:r><w:delText>deleted words </w:delText></w:r></w:del>"))
    tracked.add_run("still water.")
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def test_made_docx_outline_levels_content_controls_and_numbering(tmp_path, hash_embedder):
    path = tmp_path / "made.docx"
    path.write_bytes(made_docx())
    db = tmp_path / "kb.db"
    assert [r.status for r in ingest(db, path).reports] == ["ok"]
    rows = chunks(db, "made.docx")
    by_heading = {r["heading"]: r["text"] for r in rows}
    assert by_heading["Rivers"] == "Rivers carry water to the sea."
    assert by_heading["Rivers > Braided channels"] == (
        "Braided rivers split around gravel bars.\n\nInside a content control.\n\n"
        "Not a list item any more\n\n1. Gravel\n\n2. Sand"
    )
    assert by_heading["Lakes"] == "Lakes are still water."
    assert source_row(db, "made.docx")["title"] == "Rivers"


# -- formats read through unstructured ------------------------------------------------------------

BOOK_MD = """# Rivers of ice

Glaciers move slowly downhill under their own weight.

## Crevasses

Crevasses open where the ice flows over a steep step in its bed.

- transverse crevasses
- marginal crevasses

| zone | feature |
|------|---------|
| upper | bergschrund |
| lower | seracs |

# Meltwater

Meltwater streams braid across the outwash plain in summer.
"""


def pandoc(tmp_path: Path, fmt: str, name: str) -> Path:
    source = tmp_path / "book.md"
    source.write_text(BOOK_MD)
    target = tmp_path / name
    subprocess.run(
        ["pandoc", str(source), "-f", "markdown", "-t", fmt, "-o", str(target), "--metadata", "title=Ice book"],
        check=True,
        capture_output=True,
    )
    return target


def make_epub(tmp_path: Path, name: str = "ice-book.epub") -> Path:
    path = pandoc(tmp_path, "epub", name)
    assert path.read_bytes()[:2] == b"PK"
    return path


def test_epub_ingests_with_the_network_off(tmp_path):
    """kb ingest in a network namespace with no interfaces, and an audit hook that fails on any socket use."""
    book = make_epub(tmp_path)
    good = tmp_path / "good.md"
    good.write_text("# Note\n\nA plain note ingested in the same run.\n")
    db = tmp_path / "kb.db"
    proc = run_kb_offline("ingest", str(db), str(book), str(good), "--json", "--embedder", "hash")
    assert "NETWORK ATTEMPT" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    reports = {Path(r["uri"]).name: r for r in json.loads(proc.stdout)["sources"]}
    assert reports["ice-book.epub"]["status"] == "ok", reports
    assert reports["ice-book.epub"]["kind"] == "epub"
    assert reports["good.md"]["status"] == "ok"
    rows = chunks(db, "ice-book.epub")
    by_heading = {r["heading"]: r["text"] for r in rows}
    assert by_heading["Rivers of ice"] == "Glaciers move slowly downhill under their own weight."
    crevasses = by_heading["Rivers of ice > Crevasses"]
    assert "- transverse crevasses" in crevasses and "upper | bergschrund" in crevasses
    assert by_heading["Meltwater"].startswith("Meltwater streams braid")
    assert source_row(db, "ice-book.epub")["title"] == "Ice book"
    # Nothing was downloaded or installed behind kb's back.
    import importlib.util

    assert importlib.util.find_spec("en_core_web_sm") is None


def test_other_unstructured_formats(tmp_path, hash_embedder):
    files = [pandoc(tmp_path, fmt, f"ice.{suffix}") for fmt, suffix in (("odt", "odt"), ("rtf", "rtf"), ("rst", "rst"))]
    files.append(pandoc(tmp_path, "org", "ice.org"))
    db = tmp_path / "kb.db"
    started = time.monotonic()
    result = ingest(db, *files)
    print(f"four unstructured files: {time.monotonic() - started:.2f} s (includes importing unstructured once)")
    assert {Path(r.uri).name: r.status for r in result.reports} == {
        "ice.odt": "ok",
        "ice.rtf": "ok",
        "ice.rst": "ok",
        "ice.org": "ok",
    }, result.to_dict()
    for name in ("ice.odt", "ice.rtf", "ice.rst", "ice.org"):
        rows = chunks(db, name)
        headings = {r["heading"] for r in rows}
        assert {"Rivers of ice", "Rivers of ice > Crevasses", "Meltwater"} <= headings, (name, headings)
        assert "bergschrund" in " ".join(r["text"] for r in rows)
        assert source_row(db, name)["kind"] == name.rsplit(".", 1)[1]


def test_unstructured_is_imported_only_when_needed(tmp_path):
    """Reading a deck and a handout must not import unstructured (5-8 s of spaCy and torch)."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from kb.types import SourceFile\n"
        "from kb.plugins import connector_for\n"
        "for p in map(Path, sys.argv[1:]):\n"
        "    connector_for(p.name)().extract(SourceFile(uri=p.as_uri(), path=p, data=p.read_bytes(), name=p.name))\n"
        "assert 'unstructured' not in sys.modules and 'torch' not in sys.modules, 'imported too early'\n"
        "started = time.monotonic()\n"
        "from connectors.documents import load_unstructured\n"
        "load_unstructured()\n"
        "print(round(time.monotonic() - started, 2))\n"
        "assert 'torchvision' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(DECK.resolve()), str(HANDOUT.resolve())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    print(f"importing unstructured: {proc.stdout.strip()} s")


# -- the real default embedder, once on the office path ------------------------------------------


@pytest.mark.slow
def test_deck_and_handout_with_the_real_embedder(tmp_path):
    db = tmp_path / "kb.db"
    started = time.monotonic()
    result = ingest(db, DECK, HANDOUT, embedder=None)
    print(f"deck + handout with all-MiniLM-L6-v2: {time.monotonic() - started:.2f} s")
    assert [r.status for r in result.reports] == ["ok", "ok"], result.to_dict()
    with KB.open(db) as kb:
        searcher = Searcher(kb)
        notes_hit = searcher.search("How does a snow pillow measure the water held in a snowpack?", k=1)[0]
        handout_hit = searcher.search("Why does a double-ring infiltrometer need an outer ring?", k=1)[0]
    assert notes_hit.locator.slide == 2 and notes_hit.link.endswith("snow-and-ice-lecture.pptx#slide=2")
    assert handout_hit.locator.heading.endswith("Infiltration > The double-ring infiltrometer")
