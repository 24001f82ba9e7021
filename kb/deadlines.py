"""The per-source deadline: the engine runs each connector under it, and a connector that starts
work of its own (yt-dlp, a transcriber) may run that under it too."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class SourceTimeout(BaseException):
    """Raised by the per-source deadline; a BaseException so a parser's `except Exception` cannot eat it."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise SourceTimeout when the block runs longer than `seconds` (main thread only)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise SourceTimeout(f"took longer than {seconds:g} s to read (the per-source time limit)")

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.getitimer(signal.ITIMER_REAL)  # an enclosing deadline's time left, if any
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # re-arm the enclosing deadline with what is left of it (at least a moment)
            signal.setitimer(signal.ITIMER_REAL, max(0.001, outer - (time.monotonic() - started)))
