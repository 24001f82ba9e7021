"""Word documents (.docx) read with python-docx: paragraphs, lists and tables in document order,
each cited by its heading path ("Part > Section").

The body's XML children are walked in order (content controls opened), so a table stays where it
stands between paragraphs. A paragraph is a heading when its outline level says so (set on the
paragraph or inherited through its style chain) or its style is Title or "Heading 1".."Heading 9";
Title is level 0, above Heading 1. List items carry their bullet or their computed number.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from kb import Document, Section, SectionBuilder, SourceError, SourceFile, hookimpl

from ._office_safety import check_archive, fallback_title

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_HEADING_NAME = re.compile(r"^heading ([1-9])$")
_CODE_STYLE = re.compile(r"\bcode\b|preformatted|macro text|\bsource\b|\blisting\b")
BODY_LEVEL = 10
"""Level of ordinary paragraphs: below every heading (outline levels 0-8 are headings 1-9)."""


def w(tag: str) -> str:
    return f"{{{W}}}{tag}"


def _val(element: Any, path: str) -> str | None:
    found = element.find(path, {"w": W}) if element is not None else None
    return found.get(w("val")) if found is not None else None


@dataclass
class _Style:
    name: str
    based_on: str | None
    outline: int | None
    num: tuple[str, int] | None


@dataclass
class _Styles:
    """Paragraph styles by id, with the heading level and list numbering each resolves to."""

    styles: dict[str, _Style] = field(default_factory=dict)
    default: str | None = None

    @classmethod
    def read(cls, root: Any) -> _Styles:
        out = cls()
        for style in root.iterfind("w:style", {"w": W}):
            if style.get(w("type")) != "paragraph":
                continue
            style_id = style.get(w("styleId")) or ""
            outline = _val(style, "w:pPr/w:outlineLvl")
            out.styles[style_id] = _Style(
                name=(_val(style, "w:name") or "").strip().lower(),
                based_on=_val(style, "w:basedOn"),
                outline=int(outline) if outline and outline.isdigit() else None,
                num=_num_pr(style.find("w:pPr/w:numPr", {"w": W})),
            )
            if style.get(w("default")) in ("1", "true"):
                out.default = style_id
        return out

    def chain(self, style_id: str | None) -> list[_Style]:
        found, seen = [], set()
        current = style_id or self.default
        while current and current in self.styles and current not in seen and len(found) < 20:
            seen.add(current)
            found.append(self.styles[current])
            current = found[-1].based_on
        return found

    def is_code(self, style_id: str | None) -> bool:
        """A code or preformatted paragraph style ("Code", "HTML Preformatted", "Source Code", "Macro Text")."""
        return style_id is not None and any(_CODE_STYLE.search(style.name) for style in self.chain(style_id))

    def level(self, style_id: str | None) -> int:
        for style in self.chain(style_id):
            if style.name == "title":
                return 0
            match = _HEADING_NAME.match(style.name)
            if match:
                return int(match.group(1))
            if style.outline is not None:
                return style.outline + 1 if style.outline < 9 else BODY_LEVEL
        return BODY_LEVEL

    def numbering(self, style_id: str | None) -> tuple[str, int] | None:
        return next((s.num for s in self.chain(style_id) if s.num), None)


def _num_pr(num_pr: Any) -> tuple[str, int] | None:
    if num_pr is None:
        return None
    num_id = _val(num_pr, "w:numId")
    ilvl = _val(num_pr, "w:ilvl")
    if not num_id or num_id == "0":
        return None
    return num_id, int(ilvl) if ilvl and ilvl.isdigit() else 0


class _Lists:
    """Bullets and running numbers of list paragraphs, from the numbering part."""

    def __init__(self, root: Any):
        self.formats: dict[str, dict[int, tuple[str, int]]] = {}
        self.counters: dict[str, list[int]] = {}
        if root is None:
            return
        abstract: dict[str, dict[int, tuple[str, int]]] = {}
        for definition in root.iterfind("w:abstractNum", {"w": W}):
            levels = {}
            for lvl in definition.iterfind("w:lvl", {"w": W}):
                start = _val(lvl, "w:start")
                ilvl = lvl.get(w("ilvl")) or "0"
                levels[int(ilvl) if ilvl.isdigit() else 0] = (
                    _val(lvl, "w:numFmt") or "decimal",
                    int(start) if start and start.isdigit() else 1,
                )
            abstract[definition.get(w("abstractNumId")) or ""] = levels
        for num in root.iterfind("w:num", {"w": W}):
            self.formats[num.get(w("numId")) or ""] = abstract.get(_val(num, "w:abstractNumId") or "", {})

    def prefix(self, num_id: str, ilvl: int) -> str:
        ilvl = min(max(ilvl, 0), 8)
        fmt, start = self.formats.get(num_id, {}).get(ilvl, ("bullet", 1))
        indent = "  " * ilvl
        if fmt in ("bullet", "none"):
            return f"{indent}- "
        counts = self.counters.setdefault(num_id, [0] * 9)
        counts[ilvl] = counts[ilvl] + 1 if counts[ilvl] else start
        for deeper in range(ilvl + 1, 9):
            counts[deeper] = 0
        return f"{indent}{_format_number(counts[ilvl], fmt)}. "


def _format_number(n: int, fmt: str) -> str:
    if fmt in ("lowerLetter", "upperLetter"):
        letters = ""
        while n > 0:
            n, rest = divmod(n - 1, 26)
            letters = chr(ord("a") + rest) + letters
        return letters.upper() if fmt == "upperLetter" else letters
    if fmt in ("lowerRoman", "upperRoman") and 0 < n < 4000:
        numerals = [(1000, "m"), (900, "cm"), (500, "d"), (400, "cd"), (100, "c"), (90, "xc")]
        numerals += [(50, "l"), (40, "xl"), (10, "x"), (9, "ix"), (5, "v"), (4, "iv"), (1, "i")]
        roman = ""
        for value, symbol in numerals:
            while n >= value:
                roman, n = roman + symbol, n - value
        return roman.upper() if fmt == "upperRoman" else roman
    return str(n)


def _paragraph_text(p: Any, code: bool = False) -> str:
    """A paragraph's visible text: runs, hyperlinks, insertions and text boxes, without deleted text.

    Walks with an explicit stack, skipping mc:Fallback, which repeats a text box's words for old readers.
    """
    out: list[str] = []
    stack = [iter([p])]
    while stack:
        element = next(stack[-1], None)
        if element is None:
            stack.pop()
            continue
        tag = element.tag
        if tag == w("t"):
            out.append(element.text or "")
        elif tag in (w("tab"), w("ptab")):
            out.append("    " if code else " ")
        elif tag in (w("br"), w("cr")):
            out.append("\n")
        elif tag == w("noBreakHyphen"):
            out.append("-")
        elif tag == MC_FALLBACK or tag in (w("del"), w("instrText"), w("delText")):
            continue
        elif tag == w("p") and element is not p:
            out.append("\n")
        if len(element):
            stack.append(iter(element))
    return "".join(out).rstrip() if code else "".join(out).strip()


def _table_text(tbl: Any) -> str:
    rows = []
    for tr in tbl.iterfind("w:tr", {"w": W}):
        cells = []
        for tc in tr.iterfind("w:tc", {"w": W}):
            merge = tc.find("w:tcPr/w:vMerge", {"w": W})
            if merge is not None and merge.get(w("val")) != "restart":
                continue  # the continuation of a vertically merged cell: its text is above
            texts = (_paragraph_text(p) for p in tc.iter(w("p")) if not _nested(p, tc))
            cells.append(" ".join(" ".join(t.split()) for t in texts if t))
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n\n".join(rows)


def _nested(p: Any, stop: Any) -> bool:
    """Inside a text box's paragraph (read with it) or an mc:Fallback copy: not read on its own."""
    parent = p.getparent()
    while parent is not None and parent is not stop:
        if parent.tag in (MC_FALLBACK, w("p")):
            return True
        parent = parent.getparent()
    return False


