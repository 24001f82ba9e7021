"""Web pages and sites: fetch a URL (or crawl the pages under its prefix) for the connectors to read.

The fetcher never parses a page for its text: it hands the bytes over under a file name whose suffix
picks the connector ("floods.html" for text/html, "notes.pdf" for application/pdf), so a fetched
page is cited exactly like a local file of the same kind, with the page's URL as its identity.
Fetching goes through connectors.safe_http (http(s) only, public addresses only, a deadline and a
byte cap per page); a crawl also honours robots.txt and revalidates pages kb already holds with
ETag / Last-Modified, so an unchanged site costs one small request per page.
"""

from __future__ import annotations

import codecs
import mimetypes
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from kb import FetchContext, Fetched, SourceError, hookimpl, option, read_options

from ._robots import Robots
from .safe_http import FetchError, NetworkOptions, Policy, Response, fetch

PAGE_MAX_BYTES = 10 * 2**20
"""Most bytes of an HTML or text page: far beyond any real page, well inside the HTML connector's limit."""
DOCUMENT_MAX_BYTES = 100 * 2**20
"""Most bytes of any other fetched document (a PDF, a slide deck), held in memory while it is read."""
PAGE_MAX_SECONDS = 120.0
"""Longest wall-clock time one page may take to arrive, whatever --timeout says."""
MAX_LINKS = 1000
"""Links kept from one page (in its metadata too, so a crawl can go on past a page that is unchanged)."""
ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"

SUFFIX_FOR_TYPE = {
    "text/html": ".html",
    "application/xhtml+xml": ".xhtml",
    "application/pdf": ".pdf",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/plain": ".txt",
}
GENERIC_TYPES = frozenset(("", "application/octet-stream", "binary/octet-stream", "application/x-download"))
HTML_TYPES = frozenset(("text/html", "application/xhtml+xml"))
# Server-side page suffixes (and none at all) are web pages, whatever mimetypes thinks of them.
PAGE_SUFFIXES = frozenset((".php", ".asp", ".aspx", ".jsp", ".jspx", ".cgi", ".pl", ".cfm", ".shtml", ".do"))


@dataclass(frozen=True)
class WebOptions(NetworkOptions):
    """The web fetcher's options: whether and how far it crawls."""

    crawl: bool = option(False, "Also follow links from web pages to pages under the same URL prefix.", flag="--crawl")
    max_depth: int = option(2, "How many links deep --crawl goes.", minimum=0, flag="--depth")
    max_pages: int = option(50, "Most pages --crawl fetches from one starting URL.", minimum=1, flag="--max-site-pages")


class WebFetcher:
    """http(s) URLs: one page, or with --crawl the pages linked under the same URL prefix."""

    name = "web"
    priority = 0
    """The fallback for http(s): fetchers for video sites and media files are asked first."""
    options = WebOptions

    @staticmethod
    def claims(url: str) -> bool:
        return urlsplit(url).scheme.lower() in ("http", "https")

    def fetch(self, url: str, context: FetchContext) -> Iterator[Fetched]:
        if read_options(WebOptions, context.options).crawl:
            yield from crawl(url, context)
            return
        fetched, _ = _fetch_page(normalise(url) or url, context, want_links=False)
        yield fetched


# -- one page --------------------------------------------------------------------------------------


def _page_policy(context: FetchContext) -> Policy:
    timeout = context.limits.timeout_s
    return Policy(
        allow_private=read_options(WebOptions, context.options).allow_private,
        timeout_s=min(timeout, PAGE_MAX_SECONDS) if timeout > 0 else PAGE_MAX_SECONDS,
        max_bytes=min(context.limits.max_bytes, DOCUMENT_MAX_BYTES),
    )


def _fetch_page(url: str, context: FetchContext, *, want_links: bool) -> tuple[Fetched, list[str]]:
    """Fetch one URL as a Fetched for the engine (an error is a Fetched too), and the links it holds."""
    policy = _page_policy(context)

    def conditional(asked: str) -> dict[str, str]:
        # Revalidate only what kb holds; a crawl also needs the page's links from last time.
        meta = context.previous(normalise(asked) or asked)
        if not meta or (want_links and "links" not in meta):
            return {}
        headers = {}
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
        return headers

    try:
        response = fetch(url, policy, conditional=conditional, check_body=_body_check(policy), accept=ACCEPT)
    except FetchError as exc:
        return Fetched(uri=url, error=str(exc), gone=getattr(exc, "status", None) in (404, 410)), []
    final = normalise(response.url) or response.url
    if response.status == 304:
        meta = context.previous(final)
        if not meta:
            return Fetched(uri=final, error="the server answered 304 Not Modified to a plain request"), []
        name = file_name(final, meta.get("content_type", ""), b"", context.readable)
        return Fetched(uri=final, name=name, not_modified=True), list(meta.get("links", []))
    name = file_name(final, response.content_type, response.body, context.readable)
    data = _as_utf8(response) if name.endswith((".html", ".xhtml", ".txt", ".md")) else response.body
    metadata: dict[str, Any] = {
        "content_type": response.content_type or None,
        "final_url": final,
        "redirected_from": response.redirects[0] if response.redirects else None,
        "etag": response.headers.get("etag"),
        "last_modified": response.headers.get("last-modified"),
    }
    links: list[str] = []
    if want_links and response.content_type in HTML_TYPES | {""} and name.endswith((".html", ".xhtml")):
        links = page_links(data, final)
        metadata["links"] = links
    return Fetched(uri=final, name=name, data=data, metadata={k: v for k, v in metadata.items() if v}), links


