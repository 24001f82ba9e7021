"""How the keyword list and the vector list become one ranking, with weights a KB records.

Four methods, measured on development data nobody here wrote (benchmarks/bench_fusion.py):
weighted reciprocal rank fusion, score = w_k / (rrf_k + keyword rank) + w_v / (rrf_k + vector rank);
weighted sums of the two lists' scores normalised within each list, min-max or z-score (a chunk one
list missed scores as that list's worst candidate); and adaptive, the z-score sum with each list's
weight multiplied, on this query, by its confidence: the z-score of its best candidate raised to the
power `confidence`. A list whose first hit stands far above the rest (a decisive keyword match) then
counts for more than one whose scores are flat.
Equal-weight RRF lost to BM25 alone on reading-comprehension passages, so the weights come from data,
are written into kb_meta when a KB is created, and are read back by every search of that KB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

METHODS = ("rrf", "minmax", "zscore", "adaptive")


@dataclass(frozen=True)
class Fusion:
    """The fusion settings of one KB (kb_meta keys `fusion_*`)."""

    method: str = "rrf"
    """rrf (weighted reciprocal rank), minmax or zscore (weighted normalised scores), or adaptive
    (z-scores weighted by each list's confidence on the query)."""
    keyword_weight: float = 1.0
    """Weight of the FTS5 BM25 list."""
    vector_weight: float = 1.0
    """Weight of the vector nearest-neighbour list."""
    depth: int = 50
    """Candidates taken from each list before fusing."""
    rrf_k: int = 60
    """The rank constant of RRF (Cormack et al. 2009); unused by the score methods."""
    confidence: float = 0.0
    """adaptive: the power of a list's top z-score that multiplies its weight (0 is plain zscore)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown fusion method {self.method!r} (known: {', '.join(METHODS)})")
        # A KB file's values are read back from it: "nan" or "inf" would make every ranking arbitrary.
        if not all(math.isfinite(x) for x in (self.keyword_weight, self.vector_weight, self.confidence)):
            raise ValueError("fusion weights and confidence must be finite numbers")
        if self.keyword_weight < 0 or self.vector_weight < 0 or self.keyword_weight + self.vector_weight <= 0:
            raise ValueError("fusion weights must be non-negative and not both zero")
        if self.depth < 1 or self.rrf_k < 0:
            raise ValueError("fusion depth must be at least 1 and rrf_k non-negative")
        if not 0 <= self.confidence <= 10:
            raise ValueError("fusion confidence must be between 0 and 10")

    def describe(self) -> str:
        """How this fusion scores a chunk, in words (`kb search --explain`, the Datasette hybrid query)."""
        weights = f"{self.keyword_weight:g} x keyword + {self.vector_weight:g} x vector"
        if self.method == "rrf":
            return (
                f"weighted reciprocal rank, {self.keyword_weight:g}/(k+keyword rank) + "
                f"{self.vector_weight:g}/(k+vector rank), k={self.rrf_k}"
            )
        if self.method == "adaptive":
            return (
                f"z-scores within each list, {weights}, each weight times its list's top z-score "
                f"to the power {self.confidence:g} on this query"
            )
        return f"{'z-scores' if self.method == 'zscore' else 'min-max scores'} within each list, {weights}"

    def brief(self) -> str:
        """The settings in a few characters, for tables (kb tune, benchmarks/bench_fusion.py)."""
        weights = f"{self.keyword_weight:g}/{self.vector_weight:g}"
        if self.method == "rrf":
            return f"rrf {weights} k={self.rrf_k} d={self.depth}"
        if self.method == "adaptive":
            return f"adaptive {weights} p={self.confidence:g} d={self.depth}"
        return f"{self.method} {weights} d={self.depth}"

    def as_meta(self) -> dict[str, str]:
        return {
            "fusion_method": self.method,
            "fusion_keyword_weight": f"{self.keyword_weight:g}",
            "fusion_vector_weight": f"{self.vector_weight:g}",
            "fusion_depth": str(self.depth),
            "fusion_rrf_k": str(self.rrf_k),
            "fusion_confidence": f"{self.confidence:g}",
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> Fusion:
        """The fusion a KB records; a KB made before kb recorded one keeps the equal-weight RRF it was made with.

        Raises ValueError when the recorded values are not valid settings.
        """
        if "fusion_method" not in meta:
            return LEGACY
        return cls(
            method=meta["fusion_method"],
            keyword_weight=float(meta.get("fusion_keyword_weight", "1")),
            vector_weight=float(meta.get("fusion_vector_weight", "1")),
            depth=int(meta.get("fusion_depth", "50")),
            rrf_k=int(meta.get("fusion_rrf_k", "60")),
            confidence=float(meta.get("fusion_confidence", "0")),
        )


LEGACY = Fusion()
"""What every KB did before fusion was tuned: equal-weight RRF over 50 candidates a list."""

DEFAULT = Fusion(method="adaptive", keyword_weight=0.4, vector_weight=0.6, depth=30, confidence=2.0)
"""Recorded in every new KB: the best of 405 settings on the development halves of SciQ, BoolQ and the
sample course (benchmarks/bench_fusion.py --tune; every setting at or above the better single list on
all three dev halves is adaptive). On the held-out halves, hit@1/hit@5 (all-MiniLM-L6-v2): SciQ
0.937/0.973 (BM25 0.964/0.973; the zscore 0.4/0.6 recorded before, 0.928/0.973), BoolQ 0.847/0.973
(vectors 0.854/0.969; before 0.850/0.974), course 1.000/1.000. Not yet the goal: on SciQ hit@1 it is
0.027 below BM25 (paired bootstrap 95% [-0.050, -0.009], n=222); on BoolQ within noise (-0.006
[-0.026, +0.012], n=806). No fusion measured (RRF, min-max, z-score, DBSF, CombMNZ, a fitted linear
score) came within noise of BM25 on SciQ hit@1 while staying within noise of the vectors on BoolQ."""


def fuse(
    fusion: Fusion, keyword: Sequence[tuple[int, float]], nearest: Sequence[tuple[int, float]]
) -> dict[int, float]:
    """Fused scores by chunk id (higher is better).

    `keyword` is (chunk id, BM25) best first, where FTS5's BM25 is lower for better matches;
    `nearest` is (chunk id, cosine distance) best first. Only the first `fusion.depth` of each count.
    """
    keyword, nearest = keyword[: fusion.depth], nearest[: fusion.depth]
    scores: dict[int, float] = {}
    if fusion.method == "rrf":
        for weight, ranked in ((fusion.keyword_weight, keyword), (fusion.vector_weight, nearest)):
            for rank, (cid, _) in enumerate(ranked, start=1):
                scores[cid] = scores.get(cid, 0.0) + weight / (fusion.rrf_k + rank)
        return scores
    # Both lists as "higher is better" before normalising: BM25 from FTS5 is negated, distance too.
    normalise = "zscore" if fusion.method == "adaptive" else fusion.method
    lists = []
    for weight, ranked in ((fusion.keyword_weight, keyword), (fusion.vector_weight, nearest)):
        values = _normalised([(cid, -raw) for cid, raw in ranked], normalise)
        if fusion.method == "adaptive" and values:
            # The list's confidence on this query: how far its best candidate stands above the rest
            # (its z-score: the best is at or above the mean, so never negative but for rounding).
            weight *= max(0.0, max(values.values())) ** fusion.confidence
        lists.append((weight, values))
    everyone = {cid for _, values in lists for cid in values}
    for weight, values in lists:
        floor = min(values.values(), default=0.0)
        for cid in everyone:
            scores[cid] = scores.get(cid, 0.0) + weight * values.get(cid, floor)
    return scores


def _normalised(pairs: Sequence[tuple[int, float]], method: str) -> dict[int, float]:
    """Min-max (0..1) or z-score within the list; a list of one, or of equal values, scores 1 each."""
    if not pairs:
        return {}
    values = [v for _, v in pairs]
    if method == "minmax":
        low, span = min(values), max(values) - min(values)
        return {cid: (v - low) / span if span > 0 else 1.0 for cid, v in pairs}
    mean = sum(values) / len(values)
    spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return {cid: (v - mean) / spread if spread > 0 else 1.0 for cid, v in pairs}


def ranking(scores: Mapping[int, float]) -> list[int]:
    """Chunk ids best first; ties go to the lower id so a ranking never depends on dict order."""
    return sorted(scores, key=lambda cid: (-scores[cid], cid))
