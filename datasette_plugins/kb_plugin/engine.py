"""kb's answer engine and search behind the web pages: off the event loop, bounded, one answer at a time.

The LLM is one model in memory (loading it takes about a second, answering about five), so answers
run on one worker thread that keeps the model and an engine per KB file. Searches run on a small
pool of their own threads (each with its own read-only connection per KB), so a burst of them
shares the CPU instead of queueing behind one thread, and never waits behind an answer. What waits
is bounded: past the limits, the page answers 503 with Retry-After instead of piling work up.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kb.errors import KBError

MAX_WAITING = 8
"""Questions allowed in the answer queue (the one being answered included); more are told to try
again (503). A class of eight asking at once is served, the last after about eight answers' time."""
SEARCH_THREADS = min(4, max(2, os.cpu_count() or 2))
"""Search threads: the query embedding and SQLite both release the GIL, so a few threads use the
cores; more would only add memory (a connection and its page cache per thread and file)."""
MAX_SEARCHES_WAITING = 512
"""Searches allowed in flight at once (running or queued); past it, 503 with Retry-After."""


class Busy(KBError):
    """Too many requests are waiting; `retry_after` is the seconds to suggest."""

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class Workers:
    """The worker threads and what they keep between requests."""

    def __init__(self) -> None:
        self.ask_pool = ThreadPoolExecutor(1, thread_name_prefix="kb-ask")
        self.search_pool = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="kb-search")
        self.waiting = 0  # touched on the event loop only
        self.searching = 0  # touched on the event loop only
        self.durations: deque[float] = deque(maxlen=20)
        """Seconds the last answers took here, so the page can say how long to expect."""
        self._llm: Any = None
        self._llm_key: tuple | None = None
        self._engines: dict[str, tuple[tuple, Any]] = {}  # ask thread only
        self._local = threading.local()  # each search thread's searchers, by path

    async def ask(self, path: str, question: str, config: dict[str, Any], history: list | None = None) -> Any:
        """The answer to `question`; `history` (kb.followup.Turn) makes a follow-up standalone first."""
        if self.waiting >= MAX_WAITING:
            raise Busy("Too many questions are waiting for an answer; try again in a minute.", self.answer_seconds())
        self.waiting += 1
        try:
            answer = await asyncio.get_running_loop().run_in_executor(
                self.ask_pool, self._ask, path, question, dict(config), history
            )
        finally:
            self.waiting -= 1
        if not answer.abstained:
            self.durations.append(answer.timings.get("total_s", 0.0))
        return answer

    def answer_seconds(self) -> int:
        """Seconds after which a question turned away might find room: about one answer's time."""
        return max(5, int(statistics.median(self.durations))) if self.durations else 30

    def expected_wait(self) -> str:
        """What the ask page says while a learner waits: measured here once answers have been given."""
        if not self.durations:
            return (
                "the first answer takes longest, while the model loads: about 15-30 s on a 2-core laptop, "
                "less on a faster machine"
            )
        return f"answers have taken about {statistics.median(self.durations):.0f} s each on this machine"

    async def search(self, path: str, query: str, k: int) -> list[Any]:
        if self.searching >= MAX_SEARCHES_WAITING:
            raise Busy("Too many searches are waiting; try again in a few seconds.", 2)
        self.searching += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.search_pool, self._search, path, query, k)
        finally:
            self.searching -= 1

    def shutdown(self) -> None:
        """Stop taking work; queued work is dropped (the server is stopping)."""
        self.ask_pool.shutdown(wait=False, cancel_futures=True)
        self.search_pool.shutdown(wait=False, cancel_futures=True)

    # -- on the worker threads ---------------------------------------------------------------

    def _ask(self, path: str, question: str, config: dict[str, Any], history: list | None = None) -> Any:
        from kb.answer import AnswerEngine, AskSettings, check_question
        from kb.search import Searcher

        settings = AskSettings(fast=bool(config.get("fast", False)), judge=config.get("judge", "auto"))
        settings.candidates = int(config.get("candidates", settings.candidates))

        def build(kb: Any) -> Any:
            searcher = Searcher(kb, _embedder(kb))
            return AnswerEngine(kb, lambda: self._shared_llm(config), settings, searcher=searcher)

        engine = _cached(self._engines, path, build)
        # Per request (the /v1 API's k, fast and model): the engine and the loaded model are kept.
        engine.configure(settings, lambda: self._shared_llm(config))
        if history:
            from kb.followup import standalone

            question = standalone(engine.llm, history, check_question(question))
        return engine.ask(question, log=False)

    def _search(self, path: str, query: str, k: int) -> list[Any]:
        from kb.search import Searcher

        searchers = getattr(self._local, "searchers", None)
        if searchers is None:
            searchers = self._local.searchers = {}
        searcher = _cached(searchers, path, lambda kb: Searcher(kb, _embedder(kb)))
        return searcher.search(query, k)

    def _shared_llm(self, config: dict[str, Any]) -> Any:
        """One model for every KB served; a new one only when the configuration names another."""
        from kb.answer import load_llm

        key = tuple(sorted((k, str(v)) for k, v in config.items() if k not in ("judge", "fast", "candidates")))
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
