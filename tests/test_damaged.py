"""Finding 3 of issue 17: a copy is checked for what kb relies on, and damage is one sentence, never a traceback.

Each damaged copy passes SQLite's header, schema and quick checks (the damage is in the values kb
reads, not in SQLite's structure). Every command and `kb serve` must refuse it with one sentence
naming the file, and damage found only while answering (an FTS5 segment gone) is a 500 with one
line in the log, not rich's traceback with locals (63 KB a request before).
"""

from __future__ import annotations

import shutil
import sqlite3 as stdlib_sqlite3
from pathlib import Path
from urllib.parse import urlencode

import pytest

from kb import KB, NotAKBFile
from tests.helpers import TEST_PLUGINS, fetch, run_kb

# (which file, SQL that damages it); every statement leaves SQLite's own checks passing.
DAMAGE = {
    "dimension": ("copy", ["UPDATE kb_meta SET value = '63' WHERE key = 'embedding_dimension'"]),
    "dimension-not-a-number": ("copy", ["UPDATE kb_meta SET value = '6x4' WHERE key = 'embedding_dimension'"]),
    "truncated-vector": (
        "copy",
        [
            "UPDATE embeddings SET vector = substr(vector, 1, 100) "
            "WHERE chunk_id = (SELECT max(chunk_id) FROM embeddings)"
        ],
    ),
    "nan-vector": (
        "copy",
        [
            "UPDATE embeddings SET vector = X'0000C07F' || substr(vector, "
            "5) WHERE chunk_id = (SELECT min(chunk_id) FROM embeddings)"
        ],
    ),
    "missing-fts-rows": (
        "copy",
        [
            "INSERT INTO chunks_fts(chunks_fts, rowid, text, heading) SELECT "
            "'delete', id, text, heading FROM chunks WHERE id % 3 = 0"
        ],
    ),
    "unknown-backend": ("copy", ["UPDATE kb_meta SET value = 'faiss' WHERE key = 'vector_backend'"]),
    "wrong-backend": ("teacher", ["UPDATE kb_meta SET value = 'vss' WHERE key = 'vector_backend'"]),
    "index-dimension": ("teacher", ["UPDATE kb_meta SET value = '32' WHERE key = 'embedding_dimension'"]),
}


def damage(source: Path, target: Path, statements: list[str]) -> Path:
    shutil.copy(source, target)
    conn = stdlib_sqlite3.connect(target)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    assert stdlib_sqlite3.connect(target).execute("PRAGMA quick_check").fetchone()[0] == "ok"
    return target


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """A teacher's KB of the sample course (vec0 index, rollback journal) and its learner copy."""
    from tests.helpers import COURSE

    folder = tmp_path_factory.mktemp("damaged")
    teacher = folder / "teacher.db"
    assert run_kb("ingest", str(teacher), str(COURSE), "--embedder", "hash", env_extra=TEST_PLUGINS).returncode == 0
    conn = stdlib_sqlite3.connect(teacher)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    copy = folder / "copy.db"
    assert run_kb("export", str(teacher), str(copy), env_extra=TEST_PLUGINS).returncode == 0
    return {"teacher": teacher, "copy": copy}


def one_sentence(proc, path: Path) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert str(path) in proc.stderr
    return proc.stderr


@pytest.mark.kb_tree
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_copies_are_one_sentence_for_every_command_and_kb_serve(originals, tmp_path, kind):
    which, statements = DAMAGE[kind]
    bad = damage(originals[which], tmp_path / f"{kind}.db", statements)
    with pytest.raises(NotAKBFile) as refused:
        with KB.open(bad, readonly=True) as kb:
            from kb.search import Searcher

            Searcher(kb).search("rain gauge funnel", 5)
    assert str(bad) in str(refused.value) and "damaged" in str(refused.value)
    for args in (
        ["search", str(bad), "rain gauge funnel"],
        ["ask", str(bad), "How wide is a rain gauge funnel?", "--llm-url", "http://127.0.0.1:9/v1"],
        ["info", str(bad)],
        ["serve", str(bad), "--port", "1"],
    ):
        # A generous timeout: kb refuses at once, but a niced process on a busy machine starts slowly.
        one_sentence(run_kb(*args, env_extra=TEST_PLUGINS, timeout=600), bad)


def _serve(path: Path, *requests: str):
    return fetch([path], *requests, config={"llm_url": "http://127.0.0.1:9/v1", "llm_timeout": 5})


VECTOR_CHUNKS_GONE = ["DELETE FROM chunks_vec_vector_chunks00"]
"""sqlite-vec's storage of the vectors emptied: SQLite's quick check and kb's opening checks pass (the
canonical vectors are intact), and a KNN query fails with "could not open vectors blob"."""


def test_damage_found_while_serving_is_a_500_with_one_logged_line(originals, tmp_path, capfd, hash_embedder):
    bad = damage(originals["teacher"], tmp_path / "vectors.db", VECTOR_CHUNKS_GONE)
    search = f"/-/kb/vectors.json?{urlencode({'q': 'rain gauge funnel', 'mode': 'search'})}"
    ask = f"/-/kb/vectors.json?{urlencode({'q': 'How wide is a rain gauge funnel?'})}"
    page = f"/-/kb/vectors?{urlencode({'q': 'rain gauge funnel', 'mode': 'search'})}"
    capfd.readouterr()
    got = _serve(bad, search, ask, page)
    logged = capfd.readouterr().err
    for path in (search, ask):
        assert got[path].status_code == 500, got[path].text
        body = got[path].json()
        assert body["ok"] is False and "damaged" in body["error"] and "\n" not in body["error"], body
    assert got[page].status_code == 500 and "Traceback" not in got[page].text
    lines = [line for line in logged.splitlines() if line.strip()]
    assert len(lines) == 3 and all(line.startswith("kb: 500 /-/kb/vectors") for line in lines), logged
    assert len(logged) < 2000 and "Traceback" not in logged


def test_plain_datasette_errors_are_one_line_too(originals, tmp_path, capfd, hash_embedder):
    """A table Datasette cannot read: its error handler answered with rich's traceback and locals."""
    bad = damage(originals["teacher"], tmp_path / "rows.db", VECTOR_CHUNKS_GONE)
    capfd.readouterr()
    got = _serve(bad, "/rows/chunks_vec", "/rows/chunks_vec.json")
    logged = capfd.readouterr().err
    for response in got.values():
        assert response.status_code in (400, 500), response.status_code
        assert "Traceback" not in response.text
    assert len(logged) < 2000 and "Traceback" not in logged, logged
