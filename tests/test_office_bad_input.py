"""Hostile and broken office documents: zip bombs, XML entities, truncated archives, encrypted files.

Each gets status error with a clear reason, in bounded time and memory, and the rest of the run
goes on (every run here ingests a good file too). Real archives made by the tests; real SQLite.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from kb import KB, Ingester
from tests.helpers import COURSE, run_kb_measured

DECK = COURSE / "snow-and-ice-lecture.pptx"
HANDOUT = COURSE / "handout-soil-moisture-and-infiltration.docx"
BOMB_MB = 600
"""Over the 512 MB uncompressed cap; a 2.7 MB file."""
SECRET = "kb-test-secret-never-to-be-read"


def ingest(db: Path, *targets):
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder="test/hash-embedder").run([str(t) for t in targets])


def reports(result) -> dict:
    return {Path(r.uri).name: r.to_dict() for r in result.reports}


def all_text(db: Path) -> str:
    with KB.open(db) as kb:
        return " ".join(row[0] for row in kb.conn.execute("SELECT text FROM chunks"))


@pytest.fixture
def good_md(tmp_path) -> Path:
    path = tmp_path / "good" / "snowmelt.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text("# Snowmelt\n\nSnowmelt feeds rivers in spring.\n")
    return path


def rewrite_zip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The same archive with some parts' contents replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            target.writestr(entry.filename, replace.get(entry.filename, source.read(entry)))
    return out.getvalue()


@pytest.fixture(scope="session")
def bomb_bytes() -> bytes:
    """A real zip bomb: Office-looking parts around one entry of 600 MB of spaces (about 1,000-fold)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr("META-INF/container.xml", "<container/>")
        archive.writestr("content.xml", "<office/>")
        block = b" " * 2**20
        with archive.open("word/document.xml", "w", force_zip64=True) as handle:
            for _ in range(BOMB_MB):
                handle.write(block)
    return out.getvalue()


# -- zip bombs -------------------------------------------------------------------------------------


def test_zip_bomb_disguised_as_office_files_is_refused_in_bounded_memory(tmp_path, bomb_bytes, good_md):
    names = ["bomb.docx", "bomb.pptx", "bomb.epub", "bomb.odt"]
    for name in names:
        (tmp_path / name).write_bytes(bomb_bytes)
    assert len(bomb_bytes) < 4 * 2**20
    args = ["ingest", str(tmp_path / "kb.db"), *(str(tmp_path / n) for n in names), str(good_md)]
    started = time.monotonic()
    proc, peak_kib = run_kb_measured(*args, "--json", "--embedder", "hash")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr  # some sources failed; the run itself completed
    found = {Path(r["uri"]).name: r for r in json.loads(proc.stdout)["sources"]}
    for name in names:
        assert found[name]["status"] == "error"
        assert found[name]["reason"].startswith("refused as a likely zip bomb: the "), found[name]
        assert f"archive expands to {BOMB_MB:,} MB (the limit is 512 MB)" in found[name]["reason"]
    assert found["snowmelt.md"]["status"] == "ok"
    peak_mb = peak_kib / 1024
    print(f"zip bomb run: {elapsed:.2f} s, peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 400 and elapsed < 60


def test_one_entry_that_expands_a_thousand_fold(tmp_path, hash_embedder, good_md):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("ppt/slides/slide1.xml", b" " * 64 * 2**20)
    (tmp_path / "ratio.pptx").write_bytes(out.getvalue())
    found = reports(ingest(tmp_path / "kb.db", tmp_path / "ratio.pptx", good_md))
    reason = found["ratio.pptx"]["reason"]
    assert reason.startswith("refused as a likely zip bomb: ppt/slides/slide1.xml expands "), reason
    assert "-fold to 64 MB (the limit is 200-fold)" in reason
    assert found["snowmelt.md"]["status"] == "ok"


def test_an_archive_of_too_many_entries(tmp_path, hash_embedder, good_md):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for i in range(50_001):
            archive.writestr(f"word/media/{i}.xml", b"")
    (tmp_path / "many.docx").write_bytes(out.getvalue())
    started = time.monotonic()
    found = reports(ingest(tmp_path / "kb.db", tmp_path / "many.docx", good_md))
    assert time.monotonic() - started < 20
    assert found["many.docx"]["reason"] == (
        "refused as a likely zip bomb: the .docx archive has 50,001 entries (the limit is 50,000)"
    )
    assert found["snowmelt.md"]["status"] == "ok"


# -- XML entities ----------------------------------------------------------------------------------

XXE = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<!DOCTYPE w:document [<!ENTITY xxe SYSTEM "file://{path}">]>\n'
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>'
    "<w:p><w:r><w:t>&xxe;</w:t></w:r></w:p></w:body></w:document>"
)
LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + ']>\n<p:sld xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" '
    'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"><p:cSld><p:spTree><p:sp><p:txBody><a:p><a:r>'
    "<a:t>&lol9;</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"
)


