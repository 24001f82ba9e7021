"""A kb connector for Jupyter notebooks: Markdown cells give the heading path, code cells stay code."""

from __future__ import annotations

import json
import re

from kb import Document, SectionBuilder, SourceError, SourceFile, hookimpl

HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")


class NotebookConnector:
    kind = "notebook"
    suffixes = (".ipynb",)

    def extract(self, source: SourceFile) -> Document:
        try:
            cells = json.loads(source.data)["cells"]
        except (ValueError, KeyError, TypeError):
            raise SourceError("not a Jupyter notebook (its JSON has no cells)") from None
        builder = SectionBuilder(max_chars=source.limits.max_chars)  # refuses a source past the limit
        for cell in cells:
            text = "".join(cell.get("source", ""))  # a string, or a list of lines
            builder.count(len(text))
            if cell.get("cell_type") == "code":
                builder.add(text, code=True)  # chunks keep its lines and end at line ends
            elif cell.get("cell_type") == "markdown":
                _add_markdown(builder, text)
        return Document(
            uri=source.uri,
            kind=self.kind,
            title=builder.first_heading(1) or source.stem,
            sections=builder.sections,
            metadata={"cells": len(cells)},
        )


def _add_markdown(builder: SectionBuilder, text: str) -> None:
    lines: list[str] = []
    for line in text.splitlines():
        heading = HEADING.match(line)
        if not heading:
            lines.append(line)
            continue
        builder.add("\n".join(lines))
        lines = []
        title = heading[2]
        # Jupyter's own anchor for a heading: its text with spaces as hyphens.
        builder.open_heading(len(heading[1]), title, anchor=title.replace(" ", "-"))
    builder.add("\n".join(lines))


@hookimpl
def register_connectors(register):
    register(NotebookConnector)
