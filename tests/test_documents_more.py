"""Excel workbooks and e-mail through the unstructured connector: sheets, saved formula values, subjects.

Real files throughout: workbooks the tests write with openpyxl (and, for formula values, complete
the way a spreadsheet program saves them), messages built with the stdlib email package, real
SQLite files and the hash embedder (the real default embedder once). One test runs kb with the
network really off; the bad-input test ingests a zip bomb and an entity-laden workbook beside a good one.
"""

from __future__ import annotations

import datetime
import email.utils
import io
import json
import os
import re
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from kb import KB, Ingester, Limits, Searcher
from tests.helpers import run_kb_offline

SECRET = "kb-test-secret-never-to-be-read"
SAVED_VALUES = {"B4": "1890.5", "C4": "275"}
"""What Excel or LibreOffice would store beside the formulas =B2+B3 and =SUM(C2:C3) of `workbook()`."""


def ingest(db: Path, *targets, embedder: str | None = "test/hash-embedder", limits: Limits | None = None):
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder=embedder, limits=limits).run([str(t) for t in targets])


def reports(result) -> dict:
    return {Path(r.uri).name: r.to_dict() for r in result.reports}


def chunks(db: Path, name: str) -> list[dict]:
    with KB.open(db) as kb:
        rows = kb.conn.execute(
            "SELECT chunks.page, chunks.heading, chunks.link, chunks.text FROM chunks JOIN sources "
            "ON sources.id = chunks.source_id WHERE sources.uri LIKE ? ORDER BY chunks.ordinal",
            (f"%/{name}",),
        ).fetchall()
    return [dict(zip(("page", "heading", "link", "text"), tuple(row))) for row in rows]


def source_row(db: Path, name: str) -> dict:
    with KB.open(db) as kb:
        row = kb.conn.execute(
            "SELECT kind, title, status, error, metadata FROM sources WHERE uri LIKE ?", (f"%/{name}",)
        ).fetchone()
    kind, title, status, error, metadata = tuple(row)
    return {"kind": kind, "title": title, "status": status, "error": error, "metadata": json.loads(metadata or "{}")}


def by_heading(rows: list[dict]) -> dict[str, str]:
    out: dict[str, str] = {}
    for row in rows:
        out[row["heading"]] = (out[row["heading"]] + "\n\n" if row["heading"] in out else "") + row["text"]
    return out


# -- workbooks ---------------------------------------------------------------------------------------


def workbook(title: str | None = None) -> bytes:
    """Two sheets with numbers, two formulas, dates and a blank row, a hidden sheet and an empty one."""
    import openpyxl

    book = openpyxl.Workbook()
    rain = book.active
    rain.title = "Rainfall"
    rain.append(["Station", "Rain (mm)", "Days"])
    rain.append(["Upland gauge", 1250.5, 180])
    rain.append(["Valley gauge", 640, 95])
    rain.append(["Total", "=B2+B3", "=SUM(C2:C3)"])
    rain.append([])
    rain.append(["Measured", datetime.date(2024, 3, 1)])
    rain.append(["Calibrated", True, datetime.datetime(2024, 3, 1, 14, 30), 0.1 + 0.2, "two\nlines", None, None])
    rivers = book.create_sheet("River flows")
    rivers.append(["River", "Mean flow (m3/s)"])
    rivers.append(["Severn", 107])
    rivers.append(["Thames", 65.8])
    book.create_sheet("Empty")
    notes = book.create_sheet("Notes")
    notes["A1"] = "Gauge 2 was moved in May."
    notes.sheet_state = "hidden"
    if title:
        book.properties.title = title
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def rewrite_zip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The same archive with some parts' contents replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, replace.get(entry.filename, source.read(entry)))
    return out.getvalue()


def with_saved_values(data: bytes, values: dict[str, str]) -> bytes:
    """The workbook as a spreadsheet program saves it: each formula cell carries its last computed value.

    openpyxl writes formulas with an empty <v/>; Excel, LibreOffice and Google Sheets write the value.
    """
    sheet = "xl/worksheets/sheet1.xml"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        xml = archive.read(sheet).decode()
    for ref, value in values.items():
        xml, found = re.subn(rf'(<c r="{ref}"[^>]*><f>[^<]*</f>)<v\s*/?>(</v>)?', rf"\1<v>{value}</v>", xml)
        assert found == 1, (ref, xml)
    return rewrite_zip(data, {sheet: xml.encode()})


