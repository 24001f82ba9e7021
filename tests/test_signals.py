"""Finding 5 of issue 17: Ctrl-C stops `kb ask` within 1 s, `kb serve` within 5 s, and the port is free at once.

These are the only tests here that time anything, because the finding is about time. The issue's
bounds (1 s, 5 s) are printed as measured; what is asserted is a generous limit that still tells
the fixed code from the finding (the answer ran on for 30-114 s; kb serve did not exit in 60 s),
because the suite runs niced on two cores beside model runs and a wall-clock bound that tight
would fail for reasons that are not kb's.
`kb ask` is pressed through a real pseudo-terminal (the terminal sends SIGINT, as for a person)
with the real default model; `kb serve` is interrupted mid-answer with an LLM server that takes
the question and says nothing (tests/hostile_llm.py), so the answer is still under way.
"""

from __future__ import annotations

import http.client
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest
from hostile_llm import StallingLLM

from tests.helpers import COURSE, TEST_PLUGINS, default_sigint, kb_env, run_kb

QUESTION = "How wide is the funnel on the standard UK Met Office rain gauge?"
ASK_BOUND_S = 1.0
ASK_LIMIT_S = 10.0
"""Asserted: kb itself acts within 50 ms (kb/interrupt.py's wake-up) and exits without interpreter
shutdown; 10 s leaves room for a niced process on a busy machine, a third of the finding's 30 s."""
SERVE_BOUND_S = 5.0
SERVE_LIMIT_S = 20.0
"""Asserted: kb serve waits 2 s for requests, then ends; a third of the 60 s the finding saw."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_serve(db: Path, port: int, *extra: str, log: Path) -> subprocess.Popen:
    env = kb_env({**TEST_PLUGINS, "PYTHONPATH": ""})
    with log.open("a") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kb", "serve", str(db), "--port", str(port), *extra],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=default_sigint,
        )
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/kb.json", timeout=5) as response:
                if response.status == 200:
                    return proc
        except OSError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


@pytest.fixture(scope="module")
def served_kb(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("signals") / "kb.db"
    assert run_kb("ingest", str(db), str(COURSE), "--embedder", "hash", env_extra=TEST_PLUGINS).returncode == 0
    return db


@pytest.mark.kb_tree
def test_kb_serve_stops_within_5_s_during_an_answer(served_kb, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with StallingLLM() as llm:
        proc = start_serve(served_kb, port, "--llm-url", llm.url, "--llm-timeout", "120", log=log)
        url = f"http://127.0.0.1:{port}/-/kb/kb.json?{urlencode({'q': QUESTION})}"
        threading.Thread(target=lambda: _get_quietly(url), daemon=True).start()
        deadline = time.monotonic() + 120
        while not llm.requests:  # the answer is under way: the model has the question
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        took = time.monotonic() - started
    print(f"\nkb serve stopped {took:.2f} s after Ctrl-C during an answer (the issue's bound: {SERVE_BOUND_S:g} s)")
    assert took < SERVE_LIMIT_S, log.read_text()
    assert "Traceback" not in log.read_text()


def _get_quietly(url: str) -> None:
    try:
        urllib.request.urlopen(url, timeout=120).read()
    except OSError:
        pass


@pytest.mark.kb_tree
def test_kb_serve_restarts_on_the_same_port_at_once(served_kb, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start_serve(served_kb, port, log=log)
    # A keep-alive connection the server closes as it stops: its side of it waits in TIME-WAIT.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/-/kb.json")
    assert conn.getresponse().read()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    conn.close()
    again = start_serve(served_kb, port, log=log)
    again.send_signal(signal.SIGINT)
    again.wait(timeout=60)
    assert "is in use" not in log.read_text(), log.read_text()


def _interrupt_ask(db: Path, trigger: str, delay: float) -> tuple[float, str, int]:
    """Run `kb ask` on a terminal; press Ctrl-C `delay` s after `trigger` appears; (seconds to exit, output, status)."""
    pid, master = pty.fork()
    if pid == 0:  # the child: on the new terminal, as a person's shell would start it
        default_sigint()
        os.execve(sys.executable, [sys.executable, "-m", "kb", "ask", str(db), QUESTION], kb_env({"PYTHONPATH": ""}))
    output = b""
    pressed = None
    deadline = time.monotonic() + 300
    while True:
        ready, _, _ = select.select([master], [], [], 0.01)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            output += data
        if pressed is None and trigger.encode() in output:
            time.sleep(delay)
            os.write(master, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground process group
            pressed = time.monotonic()
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        assert time.monotonic() < deadline, output.decode(errors="replace")
    if not done:
        _, status = os.waitpid(pid, 0)
    exited = time.monotonic()
    os.close(master)
    assert pressed is not None, output.decode(errors="replace")
    return exited - pressed, output.decode(errors="replace"), os.waitstatus_to_exitcode(status)


@pytest.fixture(scope="module")
def real_kb(tmp_path_factory) -> Path:
    pytest.importorskip("llama_cpp")
    db = tmp_path_factory.mktemp("real") / "kb.db"
    proc = run_kb("ingest", str(db), str(COURSE / "field-guide-measuring-rainfall.md"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return db


@pytest.mark.slow
@pytest.mark.parametrize(
    "phase, trigger, delay",
    [
        ("model load", "checking the evidence", 0.0),
        ("model load, later", "checking the evidence", 0.5),
        ("generation", "writing", 0.3),
    ],
)
@pytest.mark.kb_tree
def test_ctrl_c_stops_kb_ask_within_1_s(real_kb, phase, trigger, delay):
    took, output, status = _interrupt_ask(real_kb, trigger, delay)
    print(f"\nkb ask stopped {took:.2f} s after Ctrl-C during {phase} (the issue's bound: {ASK_BOUND_S:g} s)")
    assert status == 130, output
    assert "kb: interrupted." in output and "Traceback" not in output, output
    assert took < ASK_LIMIT_S, output
