"""What goes into a learner copy: which sources, under which names, and which originals.

Kept apart from the writing (kb/export.py) so that it can be tested on plain rows: the common root
of the file sources, the paths relative to it that replace the teacher's absolute ones, and the
`--exclude` patterns.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .errors import KBError
from .originals import is_recording, uri_name

SOURCE_CHOICES = ("none", "documents", "all")
"""`kb export --sources`: no originals, every original but audio and video, or all of them."""


@dataclass
class PlannedSource:
    """One source of the KB and what the copy does with it."""

    id: int
    uri: str
    kind: str | None
    title: str | None
    content_hash: str | None
    size: int | None
    status: str
    new_uri: str = ""
    """The uri in the copy: a path relative to the common root (percent-encoded), or the web URL."""
    path: Path | None = None
    """Where the original is on this machine (file sources only)."""
    recording: bool = False
    keep: bool = True
    dropped_because: str = ""

    @property
    def name(self) -> str:
        return uri_name(self.uri)

    @property
    def is_web(self) -> bool:
        return urlsplit(self.uri).scheme in ("http", "https")


@dataclass
class Plan:
    sources: list[PlannedSource] = field(default_factory=list)
    root: Path | None = None
    """The deepest folder holding every file source: its absolute path is what must not leave."""

    @property
    def kept(self) -> list[PlannedSource]:
        return [s for s in self.sources if s.keep]

    @property
    def dropped(self) -> list[PlannedSource]:
        return [s for s in self.sources if not s.keep]


def file_path(uri: str) -> Path | None:
    """The local path of a file:// URI, or None for anything else."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return None
    return Path(unquote(parts.path))


def common_root(paths: list[Path]) -> Path | None:
    """The deepest folder containing every path (the files' own folder for one file)."""
    if not paths:
        return None
    try:
        return Path(os.path.commonpath([str(p.parent) for p in paths]))
    except ValueError:  # paths on different drives (Windows): no common folder
        return None


def relative_uri(path: Path, root: Path | None, source_id: int) -> str:
    """A file source's uri in the copy: its path below `root`, percent-encoded like a URL path."""
    try:
        relative = PurePosixPath(path.relative_to(root).as_posix()) if root else None
    except ValueError:
        relative = None
    if relative is None:
        relative = PurePosixPath(f"source-{source_id}", path.name)
    return quote(str(relative), safe="/")


def plan(rows: list[tuple[Any, ...]], exclude: tuple[str, ...] = ()) -> Plan:
    """The plan for rows of (id, uri, kind, title, content_hash, size, status) from `sources`."""
    result = Plan(sources=[PlannedSource(*row) for row in rows])
    paths = [p for p in (file_path(s.uri) for s in result.sources) if p is not None]
    result.root = common_root(paths)
    for source in result.sources:
        source.path = file_path(source.uri)
        source.new_uri = relative_uri(source.path, result.root, source.id) if source.path else source.uri
        source.recording = is_recording(source.kind, source.name)
        if source.status == "error":
            # A source that could not be read has nothing to learn from, and its error may name paths.
            source.keep, source.dropped_because = False, "failed to ingest"
    matched = {pattern: False for pattern in exclude}
    for source in result.sources:
        for pattern in exclude:
            if excluded(source, pattern):
                matched[pattern] = True
                if source.keep:
                    source.keep, source.dropped_because = False, f"--exclude {pattern}"
    unmatched = [p for p, hit in matched.items() if not hit]
    if unmatched:
        # A mistyped pattern would otherwise let the very file it was meant to hold back into the copy.
        raise KBError(
            f"--exclude {unmatched[0]!r} matches no source in the KB; nothing was written "
            "(patterns match paths below the course folder, e.g. website/staff-notes.html, or names like '*.eml')."
        )
    return result


def excluded(source: PlannedSource, pattern: str) -> bool:
    """True when `pattern` names the source: gitignore-like globs, or a path to the file or a folder of it."""
    pattern = pattern.strip()
    if not pattern:
        return False
    if source.path is not None and not any(ch in pattern for ch in "*?["):
        # A path as the teacher typed it (relative to the current folder or absolute).
        target = Path(pattern).expanduser()
        if target.exists():
            target = target.resolve()
            return source.path == target or target in source.path.parents
    candidate = unquote(source.new_uri)
    if source.is_web:
        if fnmatch.fnmatchcase(source.uri, pattern):
            return True
        candidate = unquote(urlsplit(source.uri).path).lstrip("/")
    anchored = pattern.startswith("/")
    pattern = pattern.strip("/") if pattern.endswith("/") else pattern.lstrip("/")
    if "/" in pattern or anchored:
        # Relative to the course root, as in .gitignore; a folder pattern covers what is below it.
        return fnmatch.fnmatchcase(candidate, pattern) or fnmatch.fnmatchcase(candidate, pattern + "/*")
    # No slash: a file or folder name at any depth.
    return any(fnmatch.fnmatchcase(part, pattern) for part in candidate.split("/"))


def wanted(source: PlannedSource, choice: str) -> bool:
    """Whether `--sources choice` stores this source's original."""
    if choice == "none" or not source.keep or source.is_web:
        return False
    return choice == "all" or not source.recording