def understate_used_range(data: bytes) -> bytes:
    """Every sheet declares its used range as A1 alone, as some writers get it wrong."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        sheets = {n: archive.read(n) for n in archive.namelist() if n.startswith("xl/worksheets/")}
    return rewrite_zip(
        data, {n: re.sub(rb'<dimension ref="[^"]*"', b'<dimension ref="A1"', x) for n, x in sheets.items()}
    )


def test_workbook_sheets_rows_and_saved_formula_values(tmp_path, hash_embedder):
    saved = tmp_path / "rain-gauges.xlsx"
    saved.write_bytes(understate_used_range(with_saved_values(workbook(title="Rain gauges 2024"), SAVED_VALUES)))
    unsaved = tmp_path / "written-by-a-script.xlsx"
    unsaved.write_bytes(workbook())
    db = tmp_path / "kb.db"
    started = time.monotonic()
    result = ingest(db, saved, unsaved)
    print(f"two workbooks: {time.monotonic() - started:.2f} s")
    assert [r.status for r in result.reports] == ["ok", "ok"], result.to_dict()

    rows = chunks(db, saved.name)
    sheets = by_heading(rows)
    # One section per sheet, headed by the sheet's name; the empty sheet has none; every row is read
    # although the file understates its used range; empty cells at a row's end are dropped.
    assert set(sheets) == {"Rainfall", "River flows", "Notes"}
    assert sheets["Rainfall"] == (
        "Station | Rain (mm) | Days\n\nUpland gauge | 1250.5 | 180\n\nValley gauge | 640 | 95\n\n"
        "Total | 1890.5 | 275\n\nMeasured | 2024-03-01\n\nCalibrated | TRUE | 2024-03-01 14:30:00 | 0.3 | two lines"
    )
    assert sheets["River flows"] == "River | Mean flow (m3/s)\n\nSevern | 107\n\nThames | 65.8"
    assert sheets["Notes"] == "Gauge 2 was moved in May."
    # A sheet is no page: the citation opens the file itself.
    assert all(r["page"] is None and r["link"] == saved.resolve().as_uri() for r in rows)
    source = source_row(db, saved.name)
    assert source["kind"] == "xlsx" and source["title"] == "Rain gauges 2024"
    assert source["metadata"]["sheets"] == 3 and source["metadata"]["hidden_sheets"] == ["Notes"]
    assert "formulas_without_saved_values" not in source["metadata"]

    # kb never calculates: formulas nobody saved a value for read as empty, and are counted.
    script = by_heading(chunks(db, unsaved.name))
    assert "\n\nTotal\n\nMeasured | 2024-03-01" in script["Rainfall"]
    assert "=B2+B3" not in script["Rainfall"] and "SUM" not in script["Rainfall"]
    source = source_row(db, unsaved.name)
    assert source["title"] == "written-by-a-script"
    assert source["metadata"]["formulas_without_saved_values"] == 2

    with KB.open(db) as kb:
        hit = Searcher(kb).search("Severn mean flow", k=1)[0]
    assert hit.locator.heading == "River flows" and "Severn | 107" in hit.text


def test_fetched_workbook_links_to_its_url(tmp_path, hash_embedder):
    from kb import Fetched

    with KB.open(tmp_path / "kb.db", create=True) as kb:
        report = Ingester(kb, embedder=hash_embedder).ingest_one(
            Fetched(uri="https://example.org/t/gauges.xlsx", name="gauges.xlsx", data=workbook())
        )
        assert report.status == "ok", report
        hit = Searcher(kb).search("Thames mean flow", k=1)[0]
        title = kb.conn.execute("SELECT title FROM sources").fetchone()[0]
    assert hit.link == "https://example.org/t/gauges.xlsx" and hit.locator.heading == "River flows"
    assert title == "gauges"


def test_a_workbook_of_empty_sheets_is_empty(tmp_path, hash_embedder):
    import openpyxl

    book = openpyxl.Workbook()
    book.create_sheet("Also empty")
    book.save(tmp_path / "blank.xlsx")
    found = reports(ingest(tmp_path / "kb.db", tmp_path / "blank.xlsx"))
    assert found["blank.xlsx"]["status"] == "empty" and found["blank.xlsx"]["reason"] == "every sheet is empty"


# -- e-mail --------------------------------------------------------------------------------------------

SENT = datetime.datetime(2024, 10, 3, 8, 30, tzinfo=datetime.UTC)


def message(html: bool = True) -> bytes:
    """A course e-mail: plain text and HTML alternatives and an attachment kb must not read."""
    msg = EmailMessage()
    msg["Subject"] = "Field trip: river gauging on Friday"
    msg["From"] = "Ana Lima <ana.lima@example.edu>"
    msg["To"] = "students@example.edu"
    msg["Date"] = email.utils.format_datetime(SENT)
    msg["Message-ID"] = "<trip-1@example.edu>"
    msg.set_content(
        "Dear all,\n\nWe meet at the weir at 9:00.\nBring waders\n\n"
        "The current meter measures velocity at six tenths of the depth.\n"
    )
    if html:
        msg.add_alternative(
            "<html><body><h1>Field trip</h1><p>We meet at the weir at 9:00. Bring waders.</p>"
            "<h2>Method</h2><p>The current meter measures velocity at six tenths of the depth.</p></body></html>",
            subtype="html",
        )
    msg.add_attachment(f"attachment: {SECRET}".encode(), maintype="text", subtype="plain", filename="risk.txt")
    return bytes(msg)


def test_email_subject_body_headings_and_no_attachments(tmp_path, hash_embedder):
    (tmp_path / "trip.eml").write_bytes(message(html=True))
    (tmp_path / "plain.eml").write_bytes(message(html=False))
    db = tmp_path / "kb.db"
    started = time.monotonic()
    result = ingest(db, tmp_path / "trip.eml", tmp_path / "plain.eml")
    print(f"two e-mails: {time.monotonic() - started:.2f} s")
    assert [r.status for r in result.reports] == ["ok", "ok"], result.to_dict()

    source = source_row(db, "trip.eml")
    assert source["kind"] == "eml" and source["title"] == "Field trip: river gauging on Friday"
    assert source["metadata"]["sender"] == "Ana Lima <ana.lima@example.edu>"
    assert source["metadata"]["date"] == "2024-10-03T08:30:00+00:00"
    # The HTML body's headings become the heading path.
    sections = by_heading(chunks(db, "trip.eml"))
    assert sections == {
        "Field trip": "We meet at the weir at 9:00. Bring waders.",
        "Field trip > Method": "The current meter measures velocity at six tenths of the depth.",
    }
    # A plain-text body has no headings, however short its lines.
    plain = chunks(db, "plain.eml")
    assert {r["heading"] for r in plain} == {None}
    text = "\n\n".join(r["text"] for r in plain)
    assert "Dear all," in text and "Bring waders" in text and "six tenths of the depth" in text
    assert source_row(db, "plain.eml")["title"] == "Field trip: river gauging on Friday"

    with KB.open(db) as kb:
        everything = " ".join(row[0] for row in kb.conn.execute("SELECT text FROM chunks"))
    assert SECRET not in everything and "risk.txt" not in everything


# -- no network --------------------------------------------------------------------------------------


def test_workbook_and_email_ingest_with_the_network_off(tmp_path):
    """kb ingest in a network namespace with no interfaces, and an audit hook that reports any socket use."""
    (tmp_path / "gauges.xlsx").write_bytes(with_saved_values(workbook(), SAVED_VALUES))
    (tmp_path / "trip.eml").write_bytes(message())
    good = tmp_path / "good.md"
    good.write_text("# Note\n\nA plain note ingested in the same run.\n")
    db = tmp_path / "kb.db"
    targets = [str(tmp_path / "gauges.xlsx"), str(tmp_path / "trip.eml"), str(good)]
    started = time.monotonic()
    proc = run_kb_offline("ingest", str(db), *targets, "--json", "--embedder", "hash")
    print(f"kb ingest of a workbook, an e-mail and a note, network off: {time.monotonic() - started:.2f} s")
    assert "NETWORK ATTEMPT" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    found = {Path(r["uri"]).name: r for r in json.loads(proc.stdout)["sources"]}
    assert {name: r["status"] for name, r in found.items()} == {"gauges.xlsx": "ok", "trip.eml": "ok", "good.md": "ok"}
    assert "Total | 1890.5 | 275" in by_heading(chunks(db, "gauges.xlsx"))["Rainfall"]
    assert source_row(db, "trip.eml")["title"] == "Field trip: river gauging on Friday"
    assert "Bring waders" in by_heading(chunks(db, "trip.eml"))["Field trip"]


# -- bad input -----------------------------------------------------------------------------------------

BOMB_MB = 600
"""Over office_safety's 512 MB uncompressed cap; the file itself is under 3 MB."""


