"""Ctrl-C that works while a model loads or generates: the work runs off the main thread.

Python runs signal handlers only on the main thread, between bytecodes. A model loading or
reading a prompt inside one long llama.cpp call delays the KeyboardInterrupt until that call
returns (seconds), and a press that lands while llama.cpp calls back into Python (its log
callback) is raised inside the ctypes callback, which prints it and carries on: the probe saw 6
of 10 presses lost that way. So `kb ask` does its work on a worker thread while the main thread
only waits; at Ctrl-C it says so and ends the process at once. Nothing is lost: the answer log
is one SQLite transaction, rolled back if it was under way.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
WAKE_S = 0.05
"""How often the waiting main thread wakes: a press is acted on within this (plus exit time)."""
EXIT_INTERRUPTED = 130


def run_interruptible(work: Callable[[], T], *, on_interrupt: Callable[[], None] | None = None) -> T:
    """`work()`'s result (or its exception), computed on a worker thread; Ctrl-C ends the process
    with status 130 after `on_interrupt()` (which should print one line)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the main thread, which raises it as its own
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="kb-work", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(WAKE_S)
    except KeyboardInterrupt:
        stop(on_interrupt)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def stop(on_interrupt: Callable[[], None] | None = None) -> None:
    """End the process now (status 130). The worker may be inside a C call that cannot be
    interrupted; interpreter shutdown would wait for it, or free the model under it."""
    try:
        if on_interrupt is not None:
            on_interrupt()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)
