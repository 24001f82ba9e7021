"""Web pages and sites: the sample course's web site served on 127.0.0.1 (with the allowance to reach
a loopback address), ingested and crawled through the real fetcher, connectors and KB files.

`Site` is the test web server; tests/test_web_bad_input.py uses it too.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import mimetypes
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from kb import KB, Ingester, Limits
from tests.helpers import COURSE, TEST_PLUGINS, kb_cli, run_kb

ROBOTS = b"User-agent: *\nDisallow: /website/staff-notes.html\n"
GOOD_PAGE = "/website/floods.html"
SITE_PAGES = ("course.html", "floods.html", "water-quality.html", "further-reading.html")
"""The pages a crawl from course.html reaches; staff-notes.html is disallowed by ROBOTS."""


class Site:
    """A web server in a thread on 127.0.0.1 serving a folder (with ETag and Last-Modified), a robots.txt,
    and routes a test adds; it records every request it gets."""

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None):
        self.root = root
        self.scheme = "https" if tls else "http"
        self.robots: tuple[int, bytes] = (200, ROBOTS)
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, dict[str, str], int]] = []
        """(path, request headers, status sent) for every request, in order."""
        self.closing = threading.Event()
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                self.close_connection = True
                path = self.path
                if path in site.routes:
                    site.record(path, self, 0)
                    try:
                        site.routes[path](self)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up on a hostile answer: what the test wants
                    return
                if path == "/robots.txt":
                    status, body = site.robots
                    self.answer(status, body, "text/plain")
                    return
                site.serve_file(self)

            def answer(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
                site.record(self.path, self, status)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.server.handle_error = lambda *args: None  # a client refusing the certificate is expected
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def record(self, path: str, handler: BaseHTTPRequestHandler, status: int) -> None:
        with self._lock:
            self.requests.append((path, {k.lower(): v for k, v in handler.headers.items()}, status))

    def serve_file(self, handler) -> None:
        relative = unquote(urlsplit(handler.path).path).lstrip("/")
        path = (self.root / relative).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            handler.answer(404, b"<h1>Not found</h1>", "text/html")
            return
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        modified = email.utils.formatdate(int(path.stat().st_mtime), usegmt=True)
        headers = {"ETag": etag, "Last-Modified": modified}
        if handler.headers.get("If-None-Match") == etag:
            handler.send_response(304)
            self.record(handler.path, handler, 304)
            for name, value in {**headers, "Connection": "close"}.items():
                handler.send_header(name, value)
            handler.end_headers()
            return
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/"):
            kind += "; charset=utf-8"
        handler.answer(200, body, kind, headers)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.server.server_address[1]}{path}"

    def paths(self, status: int | None = None) -> list[str]:
        with self._lock:
            return [p for p, _, s in self.requests if status is None or s == status]

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    """The sample course served read-only (the web site is under /website/)."""
    with Site(COURSE) as running:
        yield running


@pytest.fixture
def site_copy(course):
    """A private copy of the sample course served, so a test can change a page."""
    with Site(course) as running:
        yield running


def ingest(db: Path, *urls: str, embedder: str = "test/hash-embedder", limits: Limits | None = None, **options):
    prune = options.pop("prune", False)
    options = {"allow_private": True, **options}
    with KB.open(db, create=True) as kb:
        return Ingester(kb, embedder=embedder, limits=limits, options=options).run(list(urls), prune=prune)


def rows(db: Path, sql: str, *args) -> list[tuple]:
    with KB.open(db) as kb:
        return kb.conn.execute(sql, args).fetchall()


def page_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


class ExtractSpy:
    """Counts calls of the real HTML connector (which still does the work)."""

    def __init__(self, monkeypatch):
        from connectors.html import HtmlConnector

        self.calls = 0
        real = HtmlConnector.extract

        def counted(connector, source):
            self.calls += 1
            return real(connector, source)

        monkeypatch.setattr(HtmlConnector, "extract", counted)


# -- one page --------------------------------------------------------------------------------------


def test_one_page_keeps_main_text_headings_anchors_and_title(tmp_path, site, hash_embedder):
    db = tmp_path / "kb.db"
    url = site.url("/website/floods.html")
    result = ingest(db, url)
    [report] = result.reports
    assert (report.uri, report.status, report.kind) == (url, "ok", "html"), report
    [(title, metadata_json)] = rows(db, "SELECT title, metadata FROM sources")
    assert title == "Floods and flood risk | The Water Cycle course website"
    metadata = json.loads(metadata_json)
    assert metadata["content_type"] == "text/html" and metadata["etag"].startswith('"')
    assert metadata["last_modified"].endswith("GMT") and metadata["final_url"] == url
    chunks = rows(db, "SELECT heading, anchor, link, text FROM chunks ORDER BY ordinal")
    by_heading = {heading: (anchor, link, text) for heading, anchor, link, text in chunks}
    heading = "Floods and flood risk > Return periods and annual exceedance probability"
    anchor, link, text = by_heading[heading]
    assert (anchor, link) == ("return-periods", f"{url}#return-periods")
    assert "1 - (1 - 1/T)^n" in text
    deep = by_heading[heading + " > Estimating a flood frequency curve"]
    assert deep[1] == f"{url}#flood-frequency" and "Weibull plotting position" in deep[2]
    assert by_heading["Floods and flood risk > Managing flood risk > Flood warnings"][1] == f"{url}#flood-warnings"
    text = " ".join(c[3] for c in chunks)
    # The menu, breadcrumbs, sidebar and footer are not the page's text.
    for chrome in ("Skip to content", "Course home", "Week 6", "Related pages", "Tutors' area", "Accessibility"):
        assert chrome not in text, chrome
    assert site.paths() == ["/website/floods.html"]  # one request: no robots.txt without --crawl
    assert site.requests[0][1]["user-agent"].startswith("kb/")


def test_the_final_url_after_redirects_is_the_source(tmp_path, site, hash_embedder):
    def moved(handler):
        handler.send_response(301)
        handler.send_header("Location", "/website/water-quality.html#dissolved-oxygen")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    site.routes["/wq"] = moved
    db = tmp_path / "kb.db"
    [report] = ingest(db, site.url("/wq#top")).reports
    final = site.url("/website/water-quality.html")
    assert (report.uri, report.status) == (final, "ok"), report
    [(uri, metadata)] = rows(db, "SELECT uri, metadata FROM sources")
    assert uri == final and json.loads(metadata)["redirected_from"] == site.url("/wq")
    links = [r[0] for r in rows(db, "SELECT link FROM chunks WHERE anchor = 'dissolved-oxygen'")]
    assert links == [f"{final}#dissolved-oxygen"]


def test_other_document_types_go_to_their_connectors(tmp_path, site, hash_embedder):
    db = tmp_path / "kb.db"
    result = ingest(db, site.url("/field-guide-measuring-rainfall.md"), site.url("/hydrology-lecture-notes.pdf"))
    assert [(r.status, r.kind) for r in result.reports] == [("ok", "markdown"), ("ok", "pdf")], result.to_dict()
    pdf_links = {r[0] for r in rows(db, "SELECT link FROM chunks WHERE page IS NOT NULL")}
    assert site.url("/hydrology-lecture-notes.pdf#page=5") in pdf_links
    headings = {r[0] for r in rows(db, "SELECT heading FROM chunks WHERE heading LIKE '%Thiessen%'")}
    assert headings == {"Field guide: measuring rainfall > From point to area > Thiessen polygons"}


def test_fetched_documents_without_a_title_are_named_from_the_url(tmp_path, site_copy, hash_embedder):
    # A fetched source has no local path: connectors fall back to the URL's file name for the title.
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Interception is rain caught by leaves that evaporates before reaching the ground.")
    pdf.output(str(site_copy.root / "untitled-notes.pdf"))
    (site_copy.root / "long-first-line.txt").write_text("Infiltration " * 20 + "\n\nSoil takes in water.\n")
    deck = next(site_copy.root.glob("*.pptx"))
    urls = [site_copy.url(f"/{name}") for name in ("untitled-notes.pdf", "long-first-line.txt", deck.name)]
    result = ingest(tmp_path / "kb.db", *urls)
    assert [r.status for r in result.reports] == ["ok", "ok", "ok"], result.to_dict()
    titles = dict(rows(tmp_path / "kb.db", "SELECT uri, title FROM sources"))
    assert titles[urls[0]] == "untitled-notes" and titles[urls[1]] == "long-first-line"
    slide_links = {r[0] for r in rows(tmp_path / "kb.db", "SELECT link FROM chunks WHERE slide = 2")}
    assert slide_links == {urls[2] + "#slide=2"}


def test_loopback_is_refused_without_the_allowance(tmp_path, site):
    db = tmp_path / "kb.db"
    proc = kb_cli(
        "ingest", str(db), site.url("/website/floods.html"), "--json", "--embedder", "hash", env_extra=TEST_PLUGINS
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    [source] = json.loads(proc.stdout)["sources"]
    assert source["status"] == "error"
    assert source["reason"] == "refused: 127.0.0.1 is a loopback address; pass --allow-private to fetch it"
    assert site.requests == []  # refused before connecting
    crawl = kb_cli(
        "ingest", str(db), site.url("/website/"), "--crawl", "--json", "--embedder", "hash", env_extra=TEST_PLUGINS
    )
    [source] = json.loads(crawl.stdout)["sources"]
    assert source["reason"].startswith("refused: 127.0.0.1 is a loopback address") and site.requests == []


@pytest.mark.slow  # the real embedder: sentence-transformers' import alone takes ~8 s
def test_real_default_embedder_on_one_page(tmp_path, site):
    db = tmp_path / "kb.db"
    url = site.url("/website/water-quality.html")
    proc = run_kb("ingest", str(db), url, "--allow-private", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sources"][0]["status"] == "ok"
    search = run_kb("search", str(db), "which insect larvae show that a stream is clean", "-k", "3", "--json")
    assert search.returncode == 0, search.stderr
    top = json.loads(search.stdout)[0]
    assert top["link"] == f"{url}#biological-monitoring" and top["heading"] == "Water quality > Biological monitoring"


def test_the_charset_the_server_names_wins(tmp_path, site, hash_embedder):
    page = (
        b'<html><head><meta charset="utf-8"><title>Caf\xe9 hydrology</title></head>'
        b"<body><h1 id='top'>Na\xefve flow</h1><p>R\xe9sum\xe9 of the s\xe9ance.</p></body></html>"
    )
    site.routes["/latin1.html"] = lambda h: h.answer(200, page, "text/html; charset=iso-8859-1")
    db = tmp_path / "kb.db"
    [report] = ingest(db, site.url("/latin1.html")).reports
    assert report.status == "ok", report
    assert rows(db, "SELECT title FROM sources") == [("Café hydrology",)]
    assert rows(db, "SELECT heading, text FROM chunks") == [("Naïve flow", "Résumé of the séance.")]


def test_a_page_without_main_loses_its_furniture_by_class_id_and_role(tmp_path, site, hash_embedder):
    # Old-style markup: everything in one <form> (as ASP.NET pages are), menus and footers as divs.
    page = b"""<html><head><title>Gauging stations</title></head><body><form id="aspnetForm">
      <div id="top-menu"><a href="/">Home</a> <a href="/news">News</a></div>
      <div role="navigation"><a href="/a">Site map</a></div>
      <div class="content"><h2 id="stations">Gauging stations</h2>
        <p>A gauging station records the water level of a river every fifteen minutes.</p>
        <div class="share-buttons">Share this page</div>
        <h3 id="rating">Rating curves</h3><p>A rating curve turns the recorded level into a discharge.</p>
      </div>
      <div class="cookie-consent">We use cookies to improve this site.</div>
      <div id="site-footer">Copyright the river trust</div></form></body></html>"""
    site.routes["/stations.html"] = lambda h: h.answer(200, page, "text/html")
    db = tmp_path / "kb.db"
    [report] = ingest(db, site.url("/stations.html")).reports
    assert report.status == "ok", report
    got = rows(db, "SELECT heading, anchor, text FROM chunks ORDER BY ordinal")
    assert got == [
        ("Gauging stations", "stations", "A gauging station records the water level of a river every fifteen minutes."),
        ("Gauging stations > Rating curves", "rating", "A rating curve turns the recorded level into a discharge."),
    ]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_checks_the_certificate_for_the_name_asked(tmp_path, certificate, hash_embedder, monkeypatch):
    with Site(COURSE, tls=certificate) as site:
        [refused] = ingest(tmp_path / "a.db", site.url(GOOD_PAGE)).reports
        assert refused.status == "error"
        assert refused.reason.startswith("the TLS certificate of 127.0.0.1 did not verify (self"), refused
        # Trusted, the same certificate works both by address and by name (SNI and the
        # certificate check use the name; the connection goes to the address checked).
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        result = ingest(tmp_path / "b.db", site.url(GOOD_PAGE), site.url(GOOD_PAGE, host="localhost"))
        # Both fetched and read; the second holds the same bytes, so it is stored once, as a duplicate.
        assert [(r.uri, r.status) for r in result.reports] == [
            (site.url(GOOD_PAGE), "ok"),
            (site.url(GOOD_PAGE, host="localhost"), "duplicate"),
        ]
        assert site.paths(200) == [GOOD_PAGE, GOOD_PAGE]


# -- crawling --------------------------------------------------------------------------------------


def test_crawl_follows_the_prefix_honours_robots_and_limits(tmp_path, site, hash_embedder):
    start = site.url("/website/course.html")
    started = time.monotonic()
    result = ingest(tmp_path / "all.db", start, crawl=True, max_depth=2, max_pages=50)
    elapsed = time.monotonic() - started
    assert [(page_name(r.uri), r.status) for r in result.reports] == [(p, "ok") for p in SITE_PAGES], result.to_dict()
    assert elapsed < 30
    asked = site.paths()
    assert asked.count("/robots.txt") == 1
    assert sorted(asked) == sorted(["/robots.txt"] + [f"/website/{p}" for p in SITE_PAGES])
    # Not asked: the page robots.txt disallows, the course's pages outside /website/, the
    # external site, and links to an image and a zip file that no connector reads.
    assert "/website/staff-notes.html" not in asked and "/glossary-web/index.html" not in asked
    deep_links = {r[0] for r in rows(tmp_path / "all.db", "SELECT link FROM chunks")}
    assert site.url("/website/further-reading.html#water-quality") in deep_links

    site.requests.clear()
    shallow = ingest(tmp_path / "depth1.db", start, crawl=True, max_depth=1, max_pages=50)
    assert [page_name(r.uri) for r in shallow.reports] == ["course.html", "floods.html", "water-quality.html"]
    assert "/website/further-reading.html" not in site.paths()

    site.requests.clear()
    capped = ingest(tmp_path / "two.db", start, crawl=True, max_depth=5, max_pages=2)
    assert [page_name(r.uri) for r in capped.reports] == ["course.html", "floods.html"]
    assert site.paths() == ["/robots.txt", "/website/course.html", "/website/floods.html"]

    site.requests.clear()
    only_start = ingest(tmp_path / "zero.db", start, crawl=True, max_depth=0)
    assert [page_name(r.uri) for r in only_start.reports] == ["course.html"]

    # Starting on a page robots.txt disallows says so, and fetches nothing else.
    site.requests.clear()
    [closed] = ingest(tmp_path / "closed.db", site.url("/website/staff-notes.html"), crawl=True).reports
    assert (closed.status, closed.reason) == (
        "error",
        f"{site.url('')}/robots.txt does not allow crawlers to fetch this page",
    )
    assert site.paths() == ["/robots.txt"]


def test_crawl_from_the_command_line_and_without_robots_txt(tmp_path, site):
    site.robots = (404, b"<h1>Not found</h1>")
    proc = kb_cli(
        "ingest",
        str(tmp_path / "kb.db"),
        site.url("/website/course.html"),
        "--crawl",
        "--depth",
        "1",
        "--max-site-pages",
        "10",
        "--allow-private",
        "--json",
        "--embedder",
        "hash",
        env_extra=TEST_PLUGINS,
    )
    assert proc.returncode == 0, proc.stderr
    got = [(page_name(s["uri"]), s["status"]) for s in json.loads(proc.stdout)["sources"]]
    # With no robots.txt (404) everything may be crawled, the tutors' page too.
    assert got == [(p, "ok") for p in ("course.html", "floods.html", "water-quality.html", "staff-notes.html")]


def test_recrawl_revalidates_and_replaces_only_what_changed(tmp_path, site_copy, hash_embedder, monkeypatch):
    db = tmp_path / "kb.db"
    start = site_copy.url("/website/course.html")
    first = ingest(db, start, crawl=True)
    assert [r.status for r in first.reports] == ["ok"] * 4
    chunk_ids = dict(rows(db, "SELECT id, text FROM chunks"))

    spy = ExtractSpy(monkeypatch)
    site_copy.requests.clear()
    second = ingest(db, start, crawl=True)
    assert [(page_name(r.uri), r.status) for r in second.reports] == [(p, "unchanged") for p in SITE_PAGES]
    # One conditional request per page, each answered 304 with no body: nothing was parsed again.
    pages = [(p, h, s) for p, h, s in site_copy.requests if p != "/robots.txt"]
    assert len(pages) == 4 and all(s == 304 and "if-none-match" in h for p, h, s in pages), pages
    assert len(site_copy.requests) == 5 and spy.calls == 0
    assert dict(rows(db, "SELECT id, text FROM chunks")) == chunk_ids

    page = site_copy.root / "website" / "water-quality.html"
    page.write_text(
        page.read_text().replace(
            "</main>",
            '<h2 id="chalk-streams">Chalk streams</h2><p>Chalk streams run clear and cool because springs '
            "feed them filtered groundwater at a nearly constant temperature.</p></main>",
        )
    )
    third = ingest(db, start, crawl=True)
    statuses = {page_name(r.uri): r.status for r in third.reports}
    assert statuses == {**{p: "unchanged" for p in SITE_PAGES}, "water-quality.html": "ok"}
    assert spy.calls == 1
    [(link,)] = rows(db, "SELECT link FROM chunks WHERE text LIKE '%nearly constant temperature%'")
    assert link == site_copy.url("/website/water-quality.html#chalk-streams")
    assert rows(db, "SELECT count(*) FROM sources") == [(4,)]


# -- pieces ----------------------------------------------------------------------------------------


def test_file_names_pick_the_connector():
    from connectors.web import file_name

    def readable(name):
        return name.endswith((".html", ".md", ".pdf", ".txt", ".xhtml"))

    assert file_name("http://h/a/floods.php?x=1", "text/html", b"", readable) == "floods.html"
    assert file_name("http://h/a/", "text/html", b"", readable) == "index.html"
    assert file_name("http://h/notes.md", "text/plain", b"", readable) == "notes.md"
    assert file_name("http://h/notes", "text/markdown", b"", readable) == "notes.md"
    assert file_name("http://h/download?id=3", "application/pdf", b"", readable) == "download.pdf"
    assert file_name("http://h/report", "application/octet-stream", b"%PDF-1.7 ...", readable) == "report.pdf"
    assert file_name("http://h/x.html", "application/xhtml+xml", b"", readable) == "x.xhtml"
    assert file_name("http://h/Caf%C3%A9%20menu.htm", "", b"<!DOCTYPE html><html>", readable) == "Café-menu.html"


def test_urls_are_normalised_and_kept_under_the_prefix():
    from connectors.web import normalise, page_links, url_prefix, worth_fetching

    assert normalise("HTTP://Example.ORG:80/a/b.html#part") == "http://example.org/a/b.html"
    assert normalise("https://example.org:8443") == "https://example.org:8443/"
    assert normalise("mailto:someone@example.org") is None and normalise("javascript:void(0)") is None
    assert url_prefix("http://h/course/week1.html") == "http://h/course/"
    assert url_prefix("http://h/course/") == "http://h/course/"
    page = (
        b'<html><head><base href="/course/"></head><body><a href="week2.html#x">2</a><a href="week2.html">2</a>'
        b'<a href="../other/">o</a><a rel="nofollow" href="login.html">l</a><a href="ftp://h/f">f</a></body></html>'
    )
    assert page_links(page, "http://h/course/week1.html") == ["http://h/course/week2.html", "http://h/other/"]

    def readable(name):
        return name.endswith((".html", ".pdf"))

    assert worth_fetching("http://h/a/page.php", readable) and worth_fetching("http://h/a/", readable)
    assert worth_fetching("http://h/docs/v1.2", readable) and worth_fetching("http://h/a.pdf", readable)
    assert not worth_fetching("http://h/map.png", readable) and not worth_fetching("http://h/data.zip", readable)


def test_a_page_gone_from_a_crawled_site_is_missing_then_pruned(tmp_path, course, hash_embedder):
    db = tmp_path / "kb.db"
    with Site(course) as site:
        start = site.url("/website/course.html")
        first = ingest(db, start, crawl=True, max_depth=1)
        assert {r.uri.rsplit("/", 1)[-1] for r in first.reports if r.status == "ok"} >= {"floods.html"}
        (course / "website" / "floods.html").unlink()  # the teacher took the page down: 404 now
        again = {r.uri.rsplit("/", 1)[-1]: r for r in ingest(db, start, crawl=True, max_depth=1).reports}
        assert again["floods.html"].status == "missing" and "404" in again["floods.html"].reason
        assert not again["floods.html"].reason.endswith("kept the version ingested before")
        pruned = {r.uri.rsplit("/", 1)[-1]: r for r in ingest(db, start, crawl=True, max_depth=1, prune=True).reports}
    assert pruned["floods.html"].status == "removed"
    with KB.open(db) as kb:
        assert kb.get_source(site.url(GOOD_PAGE)) is None
