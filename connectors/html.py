"""Local HTML files: the main text (no menus, scripts or footers) with heading paths and anchors.

Walks the tree with lxml's iterwalk, never recursively, so 100,000 nested tags cost time in
proportion to their number and no stack.
"""

from __future__ import annotations

from typing import Any

from kb.errors import SourceError
from kb.hookspecs import hookimpl
from kb.types import Document, Locator, Section, SourceFile

MAX_HTML_BYTES = 20 * 2**20
"""lxml's tree costs ~20x the page in memory: 20 MB of HTML stays under half a gigabyte."""
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BOILERPLATE = (
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "svg",
    "button",
    "select",
    "iframe",
    "object",
)
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
        # huge_tree lifts libxml2's depth limit; iterwalk below keeps the walk itself flat.
        parser = lxml.html.HTMLParser(remove_comments=True, remove_pis=True, huge_tree=True, no_network=True)
        root = lxml.html.document_fromstring(data, parser=parser)
    except (etree.ParserError, ValueError) as exc:
        raise SourceError(f"not readable as HTML ({exc})") from exc
    if root is None:
        raise SourceError("not readable as HTML")
    return root


def html_document(root: Any, uri: str, fallback_title: str, max_chars: int) -> Document:
    """Turn a parsed page into a Document of heading-located sections."""
    from lxml import etree

    title_el = root.find(".//title")
    title = " ".join(title_el.text_content().split()) if title_el is not None else ""
    for tag in BOILERPLATE:
        for element in list(root.iter(tag)):
            if element.getparent() is not None:
                element.drop_tree()
    main = _main_element(root)

    sections: list[Section] = []
    stack: list[tuple[int, str, str | None]] = []  # (level, text, anchor)
    buffer: list[str] = []
    heading_parts: list[str] | None = None
    heading_level = 0
    heading_anchor: str | None = None
    pending_anchor: str | None = None
    total = 0
    first_h1: str | None = None

    def flush() -> None:
        text = "".join(buffer).strip()
        buffer.clear()
        if text:
            path = " > ".join(h for _, h, _ in stack) or None
            anchor = next((a for _, _, a in reversed(stack) if a), None)
            sections.append(Section(text=text, locator=Locator(heading=path, anchor=anchor)))

    for event, element in etree.iterwalk(main, events=("start", "end")):
        tag = element.tag if isinstance(element.tag, str) else ""
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
                total += len(element.text)
        else:
            if tag in HEADINGS and heading_parts is not None and HEADINGS[tag] == heading_level:
                text = " ".join("".join(heading_parts).split())
                heading_parts = None
                while stack and stack[-1][0] >= heading_level:
                    stack.pop()
                if text:
                    stack.append((heading_level, text, heading_anchor))
                    if heading_level == 1 and first_h1 is None:
                        first_h1 = text
            elif tag in BLOCKS:
                (heading_parts if heading_parts is not None else buffer).append("\n\n")
            if element is not main and element.tail:
                (heading_parts if heading_parts is not None else buffer).append(element.tail)
                total += len(element.tail)
        if total > max_chars:
            raise SourceError(f"too much text (over {max_chars:,} characters)")
    flush()
    return Document(
        uri=uri,
        kind="html",
        title=title or first_h1 or fallback_title,
        sections=sections,
        metadata={"lang": root.get("lang")} if root.get("lang") else {},
    )


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
        return html_document(root, source.uri, source.path.stem, source.limits.max_chars)


@hookimpl
def register_connectors(register):
    register(HtmlConnector)
