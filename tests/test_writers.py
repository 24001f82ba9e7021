"""Finding 6 of issue 17: one writer at a time, said plainly, and a new KB created without a race.

Two `kb ingest` on one KB both did all the work; two creating a new KB at once failed 2 of 4
times with "table sources already exists". The slow source is kb_test_plugins' `.slow` connector
(it sleeps as many seconds as the file says): a deterministic stand-in for a long OCR or transcription.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kb import KB
from kb.locking import Busy, WriterLock
from tests.helpers import TEST_PLUGINS, kb_env, run_kb

BARRIER = """import os, sys, time
from kb.cli import main
start = sys.argv.pop(1)
while not os.path.exists(start):  # every process is imported and ready: the race is on the file alone
    time.sleep(0.001)
sys.argv[0] = "kb"
main()
"""


def _env() -> dict:
    return kb_env({**TEST_PLUGINS, "PYTHONPATH": ""})


def _popen(*args: str, barrier: Path | None = None, stderr: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-c", BARRIER, str(barrier), *args] if barrier else [sys.executable, "-m", "kb", *args]
    sink = stderr.open("w") if stderr else subprocess.PIPE
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, text=True, env=_env())


def _holding_the_lock(log: Path, proc: subprocess.Popen) -> None:
    """Wait until the writer says what it found: it took the lock before looking."""
    while proc.poll() is None:
        if log.exists() and "kb: found" in log.read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"the first writer ended early: {log.read_text()}")


def _said(log: Path, proc: subprocess.Popen, words: str) -> None:
    """Wait until `proc` has written `words` to its stderr log (it may take a while on a busy machine)."""
    while words not in (log.read_text(errors="replace") if log.exists() else ""):
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)


@pytest.mark.kb_tree
def test_a_second_writer_waits_says_so_and_finds_the_work_done(tmp_path):
    folder = tmp_path / "course"
    folder.mkdir()
    (folder / "notes.md").write_text("# Notes\n\nRain gauges measure rainfall.\n")
    release = tmp_path / "release"
    (folder / "long.slow").write_text(f"until {release}")  # read once the test says so
    db = tmp_path / "kb.db"
    assert (
        run_kb("ingest", str(db), str(folder / "notes.md"), "--embedder", "hash", env_extra=TEST_PLUGINS).returncode
        == 0
    )
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _popen("ingest", str(db), str(folder), "--json", stderr=first_log)
    try:
        _holding_the_lock(first_log, first)  # and now reading its slow source, until released
        second = _popen("ingest", str(db), str(folder), "--json", stderr=second_log)
        _said(second_log, second, "waiting for it to finish")
    finally:
        release.touch()
    out, _ = first.communicate(timeout=120)
    waited, _ = second.communicate(timeout=120)
    assert first.returncode == 0, first_log.read_text()
    assert second.returncode == 0, second_log.read_text()
    assert f"kb: another kb process is writing {db}; waiting for it to finish" in second_log.read_text()
    statuses = {Path(s["uri"]).name: s["status"] for s in json.loads(waited)["sources"]}
    assert statuses == {"notes.md": "unchanged", "long.slow": "unchanged"}, statuses  # nothing done twice
    assert {Path(s["uri"]).name: s["status"] for s in json.loads(out)["sources"]}["long.slow"] == "ok"


@pytest.mark.kb_tree
def test_no_wait_fails_at_once_with_one_sentence(tmp_path):
    folder = tmp_path / "course"
    folder.mkdir()
    (folder / "long.slow").write_text("0")
    db = tmp_path / "kb.db"
    assert (
        run_kb("ingest", str(db), str(folder / "long.slow"), "--embedder", "hash", env_extra=TEST_PLUGINS).returncode
        == 0
    )
    release = tmp_path / "release"
    (folder / "long.slow").write_text(f"until {release}")  # changed: the next ingest reads it again, until released
    log = tmp_path / "first.log"
    first = _popen("ingest", str(db), str(folder), stderr=log)
    try:
        _holding_the_lock(log, first)
        for args in (
            ["ingest", str(db), str(folder), "--no-wait"],
            ["remove", str(db), str(folder / "long.slow"), "--no-wait"],
            ["reindex", str(db), "--no-wait"],
            ["sync", str(db), "--no-wait"],
        ):
            proc = run_kb(*args, env_extra=TEST_PLUGINS, timeout=60)
            assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
            assert proc.stderr == (
                f"Error: Another kb process is writing {db}; try again when it is done (or leave out --no-wait).\n"
            ), proc.stderr
        # Readers are never blocked by the writer.
        assert run_kb("search", str(db), "slept", env_extra=TEST_PLUGINS).returncode == 0
    finally:
        release.touch()
        first.communicate(timeout=120)
    assert first.returncode == 0


@pytest.mark.kb_tree
def test_creating_a_new_kb_at_once_from_several_processes_is_race_free(tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nRain gauges measure rainfall with a funnel.\n")
    for round_ in range(3):
        db = tmp_path / f"new-{round_}.db"
        start = tmp_path / f"start-{round_}"
        procs = [_popen("ingest", str(db), str(notes), "--embedder", "hash", barrier=start) for _ in range(4)]
        time.sleep(3)  # all imported and spinning on the barrier
        start.touch()
        results = [p.communicate(timeout=120) for p in procs]
        for proc, (_, err) in zip(procs, results):
            assert proc.returncode == 0, err
            assert "already exists" not in err
        with KB.open(db, readonly=True) as kb:
            assert kb.conn.execute("SELECT count(*) FROM sources").fetchone()[0] == 1
            assert kb.conn.execute("SELECT count(*) FROM chunks").fetchone()[0] == 1


def test_the_lock_excludes_a_second_description_even_in_one_process(tmp_path):
    db = tmp_path / "kb.db"
    with WriterLock.acquire(db):
        try:
            WriterLock.acquire(db, wait=False)
            raise AssertionError("a second writer got the lock")
        except Busy as exc:
            assert "Another kb process is writing" in str(exc)
    WriterLock.acquire(db, wait=False).release()  # free again once released
    assert db.exists() and db.stat().st_size == 0 and not list(tmp_path.glob("kb.db?*"))  # no lock file left
