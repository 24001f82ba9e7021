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
    roots: list[Path] = field(default_factory=list)
    """The course folders the file sources are below: their absolute paths are what must not leave."""

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


def course_roots(paths: list[Path]) -> list[Path]:
    """The folders a copy's paths are relative to: the deepest folder holding every file, if it is not
    the top of the file system; else the same, apart, for each top-level folder the files are under.

    Files from /home/t/course and /tmp/notes must not become home/t/course/... in the copy: that
    is the teacher's layout again. (Once kb records the folders it ingested, those are the roots.)
    """
    folders = sorted({p.parent for p in paths})
    if not folders:
        return []
    try:
        common = Path(os.path.commonpath([str(f) for f in folders]))
    except ValueError:  # different drives (Windows): one root per drive
        common = None
    if common is not None and common.name:
        return [common]
    groups: dict[tuple[str, ...], list[Path]] = {}
    for folder in folders:
        groups.setdefault(folder.parts[:2], []).append(folder)
    if len(groups) == 1:
        return [Path(os.path.commonpath([str(f) for f in folders]))]
    return [root for group in groups.values() for root in course_roots([f / "x" for f in group])]


def relative_uri(path: Path, roots: list[Path], source_id: int) -> str:
    """A file source's uri in the copy: its path below its root (named after the root when there are
    several), percent-encoded like a URL path."""
    below = [r for r in roots if r == path.parent or r in path.parents]
    if below:
        root = max(below, key=lambda r: len(r.parts))
        relative = PurePosixPath(path.relative_to(root).as_posix())
        if len(roots) > 1:
            relative = PurePosixPath(_root_name(root, roots)) / relative
    else:
        relative = PurePosixPath(f"source-{source_id}", path.name)
    return quote(str(relative), safe="/")


def _root_name(root: Path, roots: list[Path]) -> str:
    """The root's folder name, numbered when two roots share one."""
    name = root.name or "files"
    same = [r for r in roots if (r.name or "files") == name]
    return name if len(same) == 1 else f"{name}-{same.index(root) + 1}"


def plan(rows: list[tuple[Any, ...]], exclude: tuple[str, ...] = (), roots: list[Path] | None = None) -> Plan:
    """The plan for rows of (id, uri, kind, title, content_hash, size, status) from `sources`.

    `roots` are the folders the KB was ingested from, when it records them; else they are worked
    out from the files' paths (course_roots).
    """
    result = Plan(sources=[PlannedSource(*row) for row in rows])
    paths = [p for p in (file_path(s.uri) for s in result.sources) if p is not None]
    result.roots = sorted(set(roots)) if roots else course_roots(paths)
    for source in result.sources:
        source.path = file_path(source.uri)
        source.new_uri = relative_uri(source.path, result.roots, source.id) if source.path else source.uri
        source.recording = is_recording(source.kind, source.name)
        if source.status == "error":
            # A source that could not be read has nothing to learn from, and its error may name paths.
            source.keep, source.dropped_because = False, "failed to ingest"
        elif source.status == "missing":
            # Gone from the teacher's folder or site: not part of the course any more.
            source.keep, source.dropped_because = False, "missing from its folder (kb sync removes it)"
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
