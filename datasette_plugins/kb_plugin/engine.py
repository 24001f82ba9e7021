"""kb's answer engine and search behind the web pages: off the event loop, bounded, one answer at a time.

The LLM is one model in memory (loading it takes about a second, answering about five), so answers
run on one worker thread that keeps the model and an engine per KB file. Searches run on a small
pool of their own threads (each with its own read-only connection per KB), so a burst of them
shares the CPU instead of queueing behind one thread. Searches come first (Priority): an answer
starts only when no search is in flight, and pauses between its embedding steps while searches
arrive, so a learner's search never waits behind someone else's answer. What waits is bounded:
past the limits, the page answers 503 with Retry-After instead of piling work up.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
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
BLAS_THREADS = 1
"""NumPy's BLAS threads in kb serve. The query encoder (kb/bert_numpy.py) multiplies a few tokens by
384 x 384 matrices: OpenBLAS's own threads spin-wait between such small products, and a search cost
about 540 ms of CPU instead of 52 ms on 2 cores (measured, issue 17). The search threads are the
parallelism instead."""
ASK_DEFER_S = 30.0
"""Longest an answer waits for searches to finish, before starting and at each pause: searches come
first, but a steady stream of them must not starve the answers for ever."""


class Busy(KBError):
    """Too many requests are waiting; `retry_after` is the seconds to suggest."""

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class Priority:
    """Searches before answers, each bounded: the gate every route that searches or answers goes through.

        async with priority.search():          # Busy (503, Retry-After 2 s) past `max_searches` in flight
            ...hand the search to a thread...
        async with priority.ask(retry_after):  # Busy (503, Retry-After) past `max_asks` admitted
            ...hand the answer to a thread...
        priority.begin()                       # on that thread, as the answer starts: waits while searches
        priority.pause()                       # are in flight; again between the answer's steps

    Waiting for searches is bounded by `defer_s` for each answer (begin() starts its budget), so a
    steady stream of searches slows answers down but cannot starve them. How many answers run at once
    is the answer threads' count (Workers: one). search() and ask() are called on the event loop only
    (their counters are not locked); begin() and pause() on worker threads; `idle` is set while no
    search is in flight.
    """

    def __init__(
        self, max_searches: int = MAX_SEARCHES_WAITING, max_asks: int = MAX_WAITING, defer_s: float = ASK_DEFER_S
    ) -> None:
        self.max_searches, self.max_asks, self.defer_s = max_searches, max_asks, defer_s
        self.searching = 0  # searches in flight: running or waiting for a thread
        self.waiting = 0  # answers admitted: running or waiting for a thread
        self.idle = threading.Event()
        self.idle.set()
        self._local = threading.local()  # each answer thread's deadline for waiting

    @asynccontextmanager
    async def search(self) -> AsyncIterator[None]:
        if self.searching >= self.max_searches:
            raise Busy("Too many searches are waiting; try again in a few seconds.", 2)
        self.searching += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.searching -= 1
            if self.searching == 0:
                self.idle.set()

    @asynccontextmanager
    async def ask(self, retry_after: int = 30) -> AsyncIterator[None]:
        if self.waiting >= self.max_asks:
            raise Busy("Too many questions are waiting for an answer; try again in a minute.", retry_after)
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    def begin(self) -> None:
        """On an answer's thread, as it starts: its waiting budget, then the searches in flight go first."""
        self._local.deadline = time.monotonic() + self.defer_s
        self.pause()

    def pause(self) -> None:
        """On an answer's thread, between its steps: wait (within its budget) while searches are in flight."""
        deadline = getattr(self._local, "deadline", 0.0)
        if not self.idle.is_set():
            self.idle.wait(max(0.0, deadline - time.monotonic()))


