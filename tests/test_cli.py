"""The command line: help with examples, public surface, errors (docs/cli.md's copy of the help: test_docs.py)."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

import kb
from kb.cli import cli
from tests.helpers import ROOT, TEST_PLUGINS, default_sigint, kb_cli

COMMANDS = sorted(cli.commands)


def help_text(command: str) -> str:
    result = CliRunner().invoke(cli, [command, "--help"], prog_name="kb")
    assert result.exit_code == 0
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    text = help_text(command)
    assert "Example" in text and f"kb {command}" in text


def test_public_surface():
    for name in kb.__all__:
        assert hasattr(kb, name), name
    assert {"KB", "Document", "Section", "Locator", "Chunk", "Hit", "ingest", "search"} <= set(kb.__all__)


def test_errors_are_one_sentence_without_traceback(tmp_path):
    proc = kb_cli("search", str(tmp_path / "missing.db"), "rain")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    assert "does not exist" in proc.stderr
    assert not (tmp_path / "missing.db").exists()


def test_a_mistyped_path_creates_no_kb_and_suggests_the_name(tmp_path):
    (tmp_path / "lecture-notes.pdf").write_bytes(b"%PDF-1.4")
    db = tmp_path / "kb.db"
    proc = kb_cli("ingest", str(db), str(tmp_path / "lecture-note.pdf"), "--embedder", "hash", env_extra=TEST_PLUGINS)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "was not created" in proc.stderr and "did you mean" in proc.stderr and "lecture-notes.pdf" in proc.stderr
    assert not db.exists()


def test_info_search_and_ask_on_an_empty_kb_say_it_is_empty(tmp_path):
    db = tmp_path / "kb.db"
    (tmp_path / "empty").mkdir()
    proc = kb_cli("ingest", str(db), str(tmp_path / "empty"), "--embedder", "hash", env_extra=TEST_PLUGINS)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    info = kb_cli("info", str(db), env_extra=TEST_PLUGINS)
    assert info.returncode == 0, info.stderr
    assert "test/hash-embedder" in info.stdout and "0 sources" in info.stdout and "The KB is empty" in info.stdout
    for command in ("search", "ask"):
        proc = kb_cli(command, str(db), "what is baseflow?", env_extra=TEST_PLUGINS)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert "is empty" in proc.stderr and "kb ingest" in proc.stderr


def test_info_does_not_import_the_model(tmp_path):
    """Commands that do not embed stay off sentence-transformers' 8-second import."""
    db = tmp_path / "kb.db"
    kb_cli(
        "ingest",
        str(db),
        str(ROOT / "corpora" / "hydrology" / "glossary-web"),
        "--embedder",
        "hash",
        env_extra=TEST_PLUGINS,
    )
    code = (
        "import sys; from kb.cli import cli; "
        "cli(['info', sys.argv[1]], standalone_mode=False); "
        "assert 'sentence_transformers' not in sys.modules and 'torch' not in sys.modules, 'heavy import'"
    )
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", code, str(db)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests"), "KB_PLUGINS": "kb_test_plugins"},
    )
    assert proc.returncode == 0, proc.stderr


def test_ingest_into_a_missing_folder_is_one_sentence(tmp_path):
    proc = kb_cli("ingest", str(tmp_path / "no" / "such" / "kb.db"), str(ROOT / "corpora" / "hydrology"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_interrupted_ingest_says_what_was_saved(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(300):
        (folder / f"n{i:03d}.md").write_text(f"# Note {i}\n\n" + "Words about rain and rivers. " * 50)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "KB_PLUGINS": "kb_test_plugins"}
    db = tmp_path / "kb.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kb", "ingest", str(db), str(folder), "--embedder", "hash"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 60
    while not (db.exists() and db.stat().st_size > 200_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted after" in err and "Traceback" not in err
