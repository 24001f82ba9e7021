"""A deterministic stand-in for the embedding model, for tests where the model is not under test
(and a connector whose reading takes as long as a file says, for the progress display).

Loaded in-process by the `hash_embedder` fixture and in subprocesses with KB_PLUGINS=kb_test_plugins.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from kb.hookspecs import hookimpl


class HashEmbedder:
    """Bag of hashed words -> unit vector: texts sharing words are near, and nothing is random."""

    model_id = "test/hash-embedder"
    aliases = ("hash",)
    dimension = 64
    normalized = True

    def embed(self, texts):
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                out[row, digest[0] % self.dimension] += 1.0 if digest[1] % 2 else -1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out


class OtherHashEmbedder(HashEmbedder):
    """A second model id, to test that a KB refuses a model it was not built with."""

    model_id = "test/other-hash-embedder"
    aliases = ("other-hash",)


class SlowConnector:
    """Reads a `.slow` file by sleeping as many seconds as it says: a long step, for the progress display."""

    kind = "slow"
    suffixes = (".slow",)

    def extract(self, source):
        import time

        from kb.types import Document, Locator, Section

        time.sleep(float(source.data))
        return Document(source.uri, self.kind, source.stem, [Section(f"Slept {source.stem}.", Locator())])


@hookimpl
def register_connectors(register):
    register(SlowConnector)


@hookimpl
def register_embedders(register):
    register(HashEmbedder)
    register(OtherHashEmbedder)