def test_external_entities_and_entity_expansion_are_refused(tmp_path, hash_embedder, good_md):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    xxe_docx = rewrite_zip(HANDOUT.read_bytes(), {"word/document.xml": XXE.format(path=secret).encode()})
    (tmp_path / "xxe.docx").write_bytes(xxe_docx)
    laughs_pptx = rewrite_zip(DECK.read_bytes(), {"ppt/slides/slide1.xml": LAUGHS.encode()})
    (tmp_path / "laughs.pptx").write_bytes(laughs_pptx)
    # An EPUB's XHTML may carry a DOCTYPE, but never entity declarations.
    book = tmp_path / "book.md"
    book.write_text("# Ice\n\nPlain text.\n")
    epub = tmp_path / "plain.epub"
    subprocess.run(["pandoc", str(book), "-o", str(epub), "--metadata", "title=Ice"], check=True, capture_output=True)
    with zipfile.ZipFile(epub) as archive:
        chapter = next(n for n in archive.namelist() if n.endswith(".xhtml") and "ch0" in n)
        xhtml = archive.read(chapter).decode()
    hostile = xhtml.replace("<!DOCTYPE html>", f'<!DOCTYPE html [<!ENTITY xxe SYSTEM "file://{secret}">]>').replace(
        "Plain text.", "&xxe;"
    )
    assert hostile != xhtml
    (tmp_path / "xxe.epub").write_bytes(rewrite_zip(epub.read_bytes(), {chapter: hostile.encode()}))

    db = tmp_path / "kb.db"
    found = reports(ingest(db, tmp_path / "xxe.docx", tmp_path / "laughs.pptx", tmp_path / "xxe.epub", good_md))
    assert found["xxe.docx"]["reason"] == (
        "refused: word/document.xml in the .docx file has entity declarations "
        "(external entities read local files and nested ones expand without bound)"
    )
    assert found["laughs.pptx"]["reason"].startswith("refused: ppt/slides/slide1.xml in the .pptx file has entity")
    assert found["xxe.epub"]["reason"].startswith(f"refused: {chapter} in the EPUB file has entity declarations")
    assert found["snowmelt.md"]["status"] == "ok"
    assert SECRET not in all_text(db)


def test_a_doctype_alone_is_refused_in_office_xml(tmp_path, hash_embedder):
    document = '<?xml version="1.0"?>\n<!DOCTYPE w:document SYSTEM "http://127.0.0.1:9/evil.dtd">\n<w:document/>'
    (tmp_path / "dtd.docx").write_bytes(rewrite_zip(HANDOUT.read_bytes(), {"word/document.xml": document.encode()}))
    found = reports(ingest(tmp_path / "kb.db", tmp_path / "dtd.docx"))
    assert "word/document.xml in the .docx file has a DOCTYPE declaration" in found["dtd.docx"]["reason"]


def test_an_rst_include_cannot_read_local_files(tmp_path, hash_embedder):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    doc = tmp_path / "notes.rst"
    doc.write_text(f"Snow\n====\n\nSnow is frozen water.\n\n.. include:: {secret}\n")
    db = tmp_path / "kb.db"
    found = reports(ingest(db, doc))
    assert found["notes.rst"]["status"] == "ok"
    assert "Snow is frozen water." in all_text(db) and SECRET not in all_text(db)


# -- truncated, damaged and mislabelled archives --------------------------------------------------


