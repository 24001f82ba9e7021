"""The ingest progress display, read through a real pseudo-terminal, and its plain form in a pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys

from tests.helpers import TESTS, run_kb


def folder_of_sources(tmp_path):
    folder = tmp_path / "course"
    folder.mkdir()
    (folder / "a-notes.md").write_text("# Notes\n\nRain falls on the hills.\n")
    (folder / "b-long-scan.slow").write_text("3")  # a step of 3 s: the display must keep moving through it
    (folder / "c-more.md").write_text("# More\n\n" + "Rivers carry it away. " * 20)
    (folder / "d-short.slow").write_text("0.5")
    return folder


def test_progress_on_a_terminal(tmp_path):
    folder = folder_of_sources(tmp_path)
    main, child = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(TESTS), "KB_PLUGINS": "kb_test_plugins", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb", "ingest", str(tmp_path / "kb.db"), str(folder), "--embedder", "hash"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=child,
        env=env,
    )
    os.close(child)
    screen = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            piece = os.read(main, 4096)
        except OSError:  # the child closed its end
            break
        if not piece:
            break
        screen += piece
    out, _ = proc.communicate(timeout=60)
    os.close(main)
    assert proc.returncode == 0
    text = screen.decode()
    # Discovery comes first, before any file is read.
    assert text.startswith("kb: found 4 files ("), text[:200]
    frames = [f.replace("\x1b[K", "") for f in re.split(r"[\r\n]", text) if f.strip("\x1b[K")]
    slow = [f for f in frames if "2/4" in f and "b-long-scan.slow: reading" in f]
    # While one 3-second step runs, the line is redrawn with the time moving on (not a wall-clock
    # bound: the frames themselves show the display did not sit still for the whole step).
    elapsed = {re.search(r"(\d+:\d\d) elapsed", f).group(1) for f in slow}
    assert len(elapsed) >= 2, slow
    assert all(re.match(r"\[[#-]{20}\] \d/4  \d+:\d\d elapsed, ETA (\?|\d+:\d\d)", f) for f in frames[1:]), frames
    # Once a source has been read, the ETA is a time.
    assert any(re.search(r"[34]/4 .*ETA \d+:\d\d", f) for f in frames), frames
    # The line is cleared at the end: nothing of the bar stays on screen under the report.
    assert text.endswith("\r\x1b[K")
    report = out.decode()
    assert re.search(r"Done in \d+\.\d s: 4 sources: 4 ok; 4 new chunks\.", report), report


def test_progress_in_a_pipe_is_plain_lines(tmp_path):
    folder = folder_of_sources(tmp_path)
    (folder / "d-short.slow").write_text("0.0")  # not the same bytes: not a duplicate
    (folder / "b-long-scan.slow").write_text("0")
    proc = run_kb(
        "ingest",
        str(tmp_path / "kb.db"),
        str(folder),
        "--embedder",
        "hash",
        env_extra={"KB_PLUGINS": "kb_test_plugins"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("kb: found 4 files (")
    assert lines[1:] == [
        "[1/4] ok        a-notes.md  1 chunk",
        "[2/4] ok        b-long-scan.slow  1 chunk",
        "[3/4] ok        c-more.md  1 chunk",
        "[4/4] ok        d-short.slow  1 chunk",
    ]
