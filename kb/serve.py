"""`kb serve`: Datasette with kb's plugin over KB files, read-only, on 127.0.0.1 by default."""

from __future__ import annotations

import asyncio
import socket
import sys
import webbrowser
from pathlib import Path
from typing import Any

from .errors import KBError
from .filecheck import check_path, in_wal_mode, writable_folder
from .options import LLMOptions
from .store import KB
from .terminal import printable

RESERVED_NAMES = ("v1", "mcp")
"""Paths the gateway answers (datasette_plugins/kb_plugin/gateway.py), so no served file may be named so."""


SHUTDOWN_S = 2
"""Seconds `kb serve` lets requests finish after Ctrl-C; an answer still being written is abandoned
(the process ends; nothing is written by kb serve)."""


def check_files(paths: list[str | Path], notes: list[str] | None = None) -> list[Path]:
    """Every path checked as kb opens a file someone sent: header, size, schema, SQLite's quick check
    and every vector; what the user should know of how a file opened is added to `notes`."""
    checked: list[Path] = []
    for path in dict.fromkeys(Path(p) for p in paths):
        check_path(path)  # first: an unfinished export is named as one, even while still empty
        if path.is_file() and path.stat().st_size == 0:
            raise KBError(f"{path} is empty, not a kb file.")
        with KB.open(path, readonly=True, integrity=True) as kb:
            if kb.model_id is None:
                raise KBError(f"{path} holds no sources yet; add some with `kb ingest {path} SOURCE...`.")
            if notes is not None:
                notes.extend(kb.notes)
        checked.append(path)
    return checked


def build(paths: list[Path], config: dict[str, Any]) -> Any:
    """A Datasette serving `paths` read-only with kb's plugin."""
    from datasette.app import Datasette
    from datasette.plugins import pm

    import datasette_plugins.kb_plugin as plugin

    if not pm.is_registered(plugin):  # installed without its entry point (e.g. run from a checkout)
        pm.register(plugin, "kb")
    # Datasette runs every handle_exception hook, and its default prints a traceback with locals per
    # failed request; kb's (datasette_plugins/kb_plugin/failures.py) answers and logs one line instead.
    if not pm.is_blocked("datasette.handle_exception"):
        pm.set_blocked("datasette.handle_exception")
    # Datasette turns on tracebacks for exceptions in SQL functions (a traceback per refused
    # kb_embed() call); the request answers 400 with SQLite's message either way.
    from .db import sqlite3

    sqlite3.enable_callback_tracebacks(False)
    # A learner's copy never changes while served: immutable, so Datasette counts rows once and locks
    # nothing. A WAL file may be written by `kb ingest` meanwhile: read through mode=ro, never written.
    immutable = [str(p) for p in paths if not in_wal_mode(p) or not writable_folder(p.parent)]
    mutable = [str(p) for p in paths if str(p) not in immutable]
    return Datasette(
        mutable,
        immutables=immutable,
        metadata={"title": "kb", "plugins": {"kb": config}},
        settings={"sql_time_limit_ms": 3000},
    )


def port_is_free(host: str, port: int) -> bool:
    """Whether the server can listen on host:port, bound as uvicorn binds it: with SO_REUSEADDR, so
    the connections of a server just stopped (TIME-WAIT, about a minute) do not count as in use."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def serve(
    paths: list[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    open_browser: bool = False,
    api_key: str | None = None,
    llm: LLMOptions | None = None,
) -> None:
    """Check every file, then serve them until Ctrl-C."""
    import uvicorn
    from datasette.utils import tilde_encode

    llm = (llm or LLMOptions()).check()
    notes: list[str] = []
    files = check_files(paths, notes)
    for note in notes:
        print(printable(f"kb: {note}"), file=sys.stderr, flush=True)
    if not port_is_free(host, port):
        raise KBError(f"Port {port} on {host} is in use; choose another with --port.")
    datasette = build(files, llm.config())  # the ask page reads them back with LLMOptions.from_config
    asyncio.run(datasette.invoke_startup())
    names = [name for name, db in datasette.databases.items() if not db.is_memory]
    hidden = [name for name in names if name in RESERVED_NAMES]
    if hidden:  # Datasette would serve it at /v1 or /mcp, which the gateway answers instead
        raise KBError(f"A file named {hidden[0]}.db would be hidden by kb serve's /{hidden[0]}; rename it.")
    path = f"/-/kb/{tilde_encode(names[0])}" if len(names) == 1 else "/-/kb"
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}{path}"
    print(printable(f"Serving {len(names)} kb file(s) read-only at {url} (Ctrl-C to stop)."), flush=True)
    from datasette_plugins.kb_plugin.gateway import Gateway, is_loopback

    if not is_loopback(host):
        print(printable(f"Anyone who can reach {host}:{port} can browse and ask these files."), file=sys.stderr)
    if is_loopback(host) or api_key:
        print(
            printable(f"OpenAI-compatible API at http://{shown_host}:{port}/v1, MCP at http://{shown_host}:{port}/mcp.")
        )
    else:
        print("kb: /v1 and /mcp are off beyond loopback without --api-key.", file=sys.stderr)
    if open_browser:
        webbrowser.open(url)
    from datasette_plugins.kb_plugin.engine import workers

    workers.limit_blas = True  # this process only serves: BLAS on one thread (see engine.BLAS_THREADS)
    app = Gateway(datasette, datasette.app(), host, f"http://{shown_host}:{port}", api_key)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", workers=1)
    try:
        _server_class()(config).run()
    except KeyboardInterrupt:
        pass  # uvicorn raises the Ctrl-C it caught again once it has stopped
    stop_now()


def _server_class() -> type:
    """uvicorn.Server with kb's shutdown; built on first use, as uvicorn is imported only to serve."""
    import threading

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, which ends the process SHUTDOWN_S after Ctrl-C whatever is still running.

        Not uvicorn's timeout_graceful_shutdown: it cancels the request under way, and uvicorn
        then logs the CancelledError's traceback."""

        _timer: threading.Timer | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if self._timer is None:
                self._timer = threading.Timer(SHUTDOWN_S, stop_now)
                self._timer.daemon = True
                self._timer.start()

    return Server


def stop_now() -> None:
    """End the process once the server has stopped listening. An answer may still be running on the
    ask thread, inside llama.cpp: interpreter shutdown would join that thread (concurrent.futures
    waits for its workers), which took over 60 s once. kb serve writes nothing, so there is
    nothing to finish."""
    import os

    from datasette_plugins.kb_plugin.engine import workers

    workers.shutdown()
    print("kb: stopped.", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(0)