@pytest.mark.parametrize("fraction", [0.5, 0.97])
def test_truncated_archives(tmp_path, hash_embedder, good_md, fraction):
    book = tmp_path / "book.md"
    book.write_text("# Ice\n\nPlain text.\n")
    epub = tmp_path / "book.epub"
    subprocess.run(["pandoc", str(book), "-o", str(epub), "--metadata", "title=Ice"], check=True, capture_output=True)
    for source, name in ((DECK, "cut.pptx"), (HANDOUT, "cut.docx"), (epub, "cut.epub")):
        data = source.read_bytes()
        (tmp_path / name).write_bytes(data[: int(len(data) * fraction)])
    found = reports(
        ingest(tmp_path / "kb.db", tmp_path / "cut.pptx", tmp_path / "cut.docx", tmp_path / "cut.epub", good_md)
    )
    for name, label in (("cut.pptx", ".pptx"), ("cut.docx", ".docx"), ("cut.epub", "EPUB")):
        assert found[name]["status"] == "error"
        assert found[name]["reason"].startswith(f"damaged or truncated {label} file"), found[name]
    assert found["snowmelt.md"]["status"] == "ok"


def test_corrupt_entry_data_is_a_damaged_file(tmp_path, hash_embedder):
    data = bytearray(HANDOUT.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("word/document.xml")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 20, start + 60):
        data[i] ^= 0xFF
    (tmp_path / "flipped.docx").write_bytes(bytes(data))
    reason = reports(ingest(tmp_path / "kb.db", tmp_path / "flipped.docx"))["flipped.docx"]["reason"]
    assert reason.startswith("damaged or truncated .docx file (word/document.xml: "), reason


def test_mislabelled_files(tmp_path, hash_embedder, good_md):
    (tmp_path / "handout.pptx").write_bytes(HANDOUT.read_bytes())  # a Word file named as a deck
    (tmp_path / "junk.docx").write_bytes(os.urandom(5000))
    (tmp_path / "empty.pptx").write_bytes(b"")
    found = reports(
        ingest(tmp_path / "kb.db", tmp_path / "handout.pptx", tmp_path / "junk.docx", tmp_path / "empty.pptx", good_md)
    )
    assert found["handout.pptx"]["reason"].startswith("not a PowerPoint deck ("), found["handout.pptx"]
    assert found["junk.docx"]["reason"] == "not a .docx file (not a zip archive)"
    assert found["empty.pptx"]["reason"] == "empty file"
    assert found["snowmelt.md"]["status"] == "ok"


# -- password-protected Office files --------------------------------------------------------------


