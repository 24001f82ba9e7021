"""Fixtures and pytest hooks. The plain helpers (paths, run_kb, fetch ...) live in tests/helpers.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import COURSE, KB_TREE_ENV, TEST_PLUGINS, kb_tree, run_kb


def pytest_addoption(parser):
    parser.addoption(
        "--kb-tree",
        metavar="PATH",
        default=None,
        help="run the kb CLI and `kb serve` processes from the kb source tree at PATH (a worktree of an older "
        "commit, to show a test reproduced a bug); only tests marked kb_tree run. Write --kb-tree=PATH: with a "
        "space, pytest takes PATH for its rootdir",
    )


def pytest_configure(config):
    tree = config.getoption("--kb-tree")
    if tree:
        if not (Path(tree) / "kb" / "__init__.py").is_file():
            raise pytest.UsageError(f"--kb-tree {tree} is not a kb source tree (it has no kb/__init__.py).")
        os.environ[KB_TREE_ENV] = str(Path(tree).resolve())


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--kb-tree"):
        return
    skip = pytest.mark.skip(reason="runs kb in this process, so it cannot run against --kb-tree")
    for item in items:
        if "kb_tree" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def hash_embedder():
    """Register the deterministic test embedder through kb's plugin manager for one test."""
    import kb_test_plugins

    from kb.plugins import ensure_plugins_loaded, pm

    ensure_plugins_loaded()
    pm.register(kb_test_plugins, "kb_test_plugins")
    yield "test/hash-embedder"
    pm.unregister(name="kb_test_plugins")


@pytest.fixture
def course_db(tmp_path, hash_embedder) -> Path:
    """The sample course in a real KB file, embedded by the deterministic test embedder."""
    from kb import KB, Ingester

    db = tmp_path / "kb.db"
    if kb_tree():  # written by the kb under test, as the kb processes will read it
        proc = run_kb("ingest", str(db), str(COURSE), "--embedder", "hash", env_extra=TEST_PLUGINS)
        assert proc.returncode == 0, proc.stderr
        return db
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=hash_embedder).run([str(COURSE)])
    return db


@pytest.fixture
def course(tmp_path) -> Path:
    """A private copy of the sample course, safe to modify."""
    target = tmp_path / "course"
    shutil.copytree(COURSE, target)
    return target