def workbook_bomb(good: bytes) -> bytes:
    """A real workbook whose first sheet is padded with 600 MB of spaces (about 1,000-fold)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, 1) as target:
        for entry in source.infolist():
            if entry.filename != "xl/worksheets/sheet1.xml":
                target.writestr(entry.filename, source.read(entry))
                continue
            xml = source.read(entry)
            cut = xml.index(b"<sheetData>")
            with target.open(entry.filename, "w", force_zip64=True) as handle:
                handle.write(xml[:cut])
                block = b" " * 2**20
                for _ in range(BOMB_MB):
                    handle.write(block)
                handle.write(xml[cut:])
    return out.getvalue()


def test_hostile_and_broken_workbooks_and_messages(tmp_path, hash_embedder):
    good = workbook()
    bomb = workbook_bomb(good)
    assert len(bomb) < 4 * 2**20
    (tmp_path / "bomb.xlsx").write_bytes(bomb)
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        sheet = archive.read("xl/worksheets/sheet1.xml").decode()
    hostile = sheet.replace(
        "<worksheet ", f'<!DOCTYPE worksheet [<!ENTITY xxe SYSTEM "file://{secret}">]>\n<worksheet ', 1
    ).replace("<t>Upland gauge</t>", "<t>&xxe;</t>")
    assert "&xxe;" in hostile
    (tmp_path / "xxe.xlsx").write_bytes(rewrite_zip(good, {"xl/worksheets/sheet1.xml": hostile.encode()}))
    import docx

    docx.Document().save(tmp_path / "handout.xlsx")  # a Word file named as a workbook
    (tmp_path / "noise.eml").write_bytes(os.urandom(3000).replace(b":", b"."))
    (tmp_path / "good.xlsx").write_bytes(good)

    db = tmp_path / "kb.db"
    started = time.monotonic()
    names = ["bomb.xlsx", "xxe.xlsx", "handout.xlsx", "noise.eml", "good.xlsx"]
    found = reports(ingest(db, *(tmp_path / n for n in names)))
    elapsed = time.monotonic() - started
    print(f"four bad files and a good workbook: {elapsed:.2f} s")
    assert found["bomb.xlsx"]["status"] == "error"
    assert found["bomb.xlsx"]["reason"] == (
        f"refused as a likely zip bomb: the .xlsx archive expands to {BOMB_MB:,} MB (the limit is 512 MB)"
    )
    assert found["xxe.xlsx"]["reason"] == (
        "refused: xl/worksheets/sheet1.xml in the .xlsx file has entity declarations "
        "(external entities read local files and nested ones expand without bound)"
    )
    assert found["handout.xlsx"]["reason"] == "not a .xlsx file (the archive has no xl/workbook.xml)"
    assert found["noise.eml"]["reason"] == (
        "not an e-mail message (it has no Subject, From, Date or Message-ID header)"
    )
    assert found["good.xlsx"]["status"] == "ok", found["good.xlsx"]
    with KB.open(db) as kb:
        everything = " ".join(row[0] for row in kb.conn.execute("SELECT text FROM chunks"))
    assert SECRET not in everything and "Upland gauge" in everything

    # Text limits hold for both formats: a long sheet and a long body are refused, not truncated.
    import openpyxl

    book = openpyxl.Workbook()
    for i in range(200):
        book.active.append([f"station {i}", i * 1.5, "rain gauge reading"])
    book.save(tmp_path / "long.xlsx")
    long_mail = EmailMessage()
    long_mail["Subject"] = "Long notes"
    long_mail.set_content("Infiltration is the entry of water into soil. " * 500)
    (tmp_path / "long.eml").write_bytes(bytes(long_mail))
    limits = Limits(max_chars=2_000)
    found = reports(ingest(tmp_path / "small.db", tmp_path / "long.xlsx", tmp_path / "long.eml", limits=limits))
    assert found["long.xlsx"]["reason"] == "too much text (over 2,000 characters)"
    assert found["long.eml"]["reason"] == "too much text (the message body is over 8,000 bytes)"


# -- the real default embedder, once on this path ----------------------------------------------------


@pytest.mark.slow
def test_workbook_and_email_with_the_real_embedder(tmp_path):
    (tmp_path / "gauges.xlsx").write_bytes(with_saved_values(workbook(), SAVED_VALUES))
    (tmp_path / "trip.eml").write_bytes(message())
    db = tmp_path / "kb.db"
    started = time.monotonic()
    result = ingest(db, tmp_path / "gauges.xlsx", tmp_path / "trip.eml", embedder=None)
    print(f"workbook + e-mail with all-MiniLM-L6-v2: {time.monotonic() - started:.2f} s")
    assert [r.status for r in result.reports] == ["ok", "ok"], result.to_dict()
    with KB.open(db) as kb:
        searcher = Searcher(kb)
        flow = searcher.search("What is the mean flow of the River Thames?", k=1)[0]
        trip = searcher.search("At what fraction of the depth does the current meter measure velocity?", k=1)[0]
    assert flow.locator.heading == "River flows" and "Thames | 65.8" in flow.text
    assert trip.locator.heading == "Field trip > Method" and trip.source.title.startswith("Field trip")
