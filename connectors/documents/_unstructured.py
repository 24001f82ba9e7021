"""unstructured, kept offline, and its elements turned into kb sections (pandoc formats and e-mail).

Offline by construction (DESIGN.md): unstructured 0.27 imports spaCy and, at the first text it
classifies, downloads and installs `en_core_web_sm` (unstructured.nlp.tokenize._get_nlp ->
_load_spacy_model -> _install_spacy_model). kb replaces that loader with a blank English pipeline
with a rule-based sentencizer, which needs no model: sentence counts still work and POS tags come
back empty, which only changes whether unstructured labels a paragraph NarrativeText or Text,
a difference kb does not use. The download function itself is replaced by one that refuses, in
case another path reaches it. unstructured's telemetry ping (sent at import) and its usage notice
are switched off through their documented environment variables before it is imported.
unstructured (and the spaCy and torch it imports, ~5-8 s) is imported only when such a file is met.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from kb import SectionBuilder, SourceError


@functools.lru_cache(maxsize=1)
def load_unstructured() -> Any:
    """Import unstructured with telemetry off and its spaCy model download replaced; returns the module.

    Anything in kb that imports unstructured should import it through this function.
    """
    # Any non-empty value opts out (unstructured.utils._telemetry_opt_out); the notice has its own switch.
    os.environ["SCARF_NO_ANALYTICS"] = "1"
    os.environ["DO_NOT_TRACK"] = os.environ.get("DO_NOT_TRACK", "").strip() or "1"
    os.environ["UNSTRUCTURED_DISABLE_NOTICE"] = "1"
    import unstructured
    import unstructured.nlp.tokenize as tokenize

    for name in ("_get_nlp", "_install_spacy_model"):
        if not hasattr(tokenize, name):  # fail closed: never risk the download on an unknown version
            raise SourceError(
                f"unstructured {getattr(unstructured, '__version__', '?')} has no {name}: kb cannot keep "
                "it offline (kb is tested with unstructured 0.27.35)"
            )
    tokenize._get_nlp = _blank_pipeline
    tokenize._install_spacy_model = _refuse_download
    if hasattr(tokenize, "_process_cached"):
        tokenize._process_cached.cache_clear()
    return unstructured


@functools.lru_cache(maxsize=1)
def _blank_pipeline() -> Any:
    """English tokenizer and rule-based sentence splitter: ships inside spaCy, needs no model."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


def _refuse_download() -> None:
    raise RuntimeError("kb never downloads models at run time (unstructured asked for a spaCy model)")


def partition_html(html: str) -> list[Any]:
    """unstructured's elements of an HTML text (none for blank HTML)."""
    load_unstructured()
    from unstructured.partition.html import partition_html as partition

    if not html.strip():
        return []
    return partition(text=html)


def element_sections(elements: list[Any], max_chars: int, headings: bool = True) -> tuple[str | None, list[Any]]:
    """Group elements into sections: Title elements open headings, page numbers split sections.

    Returns the first title and the sections. With `headings` False a Title element is kept as
    text: unstructured guesses titles in plain text from a line's shape, and without a spaCy model
    (see load_unstructured) it guesses most lines.
    """
    builder = SectionBuilder(max_chars)
    buffer: list[str] = []
    page: int | None = None

    def flush() -> None:
        builder.add("\n\n".join(buffer), page=page)
        buffer.clear()

    for element in elements:
        meta = element.metadata
        element_page = getattr(meta, "page_number", None)
        if element_page != page:
            flush()
            page = element_page
        text = (element.text or "").strip()
        category = getattr(element, "category", "")
        if category == "Title" and headings:
            heading = " ".join(text.split())
            if heading:
                flush()
                builder.open_heading(getattr(meta, "category_depth", None) or 0, heading)
            continue
        if category == "Table" and getattr(meta, "text_as_html", None):
            text = _table_rows(meta.text_as_html) or text
        elif category == "ListItem":
            text = f"- {text}"
        if not text:
            continue
        builder.count(len(text))
        buffer.append(text)
    flush()
    return builder.first_heading(), builder.sections


def _table_rows(html: str) -> str:
    """An HTML table (unstructured's text_as_html) as "cell | cell" rows."""
    import lxml.html

    try:
        table = lxml.html.fragment_fromstring(html, create_parent="div")
    except Exception:  # unstructured's own HTML; if it does not parse, its flat text is used
        return ""
    rows = []
    for tr in table.iter("tr"):
        cells = [" ".join(cell.text_content().split()) for cell in tr if cell.tag in ("td", "th")]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n\n".join(rows)
