"""kb's answer engine and search behind the web pages: off the event loop, one answer at a time.

The LLM is one model in memory (loading it takes about a second, answering about five), so answers
run on one worker thread that keeps the model and an engine per KB file; searches run on a second
thread so that they do not wait behind an answer. Each thread opens its own read-only connections.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kb.errors import KBError

MAX_WAITING = 4
"""Questions allowed to wait for the answer thread; more are told to try again (503)."""


class Busy(KBError):
    """Too many questions are waiting for an answer."""


class Workers:
    """The two worker threads and what they keep between requests."""

    def __init__(self) -> None:
        self.ask_pool = ThreadPoolExecutor(1, thread_name_prefix="kb-ask")
        self.search_pool = ThreadPoolExecutor(1, thread_name_prefix="kb-search")
        self.waiting = 0  # touched on the event loop only
        self.durations: deque[float] = deque(maxlen=20)
        """Seconds the last answers took here, so the page can say how long to expect."""
        self._llm: Any = None
        self._llm_key: tuple | None = None
        self._engines: dict[str, tuple[tuple, Any]] = {}  # ask thread only
        self._searchers: dict[str, tuple[tuple, Any]] = {}  # search thread only

    async def ask(self, path: str, question: str, config: dict[str, Any]) -> Any:
        if self.waiting >= MAX_WAITING:
            raise Busy("Too many questions are waiting for an answer; try again in a minute.")
        self.waiting += 1
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self.ask_pool, self._ask, path, question, dict(config)
            )
        finally:
            self.waiting -= 1
        if not answer.abstained:
            self.durations.append(answer.timings.get("total_s", 0.0))
        return answer

    def expected_wait(self) -> str:
        """What the ask page says while a learner waits: measured here once answers have been given."""
        if not self.durations:
            return (
                "the first answer takes longest, while the model loads: about 15-30 s on a 2-core laptop, "
                "less on a faster machine"
            )
        return f"answers have taken about {statistics.median(self.durations):.0f} s each on this machine"

    async def search(self, path: str, query: str, k: int) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(self.search_pool, self._search, path, query, k)

    # -- on the worker threads ---------------------------------------------------------------

    def _ask(self, path: str, question: str, config: dict[str, Any]) -> Any:
        from kb.answer import AnswerEngine, AskSettings
        from kb.search import Searcher

        def build(kb: Any) -> Any:
            settings = AskSettings(fast=bool(config.get("fast", False)), judge=config.get("judge", "auto"))
            searcher = Searcher(kb, _embedder(kb))
            return AnswerEngine(kb, lambda: self._shared_llm(config), settings, searcher=searcher)

        engine = _cached(self._engines, path, build)
        return engine.ask(question, log=False)

    def _search(self, path: str, query: str, k: int) -> list[Any]:
        from kb.search import Searcher

        searcher = _cached(self._searchers, path, lambda kb: Searcher(kb, _embedder(kb)))
        return searcher.search(query, k)

    def _shared_llm(self, config: dict[str, Any]) -> Any:
        """One model for every KB served; a new one only when the configuration names another."""
        from kb.answer import load_llm

        key = tuple(sorted((k, str(v)) for k, v in config.items() if k != "judge" and k != "fast"))
        if self._llm is None or self._llm_key != key:
            self._llm = load_llm(
                model_path=config.get("model"),
                llm_url=config.get("llm_url"),
                llm_model=config.get("llm_model"),
                n_ctx=int(config.get("n_ctx", 4096)),
                threads=config.get("threads"),
                llm_timeout=float(config.get("llm_timeout", 120)),
            )
            self._llm_key = key
        return self._llm


def _embedder(kb: Any) -> Any:
    from .status import embedder_for

    return embedder_for(kb.model_id) if kb.model_id else None


def _cached(cache: dict[str, tuple[tuple, Any]], path: str, build: Callable[[Any], Any]) -> Any:
    """The object built on `path`'s KB, rebuilt (and the old file closed) when the file was replaced."""
    from kb.store import KB

    stat = os.stat(path)
    stamp = (stat.st_ino, stat.st_dev)
    entry = cache.get(path)
    if entry is not None and entry[0] == stamp:
        return entry[1]
    if entry is not None:
        entry[1].kb.close()
    kb = KB.open(path, readonly=True)
    try:
        built = build(kb)
    except BaseException:
        kb.close()
        raise
    cache[path] = (stamp, built)
    return built


workers = Workers()
