"""Clean text on real documents nobody here wrote: Debian's Sphinx-built Python tutorial and the Bash
Reference Manual (a Texinfo PDF with a running header on every page), plus Markdown and Word code."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from kb import KB, Ingester
from kb.chunker import ChunkingSettings, chunk_document
from kb.evaluate import heading_matches
from kb.types import Document, Locator, Section, SourceFile
from tests.helpers import COURSE

SPHINX = Path("/usr/share/doc/python3-doc/html/tutorial")
BASHREF = Path("/usr/share/doc/bash/bashref.pdf")
FLATTENED = re.compile(r">>> [^\n]*? (?:>>>|\.\.\.) ")


def ingest(db, *targets):
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder="test/hash-embedder").run([str(t) for t in targets])


@pytest.mark.skipif(not SPHINX.is_dir(), reason="needs Debian's python3-doc (make test installs it)")
def test_a_sphinx_site_has_no_pilcrows_and_keeps_its_examples_lines(tmp_path, hash_embedder):
    pages = [SPHINX / name for name in ("classes.html", "controlflow.html", "introduction.html", "errors.html")]
    raw = "".join(p.read_text() for p in pages)
    assert raw.count('class="headerlink"') > 50 and raw.count("&gt;&gt;&gt; ") > 100  # the marks are there
    db = tmp_path / "kb.db"
    assert {r.status for r in ingest(db, *pages).reports} == {"ok"}
    with KB.open(db) as kb:
        chunks = kb.conn.execute("SELECT heading, text, anchor FROM chunks").fetchall()
    assert len(chunks) > 100
    assert not [h for h, t, _ in chunks if "\u00b6" in (h or "") + t]
    examples = [t for _, t, _ in chunks if ">>> " in t]
    assert len(examples) > 30
    # No line holds two prompts (">>> class Warehouse: ... purpose = ..." is an example flattened).
    assert not [t for t in examples if FLATTENED.search(t)]
    warehouse = next(t for t in examples if "class Warehouse" in t)
    assert ">>> class Warehouse:\n...    purpose = 'storage'\n...    region = 'west'" in warehouse
    headings = {h for h, _, _ in chunks}
    assert "9. Classes > 9.4. Random Remarks" in headings
    assert all(a for h, _, a in chunks if h and h.startswith("9. Classes >"))


@pytest.mark.skipif(not BASHREF.is_file(), reason="needs Debian's bash-doc (make test installs it)")
def test_a_real_pdf_manual_has_no_running_header_in_any_chunk():
    import pypdf

    from connectors.pdf import strip_running_lines

    raw = [page.extract_text() for page in pypdf.PdfReader(BASHREF).pages]
    # The manual's own headers: "Chapter 3: Basic Shell Features 35" atop each page of a chapter, a
    # chapter's title changing every few pages, and a lone page number on each chapter's first page.
    firsts = [t.splitlines()[0].strip() for t in raw if t.strip()]
    headers = {line for line in firsts if re.match(r"^(Chapter \d+|Appendix [A-Z]): .+ \d+$", line)}
    assert len(headers) > 150
    cleaned = strip_running_lines(raw)
    doc = Document(BASHREF.as_uri(), "pdf", "Bash", [Section(t, Locator(page=n)) for n, t in enumerate(cleaned, 1)])
    chunks = chunk_document(doc, ChunkingSettings())
    assert len(chunks) > 600
    assert not [c for c in chunks if any(h in c.text for h in headers)]
    # Only the headers went: the body text is all there, section headings included.
    assert sum(map(len, cleaned)) > 0.98 * sum(map(len, raw))
    assert "3.1.2 Quoting" in cleaned[11] and "Chapter 3" not in cleaned[11].splitlines()[0]


def test_markdown_anchors_and_fenced_code(tmp_path, hash_embedder):
    db = tmp_path / "kb.db"
    notes = tmp_path / "notes.md"
    code = "\n".join(f"    total_{i} = rainfall[{i}] * area  # gauge {i}" for i in range(60))
    notes.write_text(f"# Notes\n\n## Water balance: P = Q + E!\n\nThe code:\n\n```python\n{code}\n```\n\nAfter it.\n")
    ingest(db, COURSE / "field-guide-measuring-rainfall.md", notes)
    with KB.open(db) as kb:
        rows = kb.conn.execute("SELECT heading, anchor, link, text FROM chunks").fetchall()
    links = {h: link for h, _, link, _ in rows}
    # The ids GitHub and markdown-it give these headings.
    assert links["Field guide: measuring rainfall > Types of rain gauge > Tipping-bucket gauges"].endswith(
        "field-guide-measuring-rainfall.md#tipping-bucket-gauges"
    )
    assert links["Notes > Water balance: P = Q + E!"].endswith("notes.md#water-balance-p--q--e")
    code_chunks = [t for h, _, _, t in rows if "total_" in t]
    assert len(code_chunks) >= 3  # 60 lines of 45 characters do not fit one chunk
    lines = set(code.splitlines())
    for text in code_chunks:
        # Whole lines, indentation kept: every line of code in a chunk is a line of the block.
        assert all(line in lines for line in text.split("\n") if "total_" in line), text


def test_word_code_style_keeps_lines():
    import docx
    from docx.enum.style import WD_STYLE_TYPE

    from connectors.word import WordConnector

    document = docx.Document()
    document.add_heading("Scripts", level=1)
    document.add_paragraph("Run this in the lab:")
    document.styles.add_style("Code", WD_STYLE_TYPE.PARAGRAPH)
    for line in ("for gauge in gauges:", "    print(gauge.reading)"):
        document.add_paragraph(line, style="Code")
    out = io.BytesIO()
    document.save(out)
    doc = WordConnector().extract(SourceFile(uri="file:///x.docx", path=None, data=out.getvalue(), name="x.docx"))
    texts = [c.text for c in chunk_document(doc)]
    # The code travels with the sentence that introduces it, its lines and indentation intact.
    assert texts == ["Run this in the lab:\n\nfor gauge in gauges:\n    print(gauge.reading)"]


def test_eval_matches_headings_by_normalised_text():
    assert heading_matches("Types of rain gauge", "Field guide > 2. Types of Rain Gauge\u00b6")
    assert heading_matches("Random remarks", "9. Classes > 9.4. Random Remarks")
    assert heading_matches("Classes > Random Remarks", "9. Classes > 9.4. Random Remarks")
    assert heading_matches("Shell Builtin Commands", "Chapter 4: Shell Builtin Commands")
    assert not heading_matches("Remarks", "9. Classes > 9.4. Random Remarks")  # parts, not a suffix of text
    assert not heading_matches("A river", "River")  # "A" is a word here, not a numbering
    assert not heading_matches("Baseflow", None)
