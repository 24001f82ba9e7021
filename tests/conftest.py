from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
COURSE = ROOT / "corpora" / "hydrology"
TEST_PLUGINS = {"KB_PLUGINS": "kb_test_plugins"}
"""env_extra for run_kb: the subprocess loads the deterministic test embedder."""

sys.path.insert(0, str(TESTS))
# Nothing may reach the network at run time; the real models come from installed packages.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


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
    with KB.open(db, create=True) as kb:
        Ingester(kb, embedder=hash_embedder).run([str(COURSE)])
    return db


@pytest.fixture
def course(tmp_path) -> Path:
    """A private copy of the sample course, safe to modify."""
    target = tmp_path / "course"
    shutil.copytree(COURSE, target)
    return target


def run_kb(*args: str, env_extra: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `kb` command in a subprocess, with the test plugins importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "kb", *args], capture_output=True, text=True, env=env, timeout=timeout, **kwargs
    )


OFFLINE_KB = (
    "import sys\n"
    "def hook(event, args):\n"
    "    if event in ('socket.connect', 'socket.getaddrinfo', 'socket.gethostbyname'):\n"
    "        sys.stderr.write('NETWORK ATTEMPT: %s %r\\n' % (event, args))\n"
    "sys.addaudithook(hook)\n"
    "from kb.cli import cli\n"
    "cli(sys.argv[1:])\n"
)
"""kb's CLI with an audit hook that reports any socket use on stderr as "NETWORK ATTEMPT"."""


def run_kb_offline(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `kb` (with the test plugins) in a network namespace with no interfaces, reporting any socket use.

    unstructured's telemetry switches are cleared from the environment: kb itself must turn them off.
    """
    if not shutil.which("unshare") or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -n` (root or user namespaces) to cut the network")
    env = {**os.environ, "KB_PLUGINS": "kb_test_plugins", "PYTHONPATH": str(TESTS)}
    for name in ("SCARF_NO_ANALYTICS", "DO_NOT_TRACK", "UNSTRUCTURED_DISABLE_NOTICE"):
        env.pop(name, None)
    return subprocess.run(
        ["unshare", "-n", sys.executable, "-c", OFFLINE_KB, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


PEAK_RSS_KB = """import sys
from kb.cli import cli
try:
    cli(sys.argv[1:])
finally:
    status = open("/proc/self/status").read()
    sys.stderr.write("MAXRSS=%s\\n" % status.split("VmHWM:", 1)[1].split()[0])
"""
"""kb's CLI reporting its own peak resident set as it exits. VmHWM, not ru_maxrss: Linux keeps the
high-water mark across fork and exec, so ru_maxrss would count the (large) pytest process too."""


def run_kb_measured(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    """Run `kb` (with the test plugins) in a subprocess; return it and its own peak resident set in KiB."""
    env = {**os.environ, **TEST_PLUGINS, "PYTHONPATH": str(TESTS)}
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_KB, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    return proc, int(proc.stderr.rsplit("MAXRSS=", 1)[1].split()[0])