def _blocks(body: Any) -> Any:
    """The body's paragraphs and tables in document order, content controls and custom XML opened."""
    stack = [iter(body)]
    while stack:
        element = next(stack[-1], None)
        if element is None:
            stack.pop()
            continue
        if element.tag in (w("p"), w("tbl")):
            yield element
        elif element.tag == w("sdt"):
            content = element.find("w:sdtContent", {"w": W})
            if content is not None:
                stack.append(iter(content))
        elif element.tag == w("customXml"):
            stack.append(iter(element))


class WordConnector:
    kind = "docx"
    suffixes = (".docx",)

    def extract(self, source: SourceFile) -> Document:
        check_archive(source.data, ".docx", required=("[Content_Types].xml",))
        try:
            import docx
            from docx.opc.exceptions import PackageNotFoundError

            try:
                document = docx.Document(io.BytesIO(source.data))
            except (PackageNotFoundError, KeyError, ValueError) as exc:
                raise SourceError(f"not a Word document ({exc})") from exc
            styles = _Styles.read(document.styles.element)
            try:
                numbering = document.part.numbering_part.element
            except (KeyError, NotImplementedError):
                numbering = None
            sections, first_heading = _read_body(document.element.body, styles, _Lists(numbering), source)
            metadata = _core_metadata(document.core_properties)
        except SourceError:
            raise
        except (KeyError, ValueError, AttributeError, TypeError) as exc:
            raise SourceError(f"damaged Word document ({type(exc).__name__}: {exc})") from exc
        title = metadata.pop("title", None) or first_heading or fallback_title(source)
        doc = Document(uri=source.uri, kind=self.kind, title=title, sections=sections, metadata=metadata)
        if not sections:
            doc.empty_reason = "the document has no text"
        return doc


