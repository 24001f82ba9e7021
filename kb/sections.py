"""The heading stack every structured connector keeps: sections located by their heading path.

A connector walks its format and calls `open_heading` for each heading and `add` for each run of
text; the builder keeps which headings are open, so every section is cited under "Part > Chapter"
with the nearest heading's anchor. One builder, so the rules (a heading closes those at its level
and deeper, the path joins with " > ") are the same for HTML, Markdown, Word and pandoc formats.
"""

from __future__ import annotations

from typing import Any

from .errors import SourceError
from .types import Locator, Section

HEADING_SEPARATOR = " > "


class SectionBuilder:
    """Sections under an open-heading stack, and an optional running total of the text read.

    `max_chars` (the source's `limits.max_chars`) makes `count` raise `SourceError` past it.
    """

    def __init__(self, max_chars: int | None = None) -> None:
        self.sections: list[Section] = []
        self.max_chars = max_chars
        self.chars = 0
        self._open: list[tuple[int, str, str | None]] = []  # (level, heading, anchor), outermost first
        self._first: str | None = None
        self._first_by_level: dict[int, str] = {}

    def open_heading(self, level: int, text: str, anchor: str | None = None) -> None:
        """A heading at `level` (1 is outermost): closes the open ones at its level and deeper.

        An empty `text` only closes them (an empty heading still ends the one before it).
        """
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        if text:
            self._open.append((level, text, anchor))
            self._first = self._first or text
            self._first_by_level.setdefault(level, text)

    @property
    def heading(self) -> str | None:
        """The open headings' path, "Part > Chapter", or None outside any heading."""
        return HEADING_SEPARATOR.join(text for _, text, _ in self._open) or None

    @property
    def anchor(self) -> str | None:
        """The nearest open heading's anchor that has one (a heading without an id links to its parent's)."""
        return next((anchor for _, _, anchor in reversed(self._open) if anchor), None)

    def locator(self, **fields: Any) -> Locator:
        """A locator at the open heading; `fields` adds the format's own (page=3)."""
        return Locator(heading=self.heading, anchor=self.anchor, **fields)

    def add(self, text: str, *, code: bool = False, **fields: Any) -> None:
        """A section of `text` under the open heading; blank text adds nothing."""
        if text.strip():
            self.sections.append(Section(text=text, locator=self.locator(**fields), code=code))

    def count(self, chars: int) -> None:
        """Add `chars` to the text read so far; past `max_chars`, the source is refused."""
        self.chars += chars
        if self.max_chars is not None and self.chars > self.max_chars:
            raise SourceError(f"too much text (over {self.max_chars:,} characters)")

    def first_heading(self, level: int | None = None) -> str | None:
        """The first heading opened (at `level`, when given): a title when the format has none."""
        return self._first if level is None else self._first_by_level.get(level)
