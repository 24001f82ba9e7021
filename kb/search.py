"""Hybrid retrieval: FTS5 BM25 and vector nearest neighbours, fused as the KB records (kb.fusion)."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

import numpy as np

from .errors import KBError
from .filecheck import damaged
from .fusion import Fusion, ranking
from .fusion import fuse as fuse_lists
from .links import local_link
from .store import KB
from .terms import TermCounts, fts_phrase
from .types import Hit, Locator, SourceRef
from .vectors import ResidentVectors, VectorDamage, checked_distances

MAX_QUERY_TERMS = 64
CANDIDATES = 50
"""Candidates a search takes from each list (at least k): the deepest a recorded fusion can use, so
kb tune fetches this many and tries no deeper setting."""
MAX_QUERY_CHARS = 10_000

_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be but by can did do does for from had has have how i if in into is it its of on or "
    "our so than that the their them then there these they this to was we were what when where which who "
    "why will with would you your".split()
)


def query_words(text: str) -> list[str]:
    """The words of `text` a keyword search looks for: no stopwords (unless nothing else is left)."""
    words = [w.lower() for w in _WORD.findall(text)]
    content = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(content))[:MAX_QUERY_TERMS]


def fts_query(text: str, words: list[str] | None = None) -> str | None:
    """User text (or its chosen `words`) as a safe FTS5 query: each word quoted, joined by OR;
    None when no word is left.

    Quoting makes every FTS5 operator (AND, NEAR, *, ^, column filters, quotes) plain text.
    """
    unique = query_words(text) if words is None else words
    if not unique:
        return None
    return " OR ".join(fts_phrase(w) for w in unique)


def bm25_matches(kb: KB, match: str | None, limit: int) -> list[tuple[int, float]]:
    """(chunk id, BM25) for an FTS5 query made by `fts_query`, best (lowest) first; the heading column
    counts half as much as the text."""
    if match is None:
        return []
    return kb.conn.execute(
        "SELECT rowid, bm25(chunks_fts, 1.0, 0.5) AS s FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY s LIMIT ?",
        (match, limit),
    ).fetchall()


def keyword_scored(kb: KB, query: str, limit: int, counts: TermCounts | None = None) -> list[tuple[int, float]]:
    """(chunk id, BM25) best first for the user's text. With `counts`, words too common to be worth
    their cost in a large KB are left out (kb.terms)."""
    words = query_words(query)
    return bm25_matches(kb, fts_query(query, counts.prune(words) if counts is not None else words), limit)


def keyword_ranks(kb: KB, query: str, limit: int, counts: TermCounts | None = None) -> list[int]:
    """Chunk ids by BM25, best first."""
    return [cid for cid, _ in keyword_scored(kb, query, limit, counts)]


class Searcher:
    """Search one KB; holds the embedder so repeated queries pay for the model once.

    `resident` (for long-lived processes: kb serve, kb mcp, the API): the vectors are read into memory
    on the first search and scanned there, one copy per file and process, re-read when the file
    changes. sqlite-vec's scan is scalar code (10-18x a NumPy scan of the same vectors); a one-shot
    `kb search` keeps the index, which costs less than reading every vector once.
    """

    def __init__(self, kb: KB, embedder: Any = None, resident: bool = False):
        self.kb = kb
        model = kb.model_id
        if model is None:
            raise KBError(
                f"{kb.path} is empty: it holds no sources yet; add some with `kb ingest {kb.path} SOURCE...`."
            )
        if embedder is None:
            from .plugins import get_embedder

            try:
                embedder = get_embedder(model)
            except KBError as exc:
                raise KBError(
                    f"{kb.path} was built with the embedding model {model}, which is not installed here."
                ) from exc
        elif embedder.model_id != model:
            from .errors import ModelMismatch

            raise ModelMismatch(f"{kb.path} was built with the embedding model {model}, not {embedder.model_id}.")
        recorded = kb.meta().get("embedding_dimension", "")
        if str(getattr(embedder, "dimension", recorded)) != recorded:
            raise damaged(
                kb.path,
                f"its metadata records {recorded!r}-dimensional vectors, but {model} makes "
                f"{embedder.dimension}-dimensional ones",
            )
        self.embedder = embedder
        self.resident = ResidentVectors.of(kb.path, int(recorded)) if resident else None
        self.counts = TermCounts(kb.conn)

    def search(self, query: str, k: int = 10, candidates: int = CANDIDATES) -> list[Hit]:
        try:
            return self._search(query, k, candidates)
        except VectorDamage as exc:
            raise damaged(self.kb.path, str(exc)) from exc

    def _search(self, query: str, k: int, candidates: int) -> list[Hit]:
        query = query.strip()
        if not query:
            raise KBError("The query is empty.")
        if len(query) > MAX_QUERY_CHARS:
            raise KBError(f"The query is too long ({len(query):,} characters; the limit is {MAX_QUERY_CHARS:,}).")
        if k < 1:
            raise KBError("k must be at least 1.")
        keyword, nearest, vector = self._lists(query, max(candidates, k))
        if not keyword and not nearest:
            self.check_not_empty()
        return self.fuse(keyword, nearest, k, vector)

    def lists(
        self, query: str, candidates: int = CANDIDATES
    ) -> tuple[list[tuple[int, float]], list[tuple[int, float]], np.ndarray]:
        """The two lists a search of `query` fuses, (chunk id, BM25) and (chunk id, distance) best
        first, and the query vector: kb tune fetches them once and fuses them every way it tries."""
        try:
            return self._lists(query.strip(), candidates)
        except VectorDamage as exc:
            raise damaged(self.kb.path, str(exc)) from exc

    def _lists(self, query: str, pool: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]], np.ndarray]:
        keyword = keyword_scored(self.kb, query, pool, self.counts)
        vector = np.asarray(embed_query(self.embedder, query), dtype=np.float32)
        return keyword, self._nearest(vector, pool), vector

    def _nearest(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The vector candidate list: from memory when resident, else from the KB's index."""
        if self.resident is None:
            return self.kb.index().search(vector, k)
        found = self.resident.search(vector, k)
        if self.resident.index_checked != self.resident.version:
            # An index with storage of its own (vec0, vss0) is what a one-shot `kb search` of the same
            # file reads: damage in it (sqlite-vec's storage emptied) is the file's damage, said here
            # too, once per change of the file. A learner copy's scan reads the very vectors just read.
            index = self.kb.index()
            if index.table is not None:
                index.search(vector, 1)
            self.resident.index_checked = self.resident.version
        return found

    def check_not_empty(self) -> None:
        """An empty KB says so, instead of looking like a question it does not answer."""
        if self.kb.conn.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is not None:
            return
        rows = self.kb.conn.execute("SELECT status, count(*) FROM sources GROUP BY status").fetchall()
        held = ", ".join(f"{n} {status}" for status, n in rows)
        detail = f" (its sources: {held}; `kb info {self.kb.path}` says why)" if rows else ""
        raise KBError(
            f"{self.kb.path} is empty: it holds no text to search{detail}; add sources with "
            f"`kb ingest {self.kb.path} FOLDER-OR-FILE...`."
        )

    @cached_property
    def fusion(self) -> Fusion:
        """How this KB fuses its two lists: the settings recorded in its kb_meta (kb.fusion)."""
        try:
            return Fusion.from_meta(self.kb.meta())
        except ValueError as exc:
            raise damaged(self.kb.path, f"its recorded fusion settings are not valid ({exc})") from exc

    def fuse(
        self,
        keyword: list[tuple[int, float]],
        nearest: list[tuple[int, float]],
        k: int,
        query_vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The best `k` of both lists, (chunk id, BM25) and (chunk id, distance) best first, fused by
        the KB's recorded fusion."""
        fusion = self.fusion
        keyword_pairs, nearest = keyword[: fusion.depth], list(nearest[: fusion.depth])
        scores = fuse_lists(fusion, keyword_pairs, nearest)
        bm25_rank = {cid: i for i, (cid, _) in enumerate(keyword_pairs, start=1)}
        vector_rank = {cid: i for i, (cid, _) in enumerate(nearest, start=1)}
        distance = dict(nearest)
        best = ranking(scores)[:k]
        rows = _chunk_rows(self.kb, best)
        if query_vector is not None:
            # Keyword-only hits get their cosine distance too: the answer engine scores evidence by it.
            missing = [cid for cid in best if cid not in distance]
            distance.update(_distances(self.kb, missing, query_vector))
        hits = []
        for cid in best:
            if cid not in rows:
                continue  # an index row whose chunk is gone: skip rather than fail
            row = rows[cid]
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    chunk_id=cid,
                    score=scores[cid],
                    text=row["text"],
                    source=SourceRef(uri=row["uri"], title=row["title"], kind=row["kind"]),
                    locator=Locator(
                        page=row["page"],
                        slide=row["slide"],
                        start_s=row["start_s"],
                        end_s=row["end_s"],
                        heading=row["heading"],
                        anchor=row["anchor"],
                    ),
                    link=local_link(self.kb.path, row["link"]),
                    bm25_rank=bm25_rank.get(cid),
                    vector_rank=vector_rank.get(cid),
                    distance=distance.get(cid),
                )
            )
        return hits


