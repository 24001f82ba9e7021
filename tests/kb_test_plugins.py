"""A deterministic stand-in for the embedding model, for tests where the model is not under test
(and a connector whose reading takes as long as a file says, for the progress display).

Loaded in-process by the `hash_embedder` fixture and in subprocesses with KB_PLUGINS=kb_test_plugins.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from kb import option
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


class SlowQueryHashEmbedder(HashEmbedder):
    """The hash embedder with a query path as slow as a real model's on a busy machine: for time limits."""

    model_id = "test/slow-query-hash-embedder"
    aliases = ("slow-query-hash",)
    query_s = 0.1

    def embed_query(self, text):
        import time

        time.sleep(self.query_s)
        return self.embed([text])[0]


class SlowConnector:
    """Reads a `.slow` file by sleeping as many seconds as it says: a long step, for the progress display.

    A file saying "until PATH" is read once PATH exists (at most two minutes): a step that lasts
    exactly as long as a test needs, however busy the machine is."""

    kind = "slow"
    suffixes = (".slow",)

    def extract(self, source):
        import time
        from pathlib import Path

        from kb.types import Document, Locator, Section

        said = bytes(source.data).decode() if not isinstance(source.data, str) else source.data
        if said.startswith("until "):
            deadline = time.monotonic() + 120
            while not Path(said[6:].strip()).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            time.sleep(float(said))
        return Document(source.uri, self.kind, source.stem, [Section(f"Slept {source.stem}.", Locator())])


@dataclass(frozen=True)
class StampOptions:
    """The stamp connector's one option, as a third-party connector declares its own."""

    stamp: str = option("plain", "The word the .stamp connector writes after each document's text.")


class StampConnector:
    """Reads a `.stamp` file as text and writes its `stamp` option after it: an option's way from
    `kb ingest -o stamp WORD` to a connector, seen in the stored passage."""

    kind = "stamp"
    suffixes = (".stamp",)
    options = StampOptions

    def extract(self, source):
        from kb import Document, Locator, Section, read_options

        stamp = read_options(StampOptions, source.options).stamp
        return Document(
            source.uri, self.kind, source.stem, [Section(f"{source.data.decode()} Stamped {stamp}.", Locator())]
        )


@hookimpl
def register_connectors(register):
    register(SlowConnector)
    register(StampConnector)


@hookimpl
def register_commands(cli):
    import click

    @cli.command(name="hash-vector")
    @click.argument("text")
    def hash_vector(text):
        """Print the test embedder's vector of TEXT: a command a plugin adds (register_commands).

        \b
        Example:
            KB_PLUGINS=kb_test_plugins kb hash-vector "rain gauge"
        """
        click.echo(" ".join(f"{x:.3f}" for x in HashEmbedder().embed([text])[0]))


@hookimpl
def register_embedders(register):
    register(HashEmbedder)
    register(OtherHashEmbedder)
    register(SlowQueryHashEmbedder)
