"""The seams: kb's public surface is the `kb` package, plugins import only from it, and importing
a small part of kb stays small."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import kb
from tests.helpers import ROOT

# datasette_plugins' imports of kb submodules: an allow-list to shrink (move each name to the `kb`
# surface, or drop it); a new surface adds to it only with a reason. (plugin file, kb submodule)
DATASETTE_ALLOWED = {
    ("kb_plugin/__init__.py", "kb.terminal"),
    ("kb_plugin/engine.py", "kb.answer"),
    ("kb_plugin/engine.py", "kb.errors"),
    ("kb_plugin/engine.py", "kb.search"),
    ("kb_plugin/engine.py", "kb.store"),
    ("kb_plugin/failures.py", "kb.db"),
    ("kb_plugin/failures.py", "kb.errors"),
    ("kb_plugin/failures.py", "kb.terminal"),
    ("kb_plugin/files.py", "kb.originals"),
    ("kb_plugin/pages.py", "kb.answer"),
    ("kb_plugin/pages.py", "kb.errors"),
    ("kb_plugin/pages.py", "kb.injection"),
    ("kb_plugin/pages.py", "kb.llm"),
    ("kb_plugin/sourceview.py", "kb.originals"),
    ("kb_plugin/status.py", "kb.db"),
    ("kb_plugin/status.py", "kb.errors"),
    ("kb_plugin/status.py", "kb.originals"),
    ("kb_plugin/status.py", "kb.plugins"),
    ("kb_plugin/status.py", "kb.search"),
    ("kb_plugin/status.py", "kb.store"),
    ("kb_plugin/status.py", "kb.vectors"),
    # The API surfaces (issue 15), merged after the list was drawn up; to shrink with the rest.
    ("kb_plugin/engine.py", "kb.followup"),
    ("kb_plugin/mcp_http.py", "kb.injection"),
    ("kb_plugin/mcp_http.py", "kb.mcp_server"),
    ("kb_plugin/mcp_http.py", "kb.passages"),
    ("kb_plugin/openai_api.py", "kb.chat"),
    ("kb_plugin/openai_api.py", "kb.errors"),
    ("kb_plugin/openai_api.py", "kb.llm"),
    ("kb_plugin/openai_api.py", "kb.models"),
    ("kb_plugin/openai_api.py", "kb.search"),
}


def kb_imports(folder: Path) -> set[tuple[str, str]]:
    """(file relative to `folder`, module) for every import of a kb module, function-level ones too.

    `from kb import name` counts as kb.name when kb has a submodule of that name and does not
    export it (`from kb import store` is reaching in as much as `import kb.store`).
    """
    found = set()
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(folder).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
                if node.module == "kb":
                    modules += [f"kb.{a.name}" for a in node.names if a.name not in kb.__all__]
            else:
                continue
            found |= {(relative, m) for m in modules if m == "kb" or m.startswith("kb.")}
    return found


def test_all_is_the_public_names():
    """httpx's check: __all__ lists every public name the package has, and nothing else."""
    for name in kb.__all__:
        getattr(kb, name)  # names load lazily: load them all before comparing
    public = {n for n, v in vars(kb).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert sorted(public | {"__version__"}) == sorted(kb.__all__)
    assert len(set(kb.__all__)) == len(kb.__all__)
    assert callable(kb.search) and callable(kb.ingest)  # the functions, though kb.search is also a module


def test_all_is_sorted_has_no_private_name_and_every_name_imports():
    """The rest of httpx's check: __all__ in case-folded order (so a merge shows a new name in its place),
    no private name but __version__, every lazily loaded name exported, and each one importable by
    `from kb import ...` in a fresh interpreter (in this process the modules are loaded already, which
    would hide an import cycle)."""
    names = [n for n in kb.__all__ if n != "__version__"]
    assert names == sorted(names, key=str.casefold)
    assert [n for n in names if n.startswith("_")] == []
    assert set(kb._PUBLIC) == set(names)
    code = (
        "import kb\nfor name in kb.__all__:\n    exec(f'from kb import {name}')\n"
        "from kb import *\nprint(len(kb.__all__))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(len(kb.__all__))]


def test_connectors_import_only_the_kb_package():
    reached_in = sorted(
        f"{file} imports {module}" for file, module in kb_imports(ROOT / "connectors") if module != "kb"
    )
    assert reached_in == []


def test_datasette_plugins_import_no_new_kb_submodule():
    new = sorted(
        f"{file} imports {module}"
        for file, module in kb_imports(ROOT / "datasette_plugins")
        if module != "kb" and (file, module) not in DATASETTE_ALLOWED
    )
    assert new == [], "import it from `kb` (add it to kb's public surface if it belongs there)"


def test_the_boundary_check_sees_reaching_in(tmp_path):
    (tmp_path / "plugin.py").write_text(
        "from kb import SourceError, hookimpl\nimport kb.store\n\ndef f():\n    from kb.chunker import chunk_document\n"
        "    from kb import errors\n"
    )
    assert kb_imports(tmp_path) == {
        ("plugin.py", "kb"),
        ("plugin.py", "kb.store"),
        ("plugin.py", "kb.chunker"),
        ("plugin.py", "kb.errors"),
    }


def test_importing_errors_or_what_a_connector_needs_stays_small():
    """`import kb.errors` loaded 16 kb modules and NumPy before kb/__init__ became lazy."""
    code = (
        "import sys\n"
        "import kb.errors\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kb', 'numpy')))\n"
        "from kb import Document, Section, SectionBuilder, SourceError, SourceFile, hookimpl, deadline\n"
        "print('numpy' in sys.modules, 'kb.store' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['kb', 'kb.errors', 'kb.version']", "False False"]


def test_built_in_plugins_keep_their_contracts():
    """Every built-in connector, fetcher, embedder and LLM backend has what its kb.contracts Protocol names."""
    from kb import plugins
    from kb.contracts import LLM, Connector, Embedder, Fetcher

    def missing(cls: type, protocol: type) -> list[str]:
        members = [*protocol.__annotations__, *(n for n, v in vars(protocol).items() if callable(v) and n[0] != "_")]
        return [m for m in members if not hasattr(cls, m)]

    registered = {
        Connector: set(plugins.connectors().values()),
        Fetcher: set(plugins.fetchers()),
        Embedder: set(plugins.embedders().values()),
        LLM: set(plugins.llms().values()),
    }
    assert all(registered.values())
    gaps = {cls.__name__: missing(cls, protocol) for protocol, classes in registered.items() for cls in classes}
    assert {name: gap for name, gap in gaps.items() if gap} == {}
    # The three the engine constructs without arguments pass the runtime check too.
    for protocol in (Connector, Fetcher, Embedder):
        assert all(isinstance(cls(), protocol) for cls in registered[protocol]), protocol


def test_tests_import_their_helpers_not_conftest():
    """A test module importing conftest loads it a second time, beside pytest's own copy (whose
    fixtures and hooks are the ones that run): shared code lives in tests/helpers.py."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[-1] == "conftest"]
    assert offenders == []
