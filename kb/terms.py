"""Which query words are too common to search for, in a KB large enough for it to matter.

kb's keyword query ORs every word that is not a stopword. In a large KB a word held by a good share
of all chunks makes FTS5 score every one of those rows before `LIMIT` applies (26-80% of the rows at
a million chunks, most of the keyword search's time), while BM25 gives such a word little weight
(its idf is at most log(19) ~ 2.9 at a 5% share, against 7-9 for a word in a few hundred chunks).
Such words are dropped from the query, as the stopwords are, when the KB holds at least
PRUNE_MIN_CHUNKS chunks; a query of common words only then has no keyword list (the vector list
carries it). Smaller KBs (every course measured so far) keep the full query.
"""

from __future__ import annotations

from typing import Any

PRUNE_MIN_CHUNKS = 20_000
"""Below this many chunks every word is searched: the full query costs milliseconds there."""
COMMON_SHARE = 0.05
"""A word held by more than this share of the chunks is common."""
CACHE_WORDS = 50_000
"""Words whose counts are remembered (per Searcher); the cache starts over past it."""


def fts_phrase(word: str) -> str:
    """One word as an FTS5 phrase: quoted, so that every FTS5 operator in it is plain text."""
    return '"' + word.replace('"', '""') + '"'


class TermCounts:
    """Chunk counts of query words, each counted only up to the common threshold, kept until the
    file changes (data_version: another connection committed; total_changes: this one wrote)."""

    def __init__(self, conn: Any):
        self.conn = conn
        self._stamp: tuple[int, int] | None = None
        self._chunks = 0
        self._counts: dict[str, int] = {}

    def _fresh(self) -> None:
        stamp = (self.conn.execute("PRAGMA data_version").fetchone()[0], self.conn.total_changes)
        if stamp != self._stamp or len(self._counts) > CACHE_WORDS:
            self._stamp = stamp
            self._counts = {}
            # max(id) costs one b-tree descent where count(*) reads every row; ids have few gaps.
            self._chunks = self.conn.execute("SELECT coalesce(max(id), 0) FROM chunks").fetchone()[0]

    def threshold(self) -> int | None:
        """The count above which a word is common, or None where the KB is too small to prune."""
        self._fresh()
        return int(COMMON_SHARE * self._chunks) if self._chunks >= PRUNE_MIN_CHUNKS else None

    def count(self, word: str, cap: int) -> int:
        """How many chunks hold `word`, counting no further than `cap` + 1 (a common word's full
        count would read its whole posting list, which is what pruning avoids)."""
        if word not in self._counts:
            self._counts[word] = self.conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                (fts_phrase(word), cap + 1),
            ).fetchone()[0]
        return self._counts[word]

    def prune(self, words: list[str]) -> list[str]:
        """`words` without the common ones (all of them, where the KB is too small to prune)."""
        cap = self.threshold()
        if cap is None:
            return words
        return [w for w in words if self.count(w, cap) <= cap]
