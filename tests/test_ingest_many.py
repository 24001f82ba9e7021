"""`kb ingest-many`: each course of a TOML manifest into its own KB, the same KB `kb ingest` builds;
a bad course fails alone, a malformed manifest is one sentence, a second run finds everything
unchanged, and (slow) courses run from threads on a local Ray cluster build the same KBs and leave
that cluster running."""

from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest

from kb.locking import WriterLock
from tests.helpers import COURSE, ROOT, TEST_PLUGINS, TESTS, kb_cli

# Two courses cut from the sample course: web pages and a guide (one setting of their own), a PDF and slides.
RAINFALL = ("field-guide-measuring-rainfall.md", "website")
SNOW = ("hydrology-lecture-notes.pdf", "snow-and-ice-lecture.pptx")

MANIFEST = f"""
[defaults]
embedder = "hash"

[[course]]
name = "rainfall"
db = "out/rainfall.db"
sources = [{", ".join(f'"{COURSE / s}"' for s in RAINFALL)}]
exclude = "staff-*"

[[course]]
db = "out/snow.db"
sources = [{", ".join(f'"{COURSE / s}"' for s in SNOW)}]
"""


def run(*args: str):
    return kb_cli(*args, env_extra=TEST_PLUGINS)


def snapshot(db) -> dict:
    """Each source's row and each chunk (text, locator, vector) by (source, ordinal)."""
    conn = sqlite3.connect(db)
    sources = {
        row[0]: row[1:]
        for row in conn.execute("SELECT uri, kind, title, content_hash, size, mtime, status, error FROM sources")
    }
    chunks = {
        (uri, ordinal): (tuple(rest), vector)
        for uri, ordinal, *rest, vector in conn.execute(
            "SELECT s.uri, c.ordinal, c.text, c.page, c.slide, c.heading, c.anchor, e.vector "
            "FROM chunks c JOIN sources s ON s.id = c.source_id JOIN embeddings e ON e.chunk_id = c.id"
        )
    }
    conn.close()
    return {"sources": sources, "chunks": chunks}


def assert_same_kb(got, expected) -> None:
    got, expected = snapshot(got), snapshot(expected)
    assert got["sources"] == expected["sources"]
    assert got["chunks"].keys() == expected["chunks"].keys()
    for key, (fields, vector) in expected["chunks"].items():
        assert got["chunks"][key][0] == fields, key
        np.testing.assert_allclose(np.frombuffer(got["chunks"][key][1], np.float32), np.frombuffer(vector, np.float32))


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "courses.toml"
    path.write_text(MANIFEST, encoding="utf-8")
    return path


def test_each_course_is_the_kb_kb_ingest_builds(manifest, tmp_path):
    ran = run("ingest-many", str(manifest), "--json")
    assert ran.returncode == 0, ran.stderr
    courses = json.loads(ran.stdout)
    assert [c["course"] for c in courses] == ["rainfall", "snow"]  # a name defaults to the db's stem
    assert all(c["status"] == "ok" and c["sources"]["ok"] >= 2 and c["chunks"] > 0 for c in courses), courses
    # The db paths are read from the manifest's folder.
    assert courses[0]["db"] == str(tmp_path / "out" / "rainfall.db")

    alone = tmp_path / "alone"
    alone.mkdir()
    ran = run(
        "ingest",
        str(alone / "rainfall.db"),
        *(str(COURSE / s) for s in RAINFALL),
        "--exclude",
        "staff-*",
        "--embedder",
        "hash",
    )
    assert ran.returncode == 0, ran.stderr
    ran = run("ingest", str(alone / "snow.db"), *(str(COURSE / s) for s in SNOW), "--embedder", "hash")
    assert ran.returncode == 0, ran.stderr
    assert_same_kb(tmp_path / "out" / "rainfall.db", alone / "rainfall.db")
    assert_same_kb(tmp_path / "out" / "snow.db", alone / "snow.db")
    assert not any("staff-notes" in uri for uri in snapshot(alone / "rainfall.db")["sources"])


def test_a_second_run_finds_every_source_unchanged(manifest):
    assert run("ingest-many", str(manifest)).returncode == 0
    ran = run("ingest-many", str(manifest))
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("ok     rainfall") and "0 ok, 5 unchanged; 0 new chunks" in lines[0], lines
    assert lines[1].startswith("ok     snow") and "0 ok, 2 unchanged; 0 new chunks" in lines[1], lines
    assert lines[-1].startswith("Done in ") and lines[-1].endswith(": 2 courses, 2 ok, 0 failed."), lines
    assert "[2/2] snow: ok" in ran.stderr


