"""`kb ingest --executor ray` on real Ray clusters: the same KB as the local executor (a spoken
recording included, so the transcriber actors run the real tiny.en model), on one node and on a
simulated two-node cluster; a driver killed mid-run resumes with no duplicates; the transcriber
options reach the actors; GPUs asked of a cluster without them are refused at once.

One local 2-CPU cluster serves the module (starting one takes seconds). Its raylet is started with
the test plugins importable and its own transcript cache, so every job's workers, including those
of `kb` processes joining it by address, load the hash embedder and never reuse the transcripts the
local executor made."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from kb.cli import cli
from tests.helpers import COURSE, ROOT, TESTS, run_kb

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow

SPOKEN = "Rivers carry rain back to the sea."


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two CPUs, no dashboard; the environment its raylet (and so every worker) starts with."""
    env = {
        "KB_PLUGINS": "kb_test_plugins",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}",
        "XDG_CACHE_HOME": str(tmp_path_factory.mktemp("worker-cache")),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 2**20)
    finally:  # this process's own plugins and cache stay as they were
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    yield SimpleNamespace(address=ray.get_runtime_context().gcs_address, env=env)
    ray.shutdown()


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """The sample course, a PDF that fails, and a spoken recording without captions."""
    if not shutil.which("espeak-ng"):
        pytest.skip("needs espeak-ng to speak the recording")
    course = tmp_path_factory.mktemp("ray") / "course"
    shutil.copytree(COURSE, course)
    # A source that fails on a worker must fail with the same sentence as on the driver.
    (course / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    subprocess.run(["espeak-ng", "-w", str(course / "spoken.wav"), SPOKEN], check=True, timeout=60)
    return course


@pytest.fixture(scope="module")
def local_kb(cluster, course, tmp_path_factory) -> Path:
    """The course as the local executor builds it, with a transcript cache of its own.

    The 79-second lecture's transcript is then handed to the workers' cache (transcribing it again
    would cost seconds and cover nothing new); the spoken WAV's is not, so the actors transcribe it."""
    db = tmp_path_factory.mktemp("local") / "local.db"
    cache = tmp_path_factory.mktemp("local-cache")
    ran = run_kb(
        "ingest",
        str(db),
        str(course),
        "--embedder",
        "hash",
        env_extra={"KB_PLUGINS": "kb_test_plugins", "XDG_CACHE_HOME": str(cache)},
    )
    assert ran.returncode == 1, ran.stderr  # broken.pdf
    lecture = hashlib.sha256((course / "gauging-a-river-lecture.ogg").read_bytes()).hexdigest()
    (transcript,) = (cache / "kb" / "transcripts").glob(f"{lecture}-*.json")
    workers = Path(cluster.env["XDG_CACHE_HOME"]) / "kb" / "transcripts"
    workers.mkdir(parents=True, exist_ok=True)
    shutil.copy(transcript, workers)
    return db


def ingest(*args: str):
    return CliRunner().invoke(cli, ["ingest", *args, "--embedder", "hash", "--json"], catch_exceptions=False)


def snapshot(db) -> dict:
    """What must not depend on the executor: each source's row, and each chunk by (source, ordinal)
    with its locator and vector. The integer ids follow the order sources were written in, and
    transcript_cached says how this run got a transcript, not what the KB holds."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sources = {}
    for uri, *fields, metadata in conn.execute(
        "SELECT uri, kind, title, content_hash, size, mtime, status, error, metadata FROM sources"
    ):
        meta = json.loads(metadata or "{}")
        meta.pop("transcript_cached", None)
        sources[uri] = (*fields, meta)
    chunks = {}
    for uri, ordinal, *rest, vector in conn.execute(
        "SELECT s.uri, c.ordinal, c.text, c.page, c.slide, c.start_s, c.end_s, c.heading, c.anchor, c.link, e.vector "
        "FROM chunks c JOIN sources s ON s.id = c.source_id LEFT JOIN embeddings e ON e.chunk_id = c.id"
    ):
        chunks[(uri, ordinal)] = (tuple(rest), np.frombuffer(vector, dtype=np.float32))
    conn.close()
    return {"sources": sources, "chunks": chunks}


def assert_same_kb(got: dict, expected: dict) -> None:
    assert got["sources"] == expected["sources"]
    assert got["chunks"].keys() == expected["chunks"].keys()
    for key, (fields, vector) in expected["chunks"].items():
        assert got["chunks"][key][0] == fields, key
        np.testing.assert_allclose(got["chunks"][key][1], vector, atol=1e-5, err_msg=str(key))


def moved(snap: dict, old: str, new: str) -> dict:
    """`snap` as it would read for the same files under another folder (URIs and links)."""

    def move(value):
        return value.replace(old, new) if isinstance(value, str) else value

    return {
        "sources": {move(uri): row for uri, row in snap["sources"].items()},
        "chunks": {
            (move(uri), n): (tuple(move(f) for f in fields), vector)
            for (uri, n), (fields, vector) in snap["chunks"].items()
        },
    }


def test_ray_executor_builds_the_same_kb_as_the_local_one(cluster, course, local_kb, hash_embedder, tmp_path):
    on_ray = tmp_path / "ray.db"
    ran = ingest(str(on_ray), str(course), "--executor", "ray")
    assert ran.exit_code == 1, ran.output  # broken.pdf

    expected, got = snapshot(local_kb), snapshot(on_ray)
    assert_same_kb(got, expected)
    status, reason = expected["sources"][(course / "broken.pdf").resolve().as_uri()][5:7]
    assert status == "error" and reason.startswith("corrupt or truncated PDF"), reason
    assert len(expected["chunks"]) > 50
    # The recording was transcribed by a transcriber actor, not found in a cache.
    spoken = (course / "spoken.wav").resolve().as_uri()
    conn = sqlite3.connect(on_ray)
    (metadata,) = conn.execute("SELECT metadata FROM sources WHERE uri = ?", (spoken,)).fetchone()
    conn.close()
    assert json.loads(metadata)["transcript_cached"] is False, metadata
    assert json.loads(metadata)["transcript_origin"] == "model:faster-whisper/tiny.en", metadata
    assert "sea" in got["chunks"][(spoken, 0)][0][0].lower()

    # Run again: the driver finds every source unchanged, as the local executor does.
    ran = ingest(str(on_ray), str(course), "--executor", "ray")
    statuses = {s["uri"]: s["status"] for s in json.loads(ran.stdout)["sources"]}
    assert set(statuses.values()) == {"unchanged", "error"}, statuses


def test_the_transcriber_options_reach_the_actors(cluster, course, hash_embedder, tmp_path):
    missing = tmp_path / "missing.pt"
    ran = ingest(
        str(tmp_path / "kb.db"),
        str(course / "spoken.wav"),
        "--executor",
        "ray",
        "--transcriber",
        "openai-whisper",
        "--whisper-model",
        str(missing),
    )
    assert ran.exit_code == 1, ran.output
    (report,) = json.loads(ran.stdout)["sources"]
    # Only an actor that was handed both options looks for this checkpoint.
    assert report["reason"] == f"--whisper-model {missing}: no such checkpoint file", report


TWO_NODES = """
import sys
from ray.cluster_utils import Cluster

store = 200 * 2**20
head = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": store}
cluster = Cluster(initialize_head=True, head_node_args=head)
cluster.add_node(num_cpus=1, object_store_memory=store)
cluster.wait_for_nodes()
import ray
from kb.cli import cli

try:
    cli(["ingest", *sys.argv[1:], "--executor", "ray", "--ray-address", cluster.address, "--embedder", "hash"])
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_a_two_node_cluster_builds_the_same_kb(cluster, course, local_kb, tmp_path):
    """Ray's simulated cluster: two raylets of one CPU each, in a process of their own (one process
    cannot hold two clusters)."""
    db = tmp_path / "two.db"
    ran = subprocess.run(
        [sys.executable, "-c", TWO_NODES, str(db), str(course)],
        env={**os.environ, **cluster.env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 1, ran.stderr  # broken.pdf
    assert_same_kb(snapshot(db), snapshot(local_kb))


def test_a_killed_driver_resumes_with_no_duplicates(cluster, course, local_kb, tmp_path):
    """SIGKILL the driver once every source is written but one a worker still holds; run again."""
    held = tmp_path / "course"
    shutil.copytree(course, held)
    go = tmp_path / "go"
    # Read once `go` exists (tests/kb_test_plugins.py). Found last (a folder after the others), so
    # that on two CPUs, where one extract task runs at a time beside the two actor pools, the other
    # sources go first.
    (held / "zz").mkdir()
    (held / "zz" / "held.slow").write_text(f"until {go}")
    db = tmp_path / "kb.db"
    args = [sys.executable, "-m", "kb", "ingest", str(db), str(held), "--executor", "ray"]
    args += ["--ray-address", cluster.address, "--embedder", "hash", "--json"]
    env = {**os.environ, **cluster.env}
    expected = snapshot(local_kb)
    others = len(expected["sources"])
    driver = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        written, give_up = 0, time.monotonic() + 300
        while written < others and driver.poll() is None and time.monotonic() < give_up:
            time.sleep(0.1)
            if db.exists():
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)  # read only: the driver writes
                try:
                    (written,) = conn.execute("SELECT COUNT(*) FROM sources").fetchone()
                except sqlite3.OperationalError:
                    written = 0  # the schema is not there yet
                conn.close()
        assert driver.poll() is None, driver.stderr.read()
        assert written == others, "the driver did not write the other sources in time"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(60)

    go.touch()
    ran = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 1, ran.stderr  # broken.pdf
    statuses = {s["uri"].rsplit("/", 1)[-1]: s["status"] for s in json.loads(ran.stdout)["sources"]}
    assert statuses.pop("held.slow") == "ok" and statuses.pop("broken.pdf") == "error", statuses
    assert set(statuses.values()) == {"unchanged"}, statuses

    got = snapshot(db)
    held_uri = (held / "zz" / "held.slow").resolve().as_uri()
    assert got["sources"].pop(held_uri)[5] == "ok"
    got["chunks"] = {k: v for k, v in got["chunks"].items() if k[0] != held_uri}
    assert_same_kb(got, moved(expected, course.as_uri(), held.as_uri()))
    conn = sqlite3.connect(db)
    counts = conn.execute(
        "SELECT (SELECT COUNT(*) FROM sources), (SELECT COUNT(DISTINCT uri) FROM sources),"
        " (SELECT COUNT(*) FROM chunks), (SELECT COUNT(DISTINCT source_id || '/' || ordinal) FROM chunks),"
        " (SELECT COUNT(*) FROM embeddings), (SELECT COUNT(*) FROM chunks_fts)"
    ).fetchone()
    conn.close()
    chunks = len(expected["chunks"]) + 1
    assert counts == (others + 1, others + 1, chunks, chunks, chunks, chunks), counts


def test_executors_in_threads_share_the_cluster(cluster, hash_embedder, tmp_path):
    """kb ingest-many's use: an Ingester per thread, each with its own RayExecutor, datasets running at
    once on one cluster; closing one leaves the others (and a cluster this process joined) running."""
    from kb import KB, Ingester
    from kb.pipeline.ray_executor import RayExecutor

    targets = [COURSE / "field-guide-measuring-rainfall.md", COURSE / "website"]
    results: dict[int, object] = {}

    def run(n: int) -> None:
        executor = RayExecutor()
        try:
            with KB.open(tmp_path / f"{n}.db", create=True) as kb:
                results[n] = Ingester(kb, embedder=hash_embedder, executor=executor).run([str(targets[n])]).totals()
        finally:
            executor.close()

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(t.is_alive() for t in threads), "two datasets at once on two CPUs waited for each other"
    assert results == {0: {"ok": 1, "chunks": 16}, 1: {"ok": 5, "chunks": 26}}, results
    assert ray.is_initialized(), "an executor shut down a cluster it did not start"


def test_a_crawled_site_is_prepared_on_the_workers(cluster, hash_embedder, tmp_path, monkeypatch):
    """Fetched pages travel to the workers with their bytes: the driver fetches and writes, and here it
    could not extract a page if it tried (its HTML connector is broken in this process only)."""
    from test_web import Site

    from connectors.html import HtmlConnector

    def crawl(db: Path, *extra: str):
        ran = ingest(str(db), site.url("/website/course.html"), "--crawl", "-o", "allow_private", "true", *extra)
        assert ran.exit_code == 0, ran.output
        return json.loads(ran.stdout)["sources"]

    with Site(COURSE) as site:
        local = crawl(tmp_path / "local.db")

        def broken(self, source):
            raise AssertionError("the driver extracted a page the workers should have")

        monkeypatch.setattr(HtmlConnector, "extract", broken)
        on_ray = crawl(tmp_path / "ray.db", "--executor", "ray")
    assert len(local) == 4 and {s["status"] for s in local} == {"ok"}, local
    assert sorted((s["uri"], s["status"], s["chunks"]) for s in on_ray) == sorted(
        (s["uri"], s["status"], s["chunks"]) for s in local
    )
    expected, got = snapshot(tmp_path / "local.db"), snapshot(tmp_path / "ray.db")
    assert_same_kb(got, expected)


def test_gpus_asked_of_a_cluster_without_them_fail_at_once(cluster, hash_embedder, tmp_path):
    ran = []
    # An actor waiting for a GPU nobody has waits forever; the thread bounds how long the test can hang.
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
