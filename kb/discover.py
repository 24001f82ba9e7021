"""Finding sources: files named or found under folders, URLs, and what `--exclude` and `.kbignore` leave out."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", ".ipynb_checkpoints"}
IGNORE_FILE = ".kbignore"
"""A file of gitignore patterns in an ingested folder; it applies to that folder and those below it."""

URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class Candidate:
    """A source found on the command line or in a folder, before it is read."""

    path: Path
    explicit: bool
    """Named on the command line (an unknown type is then an error, not silently skipped)."""
    problem: str | None = None
    url: str | None = None
    """Set instead of a real path for a URL target: a fetcher brings it in."""
    excluded: str | None = None
    """The pattern that leaves this file out (it is not read; a copy ingested before counts as missing)."""
    size: int = 0

    @property
    def uri(self) -> str:
        if self.url:
            return self.url
        try:
            return self.path.resolve().as_uri()
        except (OSError, RuntimeError):
            return self.path.absolute().as_uri()


class Exclusions:
    """gitignore-style patterns for one folder tree: `--exclude` ones and those of every `.kbignore` met.

    A pattern from `sub/.kbignore` is rewritten relative to the tree's root (`x` -> `sub/**/x`,
    `/x` or `a/x` -> `sub/x`, `sub/a/x`), so one spec answers for the whole tree and, as in git, the
    deeper file's patterns come later and win.
    """

    def __init__(self, patterns: Iterable[str] = ()):
        self.lines: list[str] = [p for p in patterns if p.strip()]
        self._spec = None

    def add_file(self, folder: str, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        prefix = f"{folder}/" if folder else ""
        for raw in text.splitlines()[:10_000]:
            line = raw.rstrip("\n\r")
            if not line.strip() or line.startswith("#"):
                continue
            negate = line.startswith("!")
            body = line[1:] if negate else line
            if prefix:
                anchored = "/" in body.rstrip("/")
                body = prefix + (body.lstrip("/") if anchored else "**/" + body)
            self.lines.append(("!" if negate else "") + body)
        self._spec = None

    def match(self, relative: str, is_dir: bool = False) -> str | None:
        """The pattern that excludes `relative` (a POSIX path under the root), or None."""
        if not self.lines:
            return None
        import pathspec

        if self._spec is None:
            self._spec = pathspec.GitIgnoreSpec.from_lines(self.lines)
        candidate = relative + "/" if is_dir else relative
        if not self._spec.match_file(candidate):
            return None
        # Name the last positive pattern that matches, for the report (the spec itself decided).
        for line in reversed(self.lines):
            if not line.startswith("!") and pathspec.GitIgnoreSpec.from_lines([line]).match_file(candidate):
                return line
        return "an exclude pattern"


def discover(targets: list[str], exclude: Iterable[str] = ()) -> Iterator[Candidate]:
    """Files named or found under folders (recursively), each real file once, symlink loops cut."""
    seen: set[tuple[int, int]] = set()
    walked: set[tuple[int, int]] = set()  # folders walked, shared so a second target never re-walks one
    exclude = list(exclude)
    for target in targets:
        if URL_SCHEME.match(target):
            yield Candidate(Path(target), True, url=target)
            continue
        path = Path(target).expanduser()
        if not os.path.lexists(path):
            yield Candidate(path, True, "no such file or folder" + suggestion(path))
            continue
        if path.is_dir():
            yield from _walk(path, seen, walked, Exclusions(exclude))
        elif not path.exists():
            yield Candidate(path, True, "broken symbolic link")
        else:
            found = Candidate(path, True, size=_size(path))
            found.excluded = Exclusions(exclude).match(path.name)
            yield found


def suggestion(path: Path) -> str:
    """ " (did you mean notes.pdf?)" when the folder holds a name close to the one given, else ""."""
    parent = path.parent
    try:
        names = [entry.name for entry in os.scandir(parent)] if parent.is_dir() else []
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {parent / close[0] if str(parent) != '.' else close[0]}?)"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _walk(
    root: Path, seen: set[tuple[int, int]], visited_dirs: set[tuple[int, int]], exclusions: Exclusions
) -> Iterator[Candidate]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            info = folder.stat()
        except OSError as exc:
            yield Candidate(folder, True, f"cannot open folder ({exc.strerror})")
            continue
        key = (info.st_dev, info.st_ino)
        if key in visited_dirs:  # a symlink loop or a second link to a folder already walked
            continue
        visited_dirs.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield Candidate(folder, True, f"cannot list folder ({exc.strerror})")
            continue
        relative_folder = folder.relative_to(root).as_posix() if folder != root else ""
        if any(e.name == IGNORE_FILE for e in entries):
            exclusions.add_file(relative_folder, folder / IGNORE_FILE)
        subfolders = []
        for entry in entries:
            if entry.name.startswith(".") or entry.name in SKIP_DIRS:
                continue
            path = Path(entry.path)
            relative = f"{relative_folder}/{entry.name}" if relative_folder else entry.name
            try:
                if entry.is_dir():
                    if exclusions.match(relative, is_dir=True) is None:
                        subfolders.append(path)
                    continue
                if not entry.is_file():
                    if entry.is_symlink() and not path.exists():
                        yield Candidate(path, False, "broken symbolic link")
                    continue
                info = entry.stat()
                file_key = (info.st_dev, info.st_ino)
            except OSError as exc:
                yield Candidate(path, False, f"cannot read ({exc.strerror})")
                continue
            if file_key in seen:
                continue
            seen.add(file_key)
            yield Candidate(path, False, excluded=exclusions.match(relative), size=info.st_size)
        stack.extend(reversed(subfolders))
