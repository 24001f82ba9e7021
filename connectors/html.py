"""HTML files and fetched web pages: the main text (no menus, scripts or footers) with heading paths
and anchors.

Walks the tree with lxml's iterwalk, never recursively, so 100,000 nested tags cost time in
proportion to their number and no stack. lxml's HTML parser never reads a DTD: entities declared
in a page (billion laughs, external entities) are not expanded, and nothing is fetched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kb import Document, SectionBuilder, SourceError, SourceFile, hookimpl

MAX_HTML_BYTES = 20 * 2**20
"""lxml's tree costs ~20x the page in memory: 20 MB of HTML stays under half a gigabyte."""
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
NOT_TEXT = frozenset(
    ("script", "style", "noscript", "template", "svg", "button", "select", "iframe", "object", "canvas", "dialog")
)
"""Never text a reader wants: dropped wherever they are."""
PAGE_CHROME = frozenset(("nav", "aside", "header", "footer"))
"""Site menus, sidebars, banners and footers; a <header> or <footer> inside an <article> or <main>
belongs to that content (it often holds the article's own title) and is kept."""
CHROME_ROLES = frozenset(
    ("navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar", "dialog", "alertdialog")
)
# A class or id token naming site furniture: "site-nav", "navbar", "cookie-banner", "footer-links".
# Token-wise, so "canvas" or "navigable" never match.
CHROME_NAMES = re.compile(
    r"(?:^|[-_])(?:nav|navbar|navigation|menu|menubar|breadcrumbs?|footer|cookies?|consent|gdpr|sidebar|"
    r"skip-?links?|share|social)(?:[-_]|$)",
    re.IGNORECASE,
)
CONTENT = frozenset(("main", "article"))
MAX_CHROME_SHARE = 0.5
"""An element marked as furniture by class, id, role or <form> is kept when it holds more than this
share of the page's text: it is then a wrapper around the content, not a menu."""
BLOCKS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "td",
    "th",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "br",
    "hr",
    "address",
    "details",
    "summary",
    "body",
}


def parse_html(data: bytes) -> Any:
    import lxml.html
    from lxml import etree

    if not data.strip():
        raise SourceError("empty file")
    try:
        # huge_tree raises libxml2's depth limit from 256 to 2,048 levels; iterwalk keeps the walk flat.
        parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True, huge_tree=True, no_network=True)
        root = lxml.html.document_fromstring(data, parser=parser)
    except (etree.ParserError, ValueError) as exc:
        raise SourceError(f"not readable as HTML ({exc})") from exc
    if root is None:
        raise SourceError("not readable as HTML")
    limit = next((e.message for e in parser.error_log if e.type_name == "ERR_RESOURCE_LIMIT"), None)
    if limit:
        # libxml2 stops at a limit and keeps only what came before: say so rather than ingest a
        # silently truncated page.
        if "depth" in limit.lower():
            raise SourceError("HTML nested too deeply to read (over 2,048 levels; the rest would be lost)")
        raise SourceError(f"HTML too large for the parser ({limit.strip()})")
    return root


def _html_document(root: Any, uri: str, fallback_title: str, max_chars: int) -> Document:
    """Turn a parsed page into a Document of heading-located sections."""
    from lxml import etree

    title_el = root.find(".//title")
    title = " ".join(title_el.text_content().split()) if title_el is not None else ""
    _strip_boilerplate(root)
    _strip_permalinks(root)
    main = _main_element(root)

    builder = SectionBuilder(max_chars)
    buffer: list[str] = []
    heading_parts: list[str] | None = None
    heading_level = 0
    heading_anchor: str | None = None
    pending_anchor: str | None = None

    def flush(code: str | None = None) -> None:
        builder.add("".join(buffer).strip())
        buffer.clear()
        if code:
            builder.add(code, code=True)

    walker = etree.iterwalk(main, events=("start", "end"))
    for event, element in walker:
        tag = element.tag if isinstance(element.tag, str) else ""
        if event == "start" and tag == "pre" and heading_parts is None:
            # Code and preformatted text keep their lines: a section of its own that is never reflowed.
            code = element.text_content()
            builder.count(len(code))
            flush(code)
            walker.skip_subtree()
            continue
        if event == "end" and tag == "pre" and heading_parts is None:
            if element.tail:
                buffer.append(element.tail)
            continue
        if event == "start":
            if element.get("id") and heading_parts is None and tag in ("a", "section", "div", "article"):
                pending_anchor = element.get("id")
            if tag in HEADINGS and heading_parts is None:
                flush()
                heading_parts, heading_level = [], HEADINGS[tag]
                # The heading's own id, an <a name> inside it, or the id of the <section> it opens.
                heading_anchor = element.get("id") or _child_anchor(element) or pending_anchor
                pending_anchor = None
                heading_parts.append(element.text or "")
                continue
            target = heading_parts if heading_parts is not None else buffer
            if tag in BLOCKS:
                target.append("\n\n" if tag != "br" else "\n")
            if element.text:
                target.append(element.text)
                builder.count(len(element.text))
        else:
            if tag in HEADINGS and heading_parts is not None and HEADINGS[tag] == heading_level:
                text = " ".join("".join(heading_parts).split())
                heading_parts = None
                builder.open_heading(heading_level, text, heading_anchor)
            elif tag in BLOCKS:
                (heading_parts if heading_parts is not None else buffer).append("\n\n")
            if element is not main and element.tail:
                (heading_parts if heading_parts is not None else buffer).append(element.tail)
                builder.count(len(element.tail))
    flush()
    return Document(
        uri=uri,
        kind="html",
        title=title or builder.first_heading(1) or fallback_title,
        sections=builder.sections,
        metadata={"lang": root.get("lang")} if root.get("lang") else {},
    )


