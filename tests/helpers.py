"""What the tests share that is not a fixture: the sample course's paths, and running the real `kb`
command (in a subprocess, offline, measured) or a Datasette over KB files. Import it as
`from tests.helpers import ...`; the fixtures stay in conftest.py."""

from __future__ import annotations

import importlib
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ROOT = TESTS.parent
COURSE = ROOT / "corpora" / "hydrology"
TEST_PLUGINS = {"KB_PLUGINS": "kb_test_plugins"}
"""env_extra for run_kb: the subprocess loads the deterministic test embedder."""

# The test plugins and stand-ins (kb_test_plugins, hostile_llm, ...) are imported by their plain names,
# here and in the kb processes the tests start (PYTHONPATH): one module, whichever way it is reached.
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
# Nothing may reach the network at run time; the real models come from installed packages.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

KB_TREE_ENV = "KB_TEST_TREE"
"""Where --kb-tree is kept for the whole run (an environment variable, so every module sees it)."""


def kb_tree() -> Path | None:
    """The kb tree the kb processes run from under --kb-tree; None: this tree."""
    tree = os.environ.get(KB_TREE_ENV)
    return Path(tree) if tree else None


def kb_env(extra: dict | None = None, base: dict | None = None) -> dict:
    """The environment for a `kb` process: the test plugins importable, and the --kb-tree's kb first.

    PYTHONSAFEPATH keeps `python -m kb` from importing the kb of the directory the tests run in
    (it would come before PYTHONPATH)."""
    env = dict(os.environ if base is None else base)
    env.update(extra or {})
    tree = kb_tree()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree) if tree else None, str(TESTS), env.get("PYTHONPATH")]))
    if tree:
        env["PYTHONSAFEPATH"] = "1"
    return env


def default_sigint() -> None:
    """For a child a test presses Ctrl-C at: SIGINT as a person's shell gives it. A test run started
    in the background of a non-interactive shell (CI scripts, `cmd &`) inherits SIGINT ignored, and
    so would every child, which then never sees the press (preexec_fn, or before execve)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's finished children. Tests bound the work a command
    does with it, never the wall clock, which a busy machine stretches at will."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_kb(*args: str, env_extra: dict | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `kb` command in a subprocess, with the test plugins importable."""
    env = kb_env(env_extra)
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


def fetch(files, *paths, config=None):
    """GET each path from one Datasette over `files` (built as `kb serve` builds it); {path: response}.

    In this process through Datasette's own client; under --kb-tree from a real `kb serve` of that
    tree on loopback (both answers are httpx responses, read the same way)."""
    if kb_tree():
        return _fetch_served(list(files), paths, config or {})
    import asyncio

    from kb.serve import build

    async def scenario():
        datasette = build(list(files), config or {})
        await datasette.invoke_startup()
        return {path: await datasette.client.get(path) for path in paths}

    return asyncio.run(scenario())


SERVE_OPTIONS = {"llm_url": "--llm-url", "llm_timeout": "--llm-timeout", "fast": "--fast"}
"""build()'s settings as `kb serve` takes them."""


def _fetch_served(files: list, paths, config: dict) -> dict:
    import socket
    import tempfile
    import time

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = []
    for key, value in config.items():
        flag = SERVE_OPTIONS[key]  # a setting with no option here is a test this run cannot make
        options += [flag] if value is True else [] if value is False else [flag, str(value)]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kb", "serve", *map(str, files), "--port", str(port), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=kb_env(TEST_PLUGINS),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"kb serve ended: {log.read()}")
                try:
                    if httpx.get(f"{base}/-/kb.json", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "kb serve did not start in 120 s"
                time.sleep(0.2)
            with httpx.Client(base_url=base, timeout=300) as client:
                got = {}
                for path in paths:
                    response = client.get(path)
                    response.read()
                    got[path] = response
                return got
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@dataclass(frozen=True)
class Ran:
    """What a `kb` command run in this process did, read as a finished process is read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def kb_cli(*args: str, env_extra: dict | None = None, input: str | None = None) -> Ran:
    """Run the `kb` command in this process through click's CliRunner, for tests of what the command says
    and returns (exit code, messages, --json) where no process boundary is under test: as run_kb, without
    starting an interpreter and importing kb again for every call.

    The command sees the plugins a new process would: the built-ins, the entry points and the modules
    named in env_extra's KB_PLUGINS, registered for the call (plugins load once per process, so the
    variable alone would not reach them), and none that a fixture registered in this one. An exception
    the command did not turn into a message fails the test, as its traceback would in a process's stderr.
    """
    from click.testing import CliRunner

    from kb.cli import cli
    from kb.plugins import DEFAULT_PLUGINS, ensure_plugins_loaded, pm

    ensure_plugins_loaded()
    wanted = [n.strip() for n in (env_extra or {}).get("KB_PLUGINS", "").split(",") if n.strip()]
    process = set(DEFAULT_PLUGINS) | {pm.get_name(plugin) for plugin, _ in pm.list_plugin_distinfo()}
    hidden = [(n, p) for n, p in pm.list_name_plugin() if p is not None and n not in process | set(wanted)]
    for name, _ in hidden:
        pm.unregister(name=name)
    added = []
    for name in wanted:
        module = importlib.import_module(name)
        if not pm.is_registered(module):
            pm.register(module, name)
            added.append(name)
    try:
        result = CliRunner(env=env_extra).invoke(cli, list(args), prog_name="kb", input=input)
    finally:
        for name in added:
            pm.unregister(name=name)
        for name, plugin in hidden:
            pm.register(plugin, name)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(list(args), result.exit_code, result.stdout, result.stderr)
