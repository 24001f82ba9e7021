"""Opening SQLite connections that can load kb's vector extensions.

The stock sqlite3 of many Python builds (pyenv's among them) cannot load extensions; the
pysqlite3-binary wheel can, and carries a recent SQLite. Prefer it; explain when neither can.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ExtensionUnavailable


def sqlite_module() -> Any:
    """The DB-API module kb uses: pysqlite3 when installed, else the standard library's."""
    try:
        return importlib.import_module("pysqlite3.dbapi2")
    except ImportError:  # pragma: no cover - exercised only without pysqlite3
        return importlib.import_module("sqlite3")


sqlite3 = sqlite_module()


def connect(path: str | Path, *, readonly: bool = False, immutable: bool = False, threads: bool = False) -> Any:
    """Open `path` in autocommit mode (kb issues BEGIN itself) with defensive settings.

    `immutable` (read-only media only): SQLite reads the file without locking it or looking for a
    write-ahead log, which is right only where nothing can change it. `threads`: the connection may
    be used from any thread (its owner serialises the use).
    """
    same_thread = not threads
    if readonly or immutable:
        query = "mode=ro&immutable=1" if immutable else "mode=ro"
        conn = sqlite3.connect(
            f"{Path(path).resolve().as_uri()}?{query}", uri=True, isolation_level=None, check_same_thread=same_thread
        )
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=same_thread)
    conn.execute("PRAGMA foreign_keys = ON")
    # A file someone sent you may hold hostile views or triggers: do not let its schema call
    # functions with side effects.
    conn.execute("PRAGMA trusted_schema = OFF")
    # Check each b-tree cell's size as pages are read: a crafted or damaged page is an error, not a crash.
    conn.execute("PRAGMA cell_size_check = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def load_extension(conn: Any, name: str) -> None:
    """Load the vector extension `name` ("vec" or "vss") into `conn`, then lock loading again."""
    if not hasattr(conn, "enable_load_extension"):
        raise ExtensionUnavailable(
            "This Python's sqlite3 cannot load extensions, which kb's vector index needs; "
            "install pysqlite3-binary (pip install pysqlite3-binary)."
        )
    try:
        conn.enable_load_extension(True)
        if name == "vec":
            import sqlite_vec

            sqlite_vec.load(conn)
        elif name == "vss":
            import sqlite_vss

            sqlite_vss.load(conn)
        else:
            raise ValueError(f"unknown vector extension {name!r}")
    except ImportError as exc:
        package = {"vec": "sqlite-vec", "vss": "sqlite-vss"}[name]
        raise ExtensionUnavailable(f"The {package} package is not installed ({exc}).") from exc
    except sqlite3.OperationalError as exc:
        hint = " (sqlite-vss needs the libblas3, liblapack3 and libgomp1 system packages)" if name == "vss" else ""
        raise ExtensionUnavailable(f"Could not load the {name} vector extension: {exc}{hint}.") from exc
    finally:
        # SQL in the file must never be able to call load_extension() itself.
        conn.enable_load_extension(False)


@contextmanager
def transaction(conn: Any) -> Iterator[Any]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception, Ctrl-C included.

    The ROLLBACK runs only while a transaction is open: an interrupt can land just before BEGIN
    took effect or just after COMMIT did, and a failing ROLLBACK would hide the real exception.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
