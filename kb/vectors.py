"""Vector indexes over the `embeddings` table, behind one interface.

The canonical vectors are the float32 BLOBs in `embeddings`; an index is derived from them and can
be rebuilt at any time (`kb reindex`). Every backend answers in cosine distance, so search does not
care which one a KB uses.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .db import load_extension


def to_blob(vector: np.ndarray) -> bytes:
    """Canonical storage form: little-endian float32."""
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


class VectorDamage(Exception):
    """A stored vector (or a distance computed from one) kb cannot use: the file is damaged.

    The message says what is wrong; kb.search names the file (filecheck.damaged)."""


def checked_distances(pairs: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """`pairs` as they are, refused if a distance is NaN or infinite (a damaged vector made it)."""
    for chunk_id, distance in pairs:
        if not np.isfinite(distance):
            raise VectorDamage(f"the vector of chunk {chunk_id} holds NaN or infinity")
    return pairs


class VectorIndex(ABC):
    """A nearest-neighbour index kept in the KB file."""

    name: str
    table: str | None

    def __init__(self, conn: Any, dimension: int):
        self.conn = conn
        self.dimension = dimension

    def load(self) -> None:  # noqa: B027 - most backends need nothing loaded
        """Make the index usable on this connection (load its SQLite extension)."""

    @abstractmethod
    def create(self) -> None: ...

    def drop(self) -> None:
        if self.table:
            self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")

    def exists(self) -> bool:
        if not self.table:
            return True
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (self.table,)).fetchone()
        return row is not None

    @abstractmethod
    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None: ...

    @abstractmethod
    def delete(self, ids: Iterable[int]) -> None: ...

    @abstractmethod
    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest chunk ids with their cosine distance, nearest first."""

    rebuild_batch: int | None = None
    """Commit every this many rows while rebuilding (None: one transaction)."""

    def rebuild(self, commit: Callable[[], None] | None = None) -> int:
        """Drop and refill the index from the embeddings table; return the row count.

        `commit` is called after each `rebuild_batch` rows, for backends that need it.
        """
        self.drop()
        self.create()
        count = 0
        last_id = 0
        size = self.rebuild_batch or 2048
        while True:
            # Keyset pagination, so that committing between batches does not break a cursor.
            batch = self.conn.execute(
                "SELECT chunk_id, vector FROM embeddings WHERE chunk_id > ? ORDER BY chunk_id LIMIT ?",
                (last_id, size),
            ).fetchall()
            if not batch:
                break
            self.add([row[0] for row in batch], np.vstack([from_blob(row[1]) for row in batch]))
            count += len(batch)
            last_id = batch[-1][0]
            if self.rebuild_batch and commit:
                commit()
        return count


class VecIndex(VectorIndex):
    """sqlite-vec's `vec0` virtual table (the default backend)."""

    name = "vec"
    table = "chunks_vec"

    def load(self) -> None:
        load_extension(self.conn, "vec")

    def create(self) -> None:
        self.conn.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.table} "
            f"USING vec0(embedding float[{self.dimension}] distance_metric=cosine)"
        )

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        self.conn.executemany(
            f"INSERT INTO {self.table}(rowid, embedding) VALUES (?, ?)",
            [(int(i), to_blob(v)) for i, v in zip(ids, vectors)],
        )

    def delete(self, ids: Iterable[int]) -> None:
        self.conn.executemany(f"DELETE FROM {self.table} WHERE rowid = ?", [(int(i),) for i in ids])

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        rows = self.conn.execute(
            f"SELECT rowid, distance FROM {self.table} WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (to_blob(vector), int(k)),
        ).fetchall()
        return checked_distances([(int(r[0]), float(r[1])) for r in rows])


VSS_HEADER = b"v\x01"
"""sqlite-vss reads a BLOB that starts with these two bytes as its own headed vector format, so a raw
float32 vector that happens to start with them (1 in 65,536) would lose a float and shift every
vector after it in the transaction. Sending every vector headed removes the ambiguity."""


class VssIndex(VectorIndex):
    """sqlite-vss's `vss0` virtual table (Faiss inside SQLite), named in the user's design card."""

    name = "vss"
    table = "chunks_vss"
    # vss0 keeps a transaction's pending rows in a list it rescans on each insert: filling it in
    # one transaction is quadratic, so rebuilds commit in batches of this size.
    rebuild_batch = 2000

    def load(self) -> None:
        load_extension(self.conn, "vss")

    def create(self) -> None:
        self.conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.table} USING vss0(embedding({self.dimension}))")

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        self.conn.executemany(
            f"INSERT INTO {self.table}(rowid, embedding) VALUES (?, ?)",
            [(int(i), VSS_HEADER + to_blob(v)) for i, v in zip(ids, vectors)],
        )

    def delete(self, ids: Iterable[int]) -> None:
        self.conn.executemany(f"DELETE FROM {self.table} WHERE rowid = ?", [(int(i),) for i in ids])

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        rows = self.conn.execute(
            f"SELECT rowid, distance FROM {self.table} WHERE vss_search(embedding, ?) LIMIT ?",
            (VSS_HEADER + to_blob(vector), int(k)),
        ).fetchall()
        # vss0's flat index answers squared L2; for unit vectors that is 2 * cosine distance.
        return checked_distances([(int(r[0]), float(r[1]) / 2.0) for r in rows])