def _distances(kb: KB, ids: list[int], query: np.ndarray) -> dict[int, float]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = kb.conn.execute(f"SELECT chunk_id, vector FROM embeddings WHERE chunk_id IN ({marks})", ids).fetchall()
    for cid, blob in rows:
        if not isinstance(blob, bytes) or len(blob) != 4 * len(query):
            raise VectorDamage(f"the vector of chunk {cid} is not a {len(query)}-dimensional float32 vector")
    return dict(checked_distances([(cid, float(1.0 - np.frombuffer(blob, dtype="<f4") @ query)) for cid, blob in rows]))


def embed_query(embedder: Any, text: str) -> np.ndarray:
    """A query vector: through the embedder's light query path when it has one."""
    if hasattr(embedder, "embed_query"):
        return embedder.embed_query(text)
    return embedder.embed([text])[0]


def _chunk_rows(kb: KB, ids: list[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    cursor = kb.conn.execute(
        "SELECT chunks.id, chunks.text, chunks.page, chunks.slide, chunks.start_s, chunks.end_s, chunks.heading, "
        "chunks.anchor, chunks.link, sources.uri, sources.title, sources.kind "
        f"FROM chunks JOIN sources ON sources.id = chunks.source_id WHERE chunks.id IN ({marks})",
        ids,
    )
    names = [d[0] for d in cursor.description]
    return {row[0]: dict(zip(names, row)) for row in cursor}


def search(kb: KB, query: str, k: int = 10, embedder: Any = None) -> list[Hit]:
    """Hybrid search of `kb` (the library entry point behind `kb search`)."""
    return Searcher(kb, embedder).search(query, k)
