"""The docs that describe the seams stay true: the command reference is the --help text, and the
"Writing a connector" guide's example plugin installs and ingests into a real KB."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kb import KB, Ingester
from tests import docs_cli
from tests.helpers import ROOT, TEST_PLUGINS, kb_env


def test_cli_reference_is_the_help_text():
    stale = docs_cli.drift(docs_cli.DOC.read_text())
    assert stale == [], "docs/cli.md is stale: run `python -m tests.docs_cli --write`"


def test_the_reference_check_sees_drift_and_the_rewrite_mends_it():
    current = docs_cli.DOC.read_text()
    edited = current.replace("Show this message and exit.", "Show this message.", 1)  # the first copy: ask
    edited = edited.replace(docs_cli.block("sync"), "")  # a command with no copy
    edited += "\n## `kb frobnicate`\n\n<!-- help:frobnicate -->\n```\nUsage: kb frobnicate\n```\n"
    edited += "<!-- /help:frobnicate -->\n"
    assert docs_cli.drift(edited) == ["ask", "frobnicate (no such command)", "sync"]
    mended = docs_cli.rendered(edited)
    assert docs_cli.drift(mended) == [] and "frobnicate" not in mended


EXAMPLE = ROOT / "docs" / "examples" / "kb-notebooks"
GUIDE = ROOT / "docs" / "connectors.md"


@pytest.fixture(scope="module")
def notebook_kb(tmp_path_factory):
    """The guide's example plugin installed as its reader would (`pip install -e`, into a throwaway
    virtualenv that sees this one's packages), then a notebook ingested by that venv's `kb`.

    A process of its own: kb finds the plugin through its entry point, which a process reads once."""
    tmp = tmp_path_factory.mktemp("plugin")
    venv, project = tmp / "venv", tmp / "kb-notebooks"
    shutil.copytree(EXAMPLE, project)  # pip writes its egg-info beside the sources: not into the repository
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True
    ).stdout.strip()
    # --system-site-packages, but this virtualenv's packages (kb's dependencies) rather than the base Python's.
    parents = [p for p in sys.path if p.endswith("site-packages")]
    Path(site_packages, "_parent_venv.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in parents)
    )
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
    proc = subprocess.run(
        [*pip, "--no-build-isolation", "--no-index", "-e", str(project)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    db = tmp / "kb.db"
    proc = subprocess.run(
        [python, "-m", "kb", "ingest", str(db), str(project / "rainfall-intensity.ipynb"), "--embedder", "hash"],
        capture_output=True,
        text=True,
        env=kb_env(TEST_PLUGINS),
        cwd=ROOT,  # `-m kb` imports this tree's kb, as run_kb's processes do
        timeout=300,
    )
    return db, proc


def test_the_guide_shows_the_example_plugin_as_it_is():
    guide = GUIDE.read_text()
    for name in ("kb_notebooks.py", "pyproject.toml"):
        assert (EXAMPLE / name).read_text() in guide, f"docs/connectors.md's copy of {name} differs from the file"


def test_without_the_plugin_kb_does_not_read_a_notebook(tmp_path, hash_embedder):
    with KB.open(tmp_path / "kb.db", create=True) as kb:
        (report,) = Ingester(kb, embedder=hash_embedder).run([str(EXAMPLE / "rainfall-intensity.ipynb")]).reports
    assert report.status == "error" and "does not read .ipynb files" in report.reason


def test_the_installed_example_plugin_reads_a_notebook_into_a_real_kb(notebook_kb):
    db, proc = notebook_kb
    assert proc.returncode == 0, proc.stderr
    assert "1 ok" in proc.stdout
    with KB.open(db) as kb:
        (source,) = kb.info()["sources"]
        rows = kb.conn.execute("SELECT text, heading, link FROM chunks ORDER BY ordinal").fetchall()
    assert source["kind"] == "notebook" and source["title"] == "Rainfall intensity"
    by_heading = {heading: (text, link) for text, heading, link in rows}
    text, link = by_heading["Rainfall intensity > From a tipping bucket record"]
    assert "0.2 mm of rain" in text and "tips_per_hour = [6, 17, 3]\n" in text  # the code keeps its lines
    assert link.endswith("rainfall-intensity.ipynb#From-a-tipping-bucket-record")
    assert "one in a hundred chance" in by_heading["Rainfall intensity > Return periods"][0]