def _read_body(body: Any, styles: _Styles, lists: _Lists, source: SourceFile) -> tuple[list[Section], str | None]:
    builder = SectionBuilder(source.limits.max_chars)
    buffer: list[str] = []
    code: list[str] = []

    def flush() -> None:
        builder.add("\n\n".join(buffer))
        buffer.clear()
        builder.add("\n".join(code), code=True)
        code.clear()

    for block in _blocks(body):
        if block.tag == w("tbl"):
            text = _table_text(block)
        else:
            text = _paragraph_text(block)
            style_id = _val(block, "w:pPr/w:pStyle")
            if styles.is_code(style_id):
                # One paragraph per line of code (Word's "Code", "HTML Preformatted", ... styles): kept as lines.
                if buffer:
                    flush()
                text = _paragraph_text(block, code=True)
                builder.count(len(text))
                code.append(text)
                continue
            if code:
                flush()
            direct = _val(block, "w:pPr/w:outlineLvl")
            if direct and direct.isdigit():
                level = int(direct) + 1 if int(direct) < 9 else BODY_LEVEL
            else:
                level = styles.level(style_id)
            if level < BODY_LEVEL:
                heading = " ".join(text.split())
                if heading:
                    flush()
                    builder.open_heading(level, heading)
                continue
            direct_num = block.find("w:pPr/w:numPr", {"w": W})
            # numId 0 set on the paragraph switches off the numbering its style would give it.
            numbered = _num_pr(direct_num) if direct_num is not None else styles.numbering(style_id)
            if numbered and text:
                text = lists.prefix(*numbered) + text
        if not text:
            continue
        builder.count(len(text))
        buffer.append(text)
    flush()
    return builder.sections, builder.first_heading()


def _core_metadata(props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("title", "author", "subject"):
        value = (getattr(props, name, "") or "").strip()
        if value:
            out[name] = value
    return out


@hookimpl
def register_connectors(register):
    register(WordConnector)
