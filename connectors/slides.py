"""PowerPoint decks (.pptx) read with python-pptx: one section per slide, cited by slide number.

A slide's section holds its body text (every shape, inside groups too, with tables as
"cell | cell" rows and SmartArt text) followed by its speaker notes; the slide title is the
section's heading. Shapes are read in the order of the slide's shape tree, which is the order
PowerPoint's reading-order pane and screen readers use.

Hidden slides are read like the others and listed in metadata["hidden_slides"]: a teacher hides
backup slides (worked answers, extra detail) from the talk, not from the course, and a learner
asking a question should find them. Their citations carry the slide number like any other.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from kb import Document, Locator, Section, SourceError, SourceFile, hookimpl

from ._office_safety import check_archive, fallback_title

DIAGRAM_URI = "http://schemas.openxmlformats.org/drawingml/2006/diagram"
NS = {
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "dgm": "http://schemas.openxmlformats.org/drawingml/2006/diagram",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
}
# python-pptx writes this title into every deck it creates from its default template.
PLACEHOLDER_TITLES = {"powerpoint presentation"}


class SlidesConnector:
    kind = "slides"
    suffixes = (".pptx", ".pptm")

    def extract(self, source: SourceFile) -> Document:
        check_archive(source.data, ".pptx", required=("[Content_Types].xml",))
        try:
            import pptx
            from pptx.exc import PackageNotFoundError

            try:
                deck = pptx.Presentation(io.BytesIO(source.data))
            except (PackageNotFoundError, KeyError, ValueError) as exc:
                raise SourceError(f"not a PowerPoint deck ({exc})") from exc
            slides = list(deck.slides)
            if len(slides) > source.limits.max_pages:
                raise SourceError(f"too many slides ({len(slides):,}; the limit is {source.limits.max_pages:,})")
            sections: list[Section] = []
            hidden: list[int] = []
            with_notes = 0
            chars = 0
            first_title: str | None = None
            for number, slide in enumerate(slides, start=1):
                if slide._element.get("show") in ("0", "false"):
                    hidden.append(number)
                title, text, notes = _read_slide(slide)
                first_title = first_title or title
                with_notes += bool(notes)
                body = "\n\n".join(filter(None, [text, f"Speaker notes: {notes}" if notes else ""]))
                # A title-only slide (a part divider) still gets a citable section.
                body = body or (title or "")
                chars += len(body)
                if chars > source.limits.max_chars:
                    raise SourceError(f"too much text (over {source.limits.max_chars:,} characters by slide {number})")
                if body.strip():
                    sections.append(Section(text=body, locator=Locator(slide=number, heading=title)))
            metadata = _core_metadata(deck.core_properties)
        except SourceError:
            raise
        except (KeyError, ValueError, AttributeError, TypeError) as exc:
            raise SourceError(f"damaged PowerPoint deck ({type(exc).__name__}: {exc})") from exc
        title = metadata.pop("title", None) or first_title or fallback_title(source)
        metadata.update({"slides": len(slides), "hidden_slides": hidden, "slides_with_notes": with_notes})
        doc = Document(uri=source.uri, kind=self.kind, title=title, sections=sections, metadata=metadata)
        if not sections:
            doc.empty_reason = "the deck has no text (pictures only?)" if slides else "the deck has no slides"
        return doc


def _read_slide(slide: Any) -> tuple[str | None, str, str]:
    """(title, body text, speaker notes) of one slide."""
    title_shape = slide.shapes.title
    title = _one_line(title_shape.text_frame.text) if title_shape is not None else None
    skip = title_shape.shape_id if title_shape is not None else None
    parts = [text for text in _shape_texts(slide.shapes, slide.part, skip) if text.strip()]
    notes = ""
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        if frame is not None:
            notes = _frame_text(frame)
    return title or None, "\n\n".join(parts), notes


def _shape_texts(shapes: Any, part: Any, skip: int | None) -> Iterator[str]:
    for shape in shapes:
        if skip is not None and shape.shape_id == skip:
            continue
        tag = shape.element.tag.rsplit("}", 1)[-1]
        if tag == "grpSp":
            yield from _shape_texts(shape.shapes, part, skip)
        elif getattr(shape, "has_table", False) and shape.has_table:
            yield _table_text(shape.table)
        elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            yield _frame_text(shape.text_frame)
        elif tag == "graphicFrame":
            yield _diagram_text(shape, part)


def _frame_text(frame: Any) -> str:
    # One paragraph per bullet: a blank line keeps bullets apart when the chunker joins lines.
    paragraphs = (p.text.replace("\v", "\n").strip() for p in frame.paragraphs)
    return "\n\n".join(p for p in paragraphs if p)


def _table_text(table: Any) -> str:
    rows = []
    for row in table.rows:
        cells = [_one_line(cell.text_frame.text) for cell in row.cells if not cell.is_spanned]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n\n".join(rows)


def _diagram_text(shape: Any, part: Any) -> str:
    """SmartArt: its words live in a separate diagram-data part that python-pptx does not read."""
    from lxml import etree

    data = shape.element.find(".//a:graphicData", NS)
    if data is None or data.get("uri") != DIAGRAM_URI:
        return ""
    rel_ids = data.find("dgm:relIds", NS)
    rel_id = rel_ids.get(f"{{{NS['r']}}}dm") if rel_ids is not None else None
    if not rel_id:
        return ""
    try:
        blob = part.related_part(rel_id).blob
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        root = etree.fromstring(blob, parser)
    except (KeyError, etree.XMLSyntaxError):
        return ""
    lines = []
    for paragraph in root.iter(f"{{{NS['a']}}}p"):
        text = "".join(t.text or "" for t in paragraph.iter(f"{{{NS['a']}}}t")).strip()
        if text:
            lines.append(text)
    return "\n\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _core_metadata(props: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("title", "author", "subject"):
        value = (getattr(props, name, "") or "").strip()
        if value and not (name == "title" and value.lower() in PLACEHOLDER_TITLES):
            out[name] = value
    return out


@hookimpl
def register_connectors(register):
    register(SlidesConnector)
