"""`kb ingest --executor ray` on a real local Ray cluster: the same KB as the local executor, and GPUs
asked of a cluster without them refused at once. One cluster for the module (starting one takes seconds)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from kb.cli import cli
from tests.helpers import COURSE, ROOT, TESTS

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """Two CPUs, no dashboard; workers load the hash embedder as kb processes do (KB_PLUGINS)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"KB_PLUGINS": "kb_test_plugins", "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}},
    )
    yield
    ray.shutdown()


def ingest(*args: str):
    return CliRunner().invoke(cli, ["ingest", *args, "--embedder", "hash", "--json"], catch_exceptions=False)


def snapshot(db) -> dict:
    """What must not depend on the executor: each source's row, and each chunk by (source, ordinal)
    with its locator and vector. The integer ids follow the order sources were written in."""
    conn = sqlite3.connect(db)
    sources = {
        row[0]: row[1:]
        for row in conn.execute(
            "SELECT uri, kind, title, content_hash, size, mtime, status, error, metadata FROM sources"
        )
    }
    chunks = {}
    for uri, ordinal, *rest, vector in conn.execute(
        "SELECT s.uri, c.ordinal, c.text, c.page, c.slide, c.start_s, c.end_s, c.heading, c.anchor, c.link, e.vector "
        "FROM chunks c JOIN sources s ON s.id = c.source_id LEFT JOIN embeddings e ON e.chunk_id = c.id"
    ):
        chunks[(uri, ordinal)] = (tuple(rest), np.frombuffer(vector, dtype=np.float32))
    conn.close()
    return {"sources": sources, "chunks": chunks}


def test_ray_executor_builds_the_same_kb_as_the_local_one(cluster, hash_embedder, tmp_path):
    course = tmp_path / "course"
    shutil.copytree(COURSE, course)
    # A source that fails on the worker must fail with the same sentence as on the driver.
    (course / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    local, on_ray = tmp_path / "local.db", tmp_path / "ray.db"

    ran = ingest(str(local), str(course))
    assert ran.exit_code == 1, ran.output  # broken.pdf
    ran = ingest(str(on_ray), str(course), "--executor", "ray")
    assert ran.exit_code == 1, ran.output

    expected, got = snapshot(local), snapshot(on_ray)
    assert got["sources"] == expected["sources"]
    status, reason = expected["sources"][(course / "broken.pdf").resolve().as_uri()][5:7]
    assert status == "error" and reason.startswith("corrupt or truncated PDF"), reason
    assert len(expected["chunks"]) > 50
    assert got["chunks"].keys() == expected["chunks"].keys()
    for key, (fields, vector) in expected["chunks"].items():
        assert got["chunks"][key][0] == fields, key
        np.testing.assert_allclose(got["chunks"][key][1], vector, atol=1e-5, err_msg=str(key))

    # Run again: the driver finds every source unchanged, as the local executor does.
    ran = ingest(str(on_ray), str(course), "--executor", "ray")
    statuses = {s["uri"]: s["status"] for s in json.loads(ran.stdout)["sources"]}
    assert set(statuses.values()) == {"unchanged", "error"}, statuses


def test_gpus_asked_of_a_cluster_without_them_fail_at_once(cluster, hash_embedder, tmp_path):
    ran = []
    # A task waiting for a GPU nobody has waits forever; the thread bounds how long the test can hang.
    worker = threading.Thread(
        target=lambda: ran.append(
            ingest(
                str(tmp_path / "kb.db"),
                str(COURSE / "field-guide-measuring-rainfall.md"),
                "--executor",
                "ray",
                "--ray-gpus",
                "1",
            )
        ),
        daemon=True,
    )
    worker.start()
    worker.join(120)
    assert ran, "kb ingest --ray-gpus 1 hung on a cluster without GPUs"
    result = ran[0]
    assert result.exit_code != 0
    message = result.stderr.strip()
    assert "GPUs" in message and "--ray-gpus" in message, message
    assert len(message.splitlines()) == 1 and message.endswith("."), message
    assert not (tmp_path / "kb.db").exists(), "a run the cluster cannot serve left a new KB behind"


def test_the_local_executor_never_imports_ray(tmp_path):
    """Ray is an optional extra of ~0.6 GB: a plain `kb ingest` must run without importing it."""
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from kb.cli import cli\n"
        f"ran = CliRunner().invoke(cli, ['ingest', {str(tmp_path / 'kb.db')!r}, {str(COURSE / 'website')!r},"
        " '--embedder', 'hash'])\n"
        "assert ran.exit_code == 0, ran.output\n"
        "assert 'ray' not in sys.modules, 'kb ingest imported ray'\n"
    )
    env = {**os.environ, "KB_PLUGINS": "kb_test_plugins", "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