@dataclass
class _Open:
    """An element being walked: the text seen inside it so far, and whether it may be dropped."""

    element: Any
    chars: int
    furniture: str | None
    """"always" (semantic chrome), "guarded" (class/id/role/form: kept if it wraps the content) or None."""
    wraps_content: bool = False


def _strip_boilerplate(root: Any) -> None:
    """Drop scripts, menus, banners, sidebars, cookie notices and footers, in one flat pass."""
    from lxml import etree

    drop: list[Any] = []
    guarded: list[_Open] = []
    stack: list[_Open] = []
    open_furniture: list[_Open] = []
    in_content = 0
    total = 0
    walker = etree.iterwalk(root, events=("start", "end"))
    for event, element in walker:
        tag = element.tag if isinstance(element.tag, str) else ""
        if event == "start":
            if tag in NOT_TEXT:
                drop.append(element)
                walker.skip_subtree()
                stack.append(_Open(element, 0, None))
                continue
            furniture = _furniture(element, tag, in_content)
            entry = _Open(element, len(element.text or ""), furniture)
            stack.append(entry)
            if furniture:
                open_furniture.append(entry)
            if tag in CONTENT or element.get("role") == "main":
                in_content += 1
                # Every open furniture element wraps this content; those marked before already had
                # their ancestors marked, so the walk down stops there (linear for deep nesting).
                for outer in reversed(open_furniture):
                    if outer.wraps_content:
                        break
                    outer.wraps_content = True
            continue
        entry = stack.pop()
        if tag in CONTENT or element.get("role") == "main":
            in_content -= 1
        if entry.furniture:
            open_furniture.pop()
            if entry.furniture == "always" and not entry.wraps_content:
                drop.append(element)
            elif not entry.wraps_content:
                guarded.append(entry)
        if stack:
            stack[-1].chars += entry.chars + len(element.tail or "")
        else:
            total = entry.chars
    drop.extend(e.element for e in guarded if e.chars <= total * MAX_CHROME_SHARE)
    for element in drop:
        if element.getparent() is not None:
            element.drop_tree()


PERMALINK_CLASSES = frozenset(("headerlink", "anchor", "anchorjs-link", "hash-link", "header-anchor", "permalink"))
"""Classes of the permalink a documentation generator adds to each heading (Sphinx, MkDocs, Docusaurus,
VuePress, GitHub)."""
PERMALINK_TEXT = frozenset(("\u00b6", "#", "\u00a7", "\U0001f517", "\u2693", ""))


def _strip_permalinks(root: Any) -> None:
    """Drop the "¶"/"#" links beside headings and definitions: a mark for the mouse, noise in the text."""
    for link in list(root.iter("a")):
        href = (link.get("href") or "").strip()
        classes = set((link.get("class") or "").split())
        marks = link.text_content().strip() in PERMALINK_TEXT
        if (classes & PERMALINK_CLASSES and (marks or href.startswith("#"))) or (href.startswith("#") and marks):
            if link.getparent() is not None:
                link.drop_tree()  # keeps the text after the link


def _furniture(element: Any, tag: str, in_content: int) -> str | None:
    """ "always", "guarded" or None (see `_Open.furniture`)."""
    if tag in PAGE_CHROME:
        return None if in_content and tag in ("header", "footer") else "always"
    if tag in ("html", "body") or tag in CONTENT:
        return None
    if tag == "form" or (element.get("role") or "").strip().lower() in CHROME_ROLES:
        return "guarded"
    names = f"{element.get('class') or ''} {element.get('id') or ''}"
    if names.strip() and any(CHROME_NAMES.search(token) for token in names.split()):
        return "guarded"
    return None


def _child_anchor(heading: Any) -> str | None:
    for child in heading.iter("a"):
        if child.get("id") or child.get("name"):
            return child.get("id") or child.get("name")
    return None


def _main_element(root: Any) -> Any:
    for path in (".//main", ".//*[@role='main']", ".//article"):
        found = root.find(path)
        if found is not None and found.text_content().strip():
            return found
    body = root.find(".//body")
    return body if body is not None else root


class HtmlConnector:
    kind = "html"
    suffixes = (".html", ".htm", ".xhtml")

    def extract(self, source: SourceFile) -> Document:
        if len(source.data) > MAX_HTML_BYTES:
            raise SourceError(
                f"HTML file too large ({len(source.data) / 2**20:,.1f} MB; the limit for HTML is "
                f"{MAX_HTML_BYTES // 2**20} MB, since parsing takes about 20 times its size in memory)"
            )
        root = parse_html(source.data)
        # A fetched page has no local path: its name ("floods.html") stands in.
        fallback = source.stem
        return _html_document(root, source.uri, fallback, source.limits.max_chars)


@hookimpl
def register_connectors(register):
    register(HtmlConnector)