class NumpyScan(VectorIndex):
    """No index at all: a brute-force scan of the embeddings BLOBs (works with no extension)."""

    name = "numpy"
    table = None

    def create(self) -> None:
        pass

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        pass

    def delete(self, ids: Iterable[int]) -> None:
        pass

    def __init__(self, conn: Any, dimension: int):
        super().__init__(conn, dimension)
        self._cache: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None

    def _matrix(self) -> tuple[np.ndarray, np.ndarray]:
        # Reading 100k BLOBs costs ~0.6 s: keep the matrix until the file changes. data_version moves
        # when another connection commits, total_changes when this one writes; both cost nothing.
        stamp = (self.conn.execute("PRAGMA data_version").fetchone()[0], self.conn.total_changes)
        if self._cache is None or self._cache[0] != stamp:
            self._cache = None  # let the old matrix go before the new one is read
            ids, matrix = read_matrix(self.conn, self.dimension)
            self._cache = (stamp, ids, matrix)
        return self._cache[1], self._cache[2]

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        ids, matrix = self._matrix()
        return nearest(ids, matrix, vector, k)


class ResidentVectors:
    """A KB file's vectors held in memory, shared by every Searcher of that file in this process.

    One copy per file (kb serve's search threads would otherwise hold one each: 1.5 GB apiece at a
    million chunks). The store watches the file through a read-only connection of its own: its
    `PRAGMA data_version` moves whenever any other connection, in any process, commits, so a
    source added or removed while a server runs is seen at the next search.
    """

    _shared: weakref.WeakValueDictionary[tuple[str, int, int], ResidentVectors] = weakref.WeakValueDictionary()
    _registry_lock = threading.Lock()

    def __init__(self, path: Path, dimension: int):
        from .db import connect, sqlite3

        self.dimension = dimension
        # Used by whichever search thread comes, one at a time (self._lock).
        self._conn = connect(path, readonly=True, threads=True)
        try:
            self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            # Read-only media (kb.filecheck.open_connection says when): nothing can change the file.
            self._conn.close()
            self._conn = connect(path, immutable=True, threads=True)
        self._lock = threading.Lock()
        self._version: int | None = None
        self.index_checked: int | None = None
        """The data_version at which a searcher last saw the KB's own index answer (Searcher._nearest)."""
        self._ids = np.empty(0, dtype=np.int64)
        self._matrix = np.empty((0, dimension), dtype=np.float32)

    @classmethod
    def of(cls, path: Path, dimension: int) -> ResidentVectors:
        """The store of the file at `path` (a replaced file, a new inode, gets a new one)."""
        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_ino, stat.st_dev)
        with cls._registry_lock:
            store = cls._shared.get(key)
            if store is None or store.dimension != dimension:
                store = cls._shared[key] = cls(Path(path), dimension)
            return store

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The current ids and matrix, re-read first when the file changed since the last look."""
        with self._lock:
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._ids = self._matrix = None  # let the old copy go before the new one is read
                self._ids, self._matrix = read_matrix(self._conn, self.dimension)
                self._version = version
            return self._ids, self._matrix

    @property
    def version(self) -> int | None:
        """The data_version of the copy in memory (None before the first read)."""
        return self._version

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        ids, matrix = self.arrays()  # the scan runs outside the lock, on arrays nothing mutates
        return nearest(ids, matrix, vector, k)

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()


READ_BATCH = 8192


def read_matrix(conn: Any, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """Every stored vector, as chunk ids and one float32 matrix, checked as it is read.

    Rows are copied batch by batch into a matrix allocated once: reading them all and joining them
    held every vector twice (3.3 GB at a million chunks instead of 1.5)."""
    outer = conn.in_transaction
    if not outer:
        conn.execute("BEGIN")  # one snapshot: the count and the rows agree
    try:
        count = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        ids = np.empty(count, dtype=np.int64)
        matrix = np.empty((count, dimension), dtype=np.float32)
        size = 4 * dimension
        at = 0
        cursor = conn.execute("SELECT chunk_id, vector FROM embeddings ORDER BY chunk_id")
        while batch := cursor.fetchmany(READ_BATCH):
            wrong = next((r for r in batch if not isinstance(r[1], bytes) or len(r[1]) != size), None)
            if wrong is not None:
                raise VectorDamage(f"the vector of chunk {wrong[0]} is not a {dimension}-dimensional float32 vector")
            block = np.frombuffer(b"".join(r[1] for r in batch), dtype="<f4").reshape(len(batch), dimension)
            finite = np.isfinite(block).all(axis=1)
            if not finite.all():
                raise VectorDamage(f"the vector of chunk {batch[int(np.argmin(finite))][0]} holds NaN or infinity")
            ids[at : at + len(batch)] = [r[0] for r in batch]
            matrix[at : at + len(batch)] = block
            at += len(batch)
    finally:
        if not outer:
            conn.execute("COMMIT")
    return ids, matrix


def nearest(ids: np.ndarray, matrix: np.ndarray, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k rows of `matrix` nearest `vector` in cosine distance (unit rows), ties by chunk id."""
    if not len(ids):
        return []
    distances = 1.0 - matrix @ np.asarray(vector, dtype=np.float32)
    k = min(k, len(ids))
    top = np.argpartition(distances, k - 1)[:k]
    top = top[np.lexsort((ids[top], distances[top]))]
    return [(int(ids[i]), float(distances[i])) for i in top]


BACKENDS: dict[str, type[VectorIndex]] = {"vec": VecIndex, "vss": VssIndex, "numpy": NumpyScan}


def open_index(conn: Any, backend: str, dimension: int) -> VectorIndex:
    """The index object for `backend`, with its extension loaded on `conn`."""
    index = BACKENDS[backend](conn, dimension)
    index.load()
    return index
