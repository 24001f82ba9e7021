"""Stage 6 of ingest: the chunks' vectors, embedded in batches so the display can show the step move."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import silent
from .chunk import Prepared

EMBED_BATCH = 32
"""Chunks embedded per call, so the display can show the embedding step move."""


def embed(prepared: Prepared, embedder: Any, progress: Callable[..., None] = silent) -> Prepared:
    """`prepared` with the vectors of its chunks (none for an empty source)."""
    texts = [c.embedding_text() for c in prepared.chunks]
    if not texts:
        return prepared
    import numpy as np

    parts = []
    for start in range(0, len(texts), EMBED_BATCH):
        progress("embedding", start / len(texts))
        parts.append(embedder.embed(texts[start : start + EMBED_BATCH]))
    prepared.vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return prepared