class Workers:
    """The worker threads and what they keep between requests."""

    def __init__(self) -> None:
        self.ask_pool = ThreadPoolExecutor(1, thread_name_prefix="kb-ask")
        self.search_pool = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="kb-search")
        self.priority = Priority()
        self.durations: deque[float] = deque(maxlen=20)
        """Seconds the last answers took here, so the page can say how long to expect."""
        self._llm: Any = None
        self._llm_key: tuple | None = None
        self._engines: dict[str, tuple[tuple, Any]] = {}  # ask thread only
        self._local = threading.local()  # each search thread's searchers, by path
        self._blas_limited = False
        self.limit_blas = False
        """Set by `kb serve`, which owns its process. The limit is process-wide and lasts, so a Datasette
        embedded in another program (or a test run that later transcribes speech, whose decoding it
        changes) keeps its BLAS as it was."""

    # The counts the tests and the status page read (the priority gate keeps them).
    @property
    def waiting(self) -> int:
        return self.priority.waiting

    @waiting.setter
    def waiting(self, value: int) -> None:
        self.priority.waiting = value

    @property
    def searching(self) -> int:
        return self.priority.searching

    @searching.setter
    def searching(self, value: int) -> None:
        self.priority.searching = value

    async def ask(self, path: str, question: str, config: dict[str, Any], history: list | None = None) -> Any:
        """The answer to `question`; `history` (kb.followup.Turn) makes a follow-up standalone first."""
        self._limit_blas()
        async with self.priority.ask(self.answer_seconds()):
            answer = await asyncio.get_running_loop().run_in_executor(
                self.ask_pool, self._ask, path, question, dict(config), history
            )
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
        self._limit_blas()
        async with self.priority.search():
            return await asyncio.get_running_loop().run_in_executor(self.search_pool, self._search, path, query, k)

    def _limit_blas(self) -> None:
        """Once, before the first search or answer (not on import: a process that only imports the
        plugin keeps its BLAS as it was). Process-wide: OpenBLAS has one thread count."""
        if self.limit_blas and not self._blas_limited:
            self._blas_limited = True
            from threadpoolctl import threadpool_limits

            threadpool_limits(BLAS_THREADS, user_api="blas")

    def shutdown(self) -> None:
        """Stop taking work; queued work is dropped (the server is stopping)."""
        self.ask_pool.shutdown(wait=False, cancel_futures=True)
        self.search_pool.shutdown(wait=False, cancel_futures=True)

    # -- on the worker threads ---------------------------------------------------------------

    def _ask(self, path: str, question: str, config: dict[str, Any], history: list | None = None) -> Any:
        from kb import LLMOptions
        from kb.answer import AnswerEngine, check_question
        from kb.search import Searcher

        settings = LLMOptions.from_config(config).settings()
        settings.candidates = int(config.get("candidates", settings.candidates))

        def build(kb: Any) -> Any:
            searcher = Searcher(kb, _Yielding(_embedder(kb), self.priority), resident=True)
            return AnswerEngine(kb, lambda: self._shared_llm(config), settings, searcher=searcher)

        engine = _cached(self._engines, path, build)
        # Per request (the /v1 API's k, fast and model): the engine and the loaded model are kept.
        engine.configure(settings, lambda: self._shared_llm(config))
        self.priority.begin()
        if history:
            from kb.followup import standalone

            question = standalone(engine.llm, history, check_question(question))
        return engine.ask(question, log=False)

    def _search(self, path: str, query: str, k: int) -> list[Any]:
        from kb.search import Searcher

        searchers = getattr(self._local, "searchers", None)
        if searchers is None:
            searchers = self._local.searchers = {}
        searcher = _cached(searchers, path, lambda kb: Searcher(kb, _embedder(kb), resident=True))
        return searcher.search(query, k)

    def _shared_llm(self, config: dict[str, Any]) -> Any:
        """One model for every KB served; a new one only when the configuration names another."""
        from kb import LLMOptions

        key = tuple(sorted((k, str(v)) for k, v in config.items() if k not in ("judge", "fast", "candidates")))
        if self._llm is None or self._llm_key != key:
            self._llm = LLMOptions.from_config(config).load()
            self._llm_key = key
        return self._llm


class _Yielding:
    """An answer's embedder: before each text it embeds (the question, then each candidate sentence
    of the evidence check), it lets the searches in flight go first."""

    def __init__(self, embedder: Any, priority: Priority) -> None:
        self._embedder, self._priority = embedder, priority

    def embed_query(self, text: str) -> Any:
        from kb.search import embed_query

        self._priority.pause()
        return embed_query(self._embedder, text)

    def __getattr__(self, name: str) -> Any:  # model_id, dimension, embed(): the embedder's own
        return getattr(self._embedder, name)


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
