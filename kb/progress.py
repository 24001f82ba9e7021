"""Ingest progress a person can read: what was found, a live bar with the file and its stage, the ETA.

On a terminal, one line is redrawn in place by a small thread four times a second, so the elapsed
time moves even while one long step runs (a model loading, a page being OCRed); when stderr is not a
terminal, one plain line is printed per source instead. Nothing here changes what is ingested.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import Any, TextIO

from .terminal import printable
from .text import clock
from .types import SourceReport

REDRAW_S = 0.25


def plural(count: int, word: str, many: str | None = None) -> str:
    """ "1 source", "2 sources", "0 chunks"."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB" if size >= 2**20 / 10 or not size else f"{size / 1024:,.0f} KB"


class Progress:
    """What the ingest tells whoever watches; this base class tells no one (the library default)."""

    def found(self, sources: int, size: int, urls: int = 0) -> None:
        """Discovery is over: `sources` files to read (`size` bytes), plus `urls` URLs."""

    def start(self, index: int, total: int, name: str, size: int = 0) -> None:
        """Source number `index` (1-based) of `total` is being read."""

    def stage(self, stage: str, fraction: float | None = None) -> None:
        """The current source moved to another step (reading, OCR, transcribing, chunking, embedding)."""

    def done(self, report: SourceReport) -> None:
        """A source is finished (stored, unchanged, failed, ...)."""


class CallbackProgress(Progress):
    """The older interface: a function called with each finished source's report."""

    def __init__(self, callback: Any):
        self.callback = callback

    def done(self, report: SourceReport) -> None:
        self.callback(report)


class TerminalProgress(Progress):
    """The display `kb ingest` and `kb sync` show on stderr."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.count = 0
        self.total = 0
        self.name = ""
        self.stage_name = ""
        self.fraction: float | None = None
        self.total_size = 0
        self.done_size = 0
        self.read_size = 0
        self.read_seconds = 0.0
        self.source_started = self.started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False

    # -- events -------------------------------------------------------------------------------

    def found(self, sources: int, size: int, urls: int = 0) -> None:
        self.total, self.total_size = sources + urls, size
        what = plural(sources, "file") + f" ({megabytes(size)})" if sources else ""
        if urls:
            what = f"{what} and {plural(urls, 'URL')}" if what else plural(urls, "URL")
        self._line(f"kb: found {what or 'nothing to read'}")
        if self.live and self._thread is None:
            self._thread = threading.Thread(target=self._tick, name="kb-progress", daemon=True)
            self._thread.start()

    def start(self, index: int, total: int, name: str, size: int = 0) -> None:
        with self._lock:
            self.count, self.total = index, max(total, index)
            # A file name or URL someone else chose: shown escaped, never as terminal controls.
            self.name, self.stage_name, self.fraction = printable(name), "reading", None
            self.source_started = time.monotonic()
        self._draw()

    def stage(self, stage: str, fraction: float | None = None) -> None:
        with self._lock:
            self.stage_name, self.fraction = printable(stage), fraction
        self._draw()

    def done(self, report: SourceReport) -> None:
        with self._lock:
            self.done_size += report.size
            if report.status not in ("unchanged", "skipped", "excluded", "missing", "removed"):
                # Only sources really read teach the ETA how fast this machine reads.
                self.read_size += report.size
                self.read_seconds += report.seconds
        if not self.live:
            name = printable(report.uri.rsplit("/", 1)[-1])
            chunks = f"  {plural(report.chunks, 'chunk')}" if report.status == "ok" else ""
            detail = f"  {printable(report.reason or report.note)}" if (report.reason or report.note) else ""
            self._line(f"[{self.count}/{self.total}] {report.status:<9} {name}{chunks}{detail}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.live and self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- drawing ------------------------------------------------------------------------------

    def eta(self) -> float | None:
        """Seconds left: the bytes still to read at the pace of the sources read so far."""
        if self.read_seconds <= 0 or self.read_size <= 0:
            return None
        left = max(self.total_size - self.done_size, 0)
        return left * self.read_seconds / self.read_size

    def line(self, width: int) -> str:
        with self._lock:
            elapsed = time.monotonic() - self.started
            finished = max(self.count - 1, 0)
            share = finished / self.total if self.total else 0.0
            eta = self.eta()
            stage = self.stage_name + (f" {self.fraction:.0%}" if self.fraction is not None else "")
            name = self.name
        bar_width = 20
        filled = int(round(share * bar_width))
        bar = "[" + "#" * filled + "-" * (bar_width - filled) + "]"
        head = (
            f"{bar} {self.count}/{self.total}  {clock(elapsed)} elapsed, ETA {clock(eta) if eta is not None else '?'}"
        )
        tail = f"  {name}: {stage}" if name else ""
        text = head + tail
        return text if len(text) <= width else text[: max(width - 1, 0)] + "\u2026"

    def _draw(self) -> None:
        if not self.live or not self.count:
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        text = self.line(width)
        with self._lock:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._shown = True

    def _line(self, text: str) -> None:
        with self._lock:
            if self.live and self._shown:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(REDRAW_S):
            self._draw()
