"""Plain text and Markdown connectors: Markdown sections carry their heading path."""

from __future__ import annotations

import re

from kb import Document, Locator, Section, SectionBuilder, SourceError, SourceFile, hookimpl


def decode_text(data: bytes) -> tuple[str, str]:
    """Text and the encoding it was read with, NULs dropped; refuses what is plainly binary."""
    text, encoding = _decode(data)
    # A stray NUL would otherwise stay in titles and heading paths (split words, cut C strings).
    text = text.replace("\x00", "")
    sample = text[:65536]
    # Random bytes decode as latin-1 without complaint: refuse text that is mostly control characters.
    controls = sum(1 for ch in sample if (ch < " " and ch not in "\t\n\r\f") or "\x80" <= ch <= "\x9f")
    if controls > len(sample) // 20:
        raise SourceError("binary data, not text (too many control characters)")
    return text, encoding


def _decode(data: bytes) -> tuple[str, str]:
    if not data.strip():
        raise SourceError("empty file")
    sample = data[:65536]
    if sample.count(b"\x00") > len(sample) // 10 and not _is_utf16(sample):
        raise SourceError("binary data, not text (too many NUL bytes)")
    if _is_utf16(sample):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _is_utf16(sample: bytes) -> bool:
    return sample[:2] in (b"\xff\xfe", b"\xfe\xff")


class TextConnector:
    kind = "text"
    suffixes = (".txt", ".text")

    def extract(self, source: SourceFile) -> Document:
        text, encoding = decode_text(source.data)
        _check_size(text, source)
        first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
        title = first_line[:120] if 0 < len(first_line) <= 120 else source.stem
        return Document(
            uri=source.uri,
            kind=self.kind,
            title=title,
            sections=[Section(text=text, locator=Locator())],
            metadata={"encoding": encoding},
        )


# Linear-time patterns only: a hostile line must not cost quadratic backtracking.
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_LINK = re.compile(r"!?\[([^\[\]\n]*)\]\([^()\n]*\)")
_YAML_LINE = re.compile(r"^(?:[A-Za-z_][\w-]*[ \t]*:|[ \t]+\S|-[ \t])")
_EMPHASIS = re.compile(r"(\*\*|__|`)")


class MarkdownConnector:
    kind = "markdown"
    suffixes = (".md", ".markdown", ".mdown")

    def extract(self, source: SourceFile) -> Document:
        text, encoding = decode_text(source.data)
        _check_size(text, source)
        lines = text.splitlines()
        metadata: dict[str, str] = {"encoding": encoding}
        lines = _front_matter(lines, metadata)
        builder = SectionBuilder()
        body: list[str] = []
        code: list[str] = []
        fence: str | None = None
        slugs: dict[str, int] = {}

        def flush() -> None:
            builder.add(_plain("\n".join(body)))
            body.clear()

        def open_heading(level: int, heading: str) -> None:
            flush()
            heading = _plain(heading).strip()
            builder.open_heading(level, heading, _slug(heading, slugs) if heading else None)

        for i, line in enumerate(lines):
            if fence:
                if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                    fence = None
                    builder.add("\n".join(code), code=True)
                    code.clear()
                else:
                    code.append(line)
                continue
            fenced = _FENCE.match(line)
            if fenced:
                # A fenced block is code: a section of its own, its lines kept as written.
                flush()
                fence = fenced.group(1)
                continue
            atx = _ATX.match(line)
            if atx:
                open_heading(len(atx.group(1)), _without_closing_hashes(atx.group(2) or ""))
                continue
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if line.strip() and _SETEXT.match(following) and body is not None and not line.startswith(("-", "*", ">")):
                open_heading(1 if following.strip().startswith("=") else 2, line)
                continue
            if _SETEXT.match(line) and not body and builder.heading:
                continue  # the underline of a setext heading just opened
            body.append(line)
        flush()
        builder.add("\n".join(code), code=True)  # a fence never closed runs to the end (CommonMark)
        return Document(
            uri=source.uri,
            kind=self.kind,
            title=metadata.get("title") or builder.first_heading(1) or source.stem,
            sections=builder.sections,
            metadata=metadata,
        )


_SLUG_DROP = re.compile(r"[^\w\- ]", re.UNICODE)


def _slug(heading: str, seen: dict[str, int]) -> str:
    """The id GitHub, GitLab and markdown-it-anchor give a heading: lower case, punctuation dropped,
    spaces to hyphens; a repeated one gets -1, -2, ..."""
    base = _SLUG_DROP.sub("", heading.strip().lower()).replace(" ", "-")
    count = seen.get(base)
    seen[base] = 0 if count is None else count + 1
    return base if count is None else f"{base}-{count + 1}"


def _without_closing_hashes(text: str) -> str:
    """ "Title ##" -> "Title" (CommonMark's optional closing sequence), in linear time."""
    text = text.rstrip(" \t")
    stripped = text.rstrip("#")
    if stripped != text and (not stripped or stripped[-1] in " \t"):
        return stripped.rstrip(" \t")
    return text


def _front_matter(lines: list[str], metadata: dict[str, str]) -> list[str]:
    """Strip YAML front matter, keeping its title and author."""
    if not lines or lines[0].strip() != "---":
        return lines
    for end in range(1, min(len(lines), 200)):
        if lines[end].strip() in ("---", "..."):
            block = [line for line in lines[1:end] if line.strip()]
            # Only YAML-looking blocks ("key: value", indented or "- " continuations): a document that
            # merely opens with a --- rule keeps its text.
            if not block or not all(_YAML_LINE.match(line) for line in block):
                return lines
            for line in lines[1:end]:
                key, _, value = line.partition(":")
                if key.strip() in ("title", "author") and value.strip():
                    metadata[key.strip()] = value.strip().strip("'\"")
            return lines[end + 1 :]
    return lines


def _plain(text: str) -> str:
    """Markdown inline syntax out, words in: links keep their text, emphasis marks go."""
    return _EMPHASIS.sub("", _LINK.sub(r"\1", text))


def _check_size(text: str, source: SourceFile) -> None:
    if len(text) > source.limits.max_chars:
        raise SourceError(f"too much text ({len(text):,} characters; the limit is {source.limits.max_chars:,})")


@hookimpl
def register_connectors(register):
    register(TextConnector)
    register(MarkdownConnector)