def _body_check(policy: Policy) -> Callable[[str, int | None], int]:
    def check(content_type: str, length: int | None) -> int:
        major = content_type.split("/", 1)[0]
        if major in ("audio", "video") or content_type == "application/ogg":
            raise FetchError(
                f"is a media file ({content_type}), which the web fetcher does not download; media URLs "
                "that end in a media suffix (.mp4, .mp3, ...) or come from a video site are read by the media fetcher"
            )
        if major == "text" or content_type in HTML_TYPES:
            return min(policy.max_bytes, PAGE_MAX_BYTES)
        return policy.max_bytes  # documents, and untyped bodies (often a PDF from a course platform)

    return check


def file_name(url: str, content_type: str, body: bytes, readable: Callable[[str], bool]) -> str:
    """A file name whose suffix picks the connector: from the media type, else the URL, else the bytes."""
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    segment = re.sub(r"[^\w.-]+", "-", segment).strip(".-")[:100]
    stem, suffix = os.path.splitext(segment)
    stem = stem or "index"
    if suffix and (content_type in GENERIC_TYPES or content_type == "text/plain") and readable(segment):
        return segment  # a .md or .pdf served as text/plain or octet-stream keeps its own suffix
    generic = content_type in GENERIC_TYPES
    known = SUFFIX_FOR_TYPE.get(content_type) or (None if generic else mimetypes.guess_extension(content_type))
    if known:
        return stem + known
    head = body[:1024].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return stem + ".pdf"
    if head.startswith((b"<!doctype html", b"<html")):
        return stem + ".html"
    return stem + suffix if suffix else stem


def _as_utf8(response: Response) -> bytes:
    """The page as UTF-8 with a BOM when the server names its charset: a BOM outranks a <meta> that disagrees."""
    charset = response.charset
    if not charset:
        return response.body
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        return response.body  # an unknown charset: let the connector guess, as for a local file
    text = response.body.decode(codec.name, "replace").lstrip("\ufeff")
    return codecs.BOM_UTF8 + text.encode("utf-8")


# -- links and URLs ------------------------------------------------------------------------------


def normalise(url: str) -> str | None:
    """The URL a crawl compares: http(s) only, lower-case scheme and host, no default port, no fragment."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != (443 if scheme == "https" else 80):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def page_links(data: bytes, page_url: str) -> list[str]:
    """The http(s) links of an HTML page, resolved and normalised, each once, in page order."""
    from .html import parse_html

    try:
        root = parse_html(data)
    except SourceError:
        return []
    base = page_url
    base_el = root.find(".//base[@href]")
    if base_el is not None:
        base = urljoin(page_url, base_el.get("href", "").strip())
    found: dict[str, None] = {}
    for element in root.iter("a", "area"):
        href = (element.get("href") or "").strip()
        if not href or "nofollow" in (element.get("rel") or "").lower().split():
            continue
        url = normalise(urljoin(base, href))
        if url:
            found[url] = None
            if len(found) >= MAX_LINKS:
                break
    return list(found)


def url_prefix(url: str) -> str:
    """What a crawl stays under: scheme, host, port and the folder of the start page's path."""
    parts = urlsplit(url)
    folder = parts.path[: parts.path.rfind("/") + 1] or "/"
    return urlunsplit((parts.scheme, parts.netloc, folder, "", ""))


def worth_fetching(url: str, readable: Callable[[str], bool]) -> bool:
    """False for links whose file suffix names a type no connector reads (images, archives, ...)."""
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    suffix = os.path.splitext(segment)[1].lower()
    if not suffix or suffix in PAGE_SUFFIXES or readable(segment):
        return True
    # An unknown suffix ("/docs/v1.2", "/item.123") is most likely a page; a known type nobody reads is not.
    return mimetypes.guess_type(segment)[0] is None


# -- a crawl ---------------------------------------------------------------------------------------


def crawl(start: str, context: FetchContext) -> Iterator[Fetched]:
    """Breadth first from `start` through links under its prefix, within depth and page limits."""
    options = read_options(WebOptions, context.options)
    max_depth, max_pages = int(options.max_depth), int(options.max_pages)
    robots = Robots(_page_policy(context))
    first = normalise(start) or start
    queue: deque[tuple[str, int]] = deque([(first, 0)])
    queued = {first}
    done: set[str] = set()
    prefix: str | None = None
    asked = 0
    while queue and asked < max_pages:
        url, depth = queue.popleft()
        refusal = robots.refusal(url)
        if refusal:
            if depth == 0:  # the page the user named: say why nothing was crawled
                yield Fetched(uri=url, error=refusal)
            continue
        asked += 1
        fetched, links = _fetch_page(url, context, want_links=depth < max_depth)
        if fetched.uri in done:  # two links that redirect to one page
            continue
        done.add(fetched.uri)
        if depth > 0 and fetched.name and not context.readable(fetched.name):
            continue  # a link that turned out to be an image or an archive: not part of the course text
        yield fetched
        if prefix is None:
            # The prefix comes from where the start URL landed (http://site/course -> /course/).
            prefix = url_prefix(url if fetched.error else fetched.uri)
        if depth >= max_depth or not fetched.uri.startswith(prefix):
            continue
        for link in links:
            if link in queued or not link.startswith(prefix) or not worth_fetching(link, context.readable):
                continue
            queued.add(link)
            queue.append((link, depth + 1))


@hookimpl
def register_fetchers(register):
    register(WebFetcher)