def ole_file(streams: dict[str, bytes]) -> bytes:
    """A minimal Compound File Binary (OLE2) container, version 3, holding the given streams.

    The wrapper Office uses for every password-protected .docx/.pptx/.xlsx: the encrypted package
    lives in a stream "EncryptedPackage" next to "EncryptionInfo". Streams are padded to 4,096
    bytes so they live in regular sectors (no mini stream needed).
    """
    sector = 512
    end, free, fat_sector = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    names = list(streams)
    data = [streams[n].ljust(4096, b"\0") for n in names]
    fat = [fat_sector, end]  # sector 0: the FAT, sector 1: the directory
    starts = []
    for blob in data:
        count = len(blob) // sector
        starts.append(len(fat))
        fat += [len(fat) + i + 1 for i in range(count - 1)] + [end]
    fat += [free] * (sector // 4 - len(fat))

    def entry(name: str, kind: int, child: int, right: int, start: int, size: int) -> bytes:
        encoded = (name + "\0").encode("utf-16-le")
        return (
            encoded.ljust(64, b"\0")
            + struct.pack("<HBBIII", len(encoded), kind, 1, free, right, child)
            + b"\0" * 16
            + struct.pack("<IQQIQ", 0, 0, 0, start, size)
        )

    # A directory tree of one black node per level: each stream is the next one's left-free sibling.
    directory = entry("Root Entry", 5, 1, free, end, 0)
    for i, name in enumerate(names):
        right = i + 2 if i + 1 < len(names) else free
        directory += entry(name, 2, free, right, starts[i], len(streams[name]))
    directory = directory.ljust(sector, b"\0")
    header = (
        bytes.fromhex("d0cf11e0a1b11ae1")
        + b"\0" * 16
        + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
        + b"\0" * 6
        + struct.pack("<IIIIIIIII", 0, 1, 1, 0, 4096, end, 0, end, 0)
        + struct.pack("<I", 0)
        + struct.pack("<I", free) * 108
    )
    assert len(header) == sector
    return header + struct.pack(f"<{len(fat)}I", *fat) + directory + b"".join(data)


def test_password_protected_office_files(tmp_path, hash_embedder, good_md):
    import olefile

    encrypted = ole_file({"EncryptionInfo": b"\x04\x00\x04\x00\x40\x00\x00\x00", "EncryptedPackage": os.urandom(3000)})
    legacy = ole_file({"WordDocument": os.urandom(2000)})
    # The test's containers are real OLE files, as Office and olefile read them.
    with olefile.OleFileIO(io.BytesIO(encrypted)) as ole:
        assert ole.exists("EncryptedPackage") and ole.exists("EncryptionInfo")
    (tmp_path / "locked.docx").write_bytes(encrypted)
    (tmp_path / "locked.pptx").write_bytes(encrypted)
    (tmp_path / "old.docx").write_bytes(legacy)
    # A password-protected OpenDocument file is a zip whose manifest says its parts are encrypted.
    book = tmp_path / "book.md"
    book.write_text("# Ice\n\nPlain text.\n")
    odt = tmp_path / "plain.odt"
    subprocess.run(["pandoc", str(book), "-o", str(odt)], check=True, capture_output=True)
    with zipfile.ZipFile(odt) as archive:
        manifest = archive.read("META-INF/manifest.xml").decode()
    manifest = manifest.replace(
        'manifest:full-path="content.xml"',
        'manifest:full-path="content.xml"><manifest:encryption-data manifest:checksum-type="SHA1"/'
        '></manifest:file-entry><manifest:file-entry manifest:media-type="" manifest:full-path="x"',
        1,
    )
    (tmp_path / "locked.odt").write_bytes(rewrite_zip(odt.read_bytes(), {"META-INF/manifest.xml": manifest.encode()}))

    found = reports(
        ingest(
            tmp_path / "kb.db",
            *(tmp_path / n for n in ("locked.docx", "locked.pptx", "old.docx", "locked.odt")),
            good_md,
        )
    )
    assert found["locked.docx"]["reason"] == (
        "password-protected (encrypted) Office file: save an unprotected copy of the .docx"
    )
    assert found["locked.pptx"]["reason"] == (
        "password-protected (encrypted) Office file: save an unprotected copy of the .pptx"
    )
    assert found["old.docx"]["reason"].startswith("an old binary Office file (Word 97-2003 .doc")
    assert found["locked.odt"]["reason"] == (
        "password-protected (encrypted) OpenDocument file: save an unprotected copy"
    )
    assert found["snowmelt.md"]["status"] == "ok"


ENCRYPTION_XML = (
    '<?xml version="1.0"?><encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
    'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
    '<enc:EncryptionMethod Algorithm="{algorithm}"/><enc:CipherData><enc:CipherReference URI="{uri}"/>'
    "</enc:CipherData></enc:EncryptedData></encryption>"
)


def test_drm_protected_epub_is_refused_and_font_obfuscation_is_not(tmp_path, hash_embedder):
    book = tmp_path / "book.md"
    book.write_text("# Ice\n\nPlain text about ice sheets.\n")
    epub = tmp_path / "plain.epub"
    subprocess.run(["pandoc", str(book), "-o", str(epub), "--metadata", "title=Ice"], check=True, capture_output=True)
    with zipfile.ZipFile(epub) as archive:
        chapter = next(n for n in archive.namelist() if n.endswith(".xhtml") and "ch0" in n)
    for name, algorithm in (
        ("drm.epub", "http://www.w3.org/2001/04/xmlenc#aes128-cbc"),
        ("fonts.epub", "http://www.idpf.org/2008/embedding"),
    ):
        listing = ENCRYPTION_XML.format(algorithm=algorithm, uri=chapter).encode()
        with zipfile.ZipFile(tmp_path / name, "w", zipfile.ZIP_DEFLATED) as target, zipfile.ZipFile(epub) as source:
            for entry in source.infolist():
                target.writestr(entry, source.read(entry))
            target.writestr("META-INF/encryption.xml", listing)
    found = reports(ingest(tmp_path / "kb.db", tmp_path / "drm.epub", tmp_path / "fonts.epub"))
    assert found["drm.epub"]["reason"] == "DRM-protected (encrypted) EPUB: its text cannot be read"
    assert found["fonts.epub"]["status"] == "ok"
