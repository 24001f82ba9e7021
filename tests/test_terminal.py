"""Finding 2 of issue 17: everything kb prints is printable, in a real terminal and redirected.

File names, titles, headings and error messages are text someone else chose. The tests run the
real `kb` on a pseudo-terminal (so the live progress display and colours are on, as for a person)
and redirected to a file, and look at the bytes that reached the terminal.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from kb.terminal import printable
from tests.helpers import TEST_PLUGINS, kb_env, run_kb

HOSTILE_NAMES = {
    "clear": "\x1b[2Jclear.md",  # CSI: clear the screen
    "title": "\x1b]0;pwned\x07title.md",  # OSC 0: set the window title
    "clipboard": "\x1b]52;c;cHduZWQ=\x07clip.md",  # OSC 52: write the clipboard
    "forged": "notes.md\nok        forged.md      99 chunks.md",  # a newline forges a report line
    "c1": "\x9b2Jc1.md",  # the 8-bit CSI
    "bidi": "\u202egnp.md",  # shown reversed: "md.png"
    "cr": "x\rok.md",
}
OWN_SEQUENCES = ("\r\x1b[K", "\x1b[K")
"""The escape sequences kb itself writes: the live progress line redraws in place."""


def run_in_pty(args: list[str], env_extra: dict | None = None, timeout: float = 300) -> str:
    """Run `kb ARGS` with stdin, stdout and stderr on a new pseudo-terminal (120 columns); its output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = kb_env({**TEST_PLUGINS, **(env_extra or {}), "TERM": "xterm"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return b"".join(chunks).decode("utf-8", "replace")


def assert_printable(output: str) -> None:
    """Nothing in `output` but text and kb's own redraw sequence; no bidi control; no forged line."""
    rest = output
    for own in OWN_SEQUENCES:
        rest = rest.replace(own, "")
    rest = rest.replace("\r\n", "\n")  # the terminal's own line discipline
    for bad in ("\x1b", "\x07", "\x9b", "\u202e", "\r"):
        assert bad not in rest, (repr(bad), rest)
    assert not any(line.lstrip().startswith("ok        forged.md") for line in rest.splitlines()), rest


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    folder = tmp_path / "course"
    folder.mkdir()
    for key, name in HOSTILE_NAMES.items():
        (folder / name).write_text(f"# Rain \u202eevil\x1b]0;x\x07 {key}\n\nRain gauges measure rainfall ({key}).\n")
    return folder


def test_printable_shows_controls_escaped_and_keeps_text():
    assert printable("Pluie à Genève — 降水 ☔") == "Pluie à Genève — 降水 ☔"
    assert printable("C:\\course\\notes.pdf") == "C:\\course\\notes.pdf"
    assert printable("\x1b[2Ja\x07") == "\\x1b[2Ja\\x07"
    assert printable("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert printable("a\nb", newlines=True) == "a\nb"
    assert printable("\x9b2J \u202egnp \u2028 \u200b") == "\\x9b2J \\u202egnp \\u2028 \\u200b"


@pytest.mark.kb_tree
def test_ingest_and_info_in_a_terminal_print_names_escaped(hostile_folder, tmp_path):
    db = tmp_path / "kb.db"
    output = run_in_pty(["ingest", str(db), str(hostile_folder), "--embedder", "hash"])
    assert "Done in" in output, output
    assert_printable(output)
    assert "\\x1b[2Jclear.md" in output and "\\x1b]52;c;cHduZWQ=\\x07clip.md" in output
    assert "notes.md\\nok" in output and "\\u202egnp.md" in output
    info = run_in_pty(["info", str(db)])
    assert "\\x1b]0;pwned\\x07title.md" in info, info
    assert_printable(info)
    # Redirected to a file (a log, a pipe): the same escapes, not the raw bytes.
    redirected = run_kb("info", str(db), env_extra=TEST_PLUGINS)
    assert redirected.returncode == 0
    assert_printable(redirected.stdout + redirected.stderr)
    search = run_in_pty(["search", str(db), "rain gauges"])
    assert_printable(search)


@pytest.mark.kb_tree
def test_errors_and_json_print_names_escaped(tmp_path):
    bad = tmp_path / "\x1b]0;pwned\x07.db"
    bad.write_bytes(b"not sqlite at all, just text")
    output = run_in_pty(["search", str(bad), "rain"])
    assert "Error:" in output and "\\x1b]0;pwned\\x07.db" in output, output
    assert_printable(output)
    # An error click itself reports (the path does not exist) quotes the name too.
    missing = run_in_pty(["sync", str(tmp_path / "\x1b[2Jgone.db")])
    assert "Error" in missing and "\\x1b[2Jgone.db" in missing, missing
    assert_printable(missing)


@pytest.mark.kb_tree
def test_json_output_escapes_what_json_allows_raw(hostile_folder, tmp_path):
    db = tmp_path / "kb.db"
    assert run_kb("ingest", str(db), str(hostile_folder), "--embedder", "hash", env_extra=TEST_PLUGINS).returncode == 0
    proc = run_kb("info", str(db), "--json", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0
    assert_printable(proc.stdout)
    assert "\\u202e" in proc.stdout  # a bidi override in a title, written as a JSON escape
    import json

    assert any("\u202e" in s["title"] for s in json.loads(proc.stdout)["sources"])  # the data itself is intact
