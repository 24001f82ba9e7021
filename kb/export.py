"""The learner copy: one self-contained file that any SQLite or Datasette opens without extensions."""

from __future__ import annotations

import os
from pathlib import Path

from .db import connect
from .errors import KBError
from .store import KB
from .vectors import BACKENDS


def export(source: KB, out: str | Path, *, force: bool = False) -> dict[str, object]:
    """Write a compacted, checkpointed copy of `source` to `out` without its vector index table.

    A vec0/vss0 table makes plain Datasette fail ("no such module: vec0"), so the copy keeps only
    the canonical float32 BLOBs; kb scans them (or `kb reindex` rebuilds the index) where it runs.
    """
    out = Path(out)
    if out.resolve() == source.path.resolve():
        raise KBError("The learner copy must be a different file from the KB.")
    if out.exists() and not force:
        raise KBError(f"{out} already exists; pass --force to replace it.")
    if not out.parent.is_dir():
        raise KBError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    partial = out.with_name(out.name + ".partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    # VACUUM INTO reads one consistent snapshot (WAL included) and writes it compacted.
    source.conn.execute("VACUUM INTO ?", (str(partial),))
    conn = connect(partial)
    try:
        meta = dict(conn.execute("SELECT key, value FROM kb_meta").fetchall())
        backend = meta.get("vector_backend")
        if backend in ("vec", "vss"):
            index = BACKENDS[backend](conn, int(meta["embedding_dimension"]))
            index.load()  # dropping a virtual table needs its module
            index.drop()
            conn.execute(
                "INSERT INTO kb_meta(key, value) VALUES ('vector_index_state', 'absent') "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
            )
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("VACUUM")
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise KBError(f"The copy failed SQLite's integrity check ({check}); {source.path} is unchanged.")
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("sources", "chunks")}
    finally:
        conn.close()
    os.replace(partial, out)
    return {"path": str(out), "size_bytes": out.stat().st_size, **counts}