def test_a_course_that_fails_does_not_stop_the_others(tmp_path):
    locked = tmp_path / "locked.db"
    good = COURSE / "field-guide-measuring-rainfall.md"
    (tmp_path / "manifest.toml").write_text(
        f"""
[defaults]
embedder = "hash"
[[course]]
name = "missing folder"
db = "missing.db"
sources = ["no-such-folder"]
[[course]]
name = "typo"
db = "typo.db"
sources = ["{good}"]
max-mbs = 3
[[course]]
name = "no sources"
db = "empty.db"
[[course]]
name = "same file"
db = "missing.db"
sources = ["{good}"]
[[course]]
name = "locked"
db = "{locked}"
sources = ["{good}"]
[[course]]
name = "good"
db = "good.db"
sources = ["{good}", "{tmp_path / "gone.md"}"]
[[course]]
name = "fine"
db = "fine.db"
sources = ["{good}"]
max-mb = 5
""",
        encoding="utf-8",
    )
    with WriterLock.acquire(locked):  # another kb process is writing it
        ran = run("ingest-many", str(tmp_path / "manifest.toml"), "--no-wait", "--json")
    assert ran.returncode == 1
    courses = {c["course"]: c for c in json.loads(ran.stdout)}
    reasons = {name: c["reason"] for name, c in courses.items()}
    assert (
        reasons["missing folder"].startswith("Nothing to ingest, so ") and "no-such-folder" in reasons["missing folder"]
    )
    assert reasons["typo"].startswith("No setting named 'max-mbs'; the settings are: ") and "max-mb" in reasons["typo"]
    assert reasons["no sources"] == "The course 'no sources' needs sources: a list of files, folders or URLs."
    assert "writes the same file as the course 'missing folder'" in reasons["same file"]
    assert reasons["locked"].startswith("Another kb process is writing ") and "--no-wait" in reasons["locked"]
    for name, reason in reasons.items():
        if name not in ("good", "fine"):
            assert courses[name]["status"] == "error" and len(reason.splitlines()) == 1 and reason.endswith("."), name
    # A course whose run had a failing source is reported failed, with that source; the others stand.
    assert courses["good"]["status"] == "error" and courses["good"]["reason"] is None
    assert courses["good"]["sources"] == {"ok": 1, "error": 1} and courses["good"]["chunks"] > 0
    assert [e["uri"].rsplit("/", 1)[-1] for e in courses["good"]["errors"]] == ["gone.md"]
    assert courses["fine"]["status"] == "ok" and courses["fine"]["sources"] == {"ok": 1}
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "typo.db").exists()
    assert "Traceback" not in ran.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ("[[course]\ndb = 'a.db'\n", "is not valid TOML: "),
        ("[[courses]]\ndb = 'a.db'\n", "has an unknown top-level key 'courses': it holds a [defaults] table"),
        ("[defaults]\nembedder = 'hash'\n", "lists no courses: add a [[course]] table with db and sources."),
        ("[defaults]\ndb = 'a.db'\n[[course]]\ndb = 'b.db'\n", "[defaults] cannot set 'db'"),
        ("course = 3\n", "lists no courses"),
    ],
)
def test_a_malformed_manifest_is_one_sentence(tmp_path, text, message):
    path = tmp_path / "courses.toml"
    path.write_text(text, encoding="utf-8")
    ran = run("ingest-many", str(path))
    assert ran.returncode == 1
    error = ran.stderr.strip()
    assert error.startswith("Error: The manifest ") and message in error and len(error.splitlines()) == 1, error
    if "TOML" in message:
        assert "line 1" in error, error  # the place of the mistake
    assert list(tmp_path.iterdir()) == [path]


def test_jobs_and_ray_options_need_the_ray_executor(manifest):
    for args in (["--jobs", "2"], ["--ray-address", "auto"]):
        ran = run("ingest-many", str(manifest), *args)
        assert ran.returncode == 2 and "need" in ran.stderr and "--executor ray" in ran.stderr, ran.stderr


@pytest.mark.slow
def test_on_a_local_ray_cluster_each_course_is_the_same_kb(manifest, tmp_path):
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address="local",  # a cluster of its own, even where another was started with `ray start`
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"KB_PLUGINS": "kb_test_plugins", "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}"}},
    )
    try:
        ran = run("ingest-many", str(manifest), "--executor", "ray", "--json")
        assert ran.returncode == 0, ran.stderr
        assert ray.is_initialized(), "ingest-many shut down a cluster it did not start"
    finally:
        ray.shutdown()
    assert [c["status"] for c in json.loads(ran.stdout)] == ["ok", "ok"]
    local = tmp_path / "local.toml"
    local.write_text(MANIFEST.replace('"out/', '"local/'), encoding="utf-8")
    assert run("ingest-many", str(local)).returncode == 0
    for name in ("rainfall", "snow"):
        assert_same_kb(tmp_path / "out" / f"{name}.db", tmp_path / "local" / f"{name}.db")
