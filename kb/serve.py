"""`kb serve`: Datasette with kb's plugin over KB files, read-only, on 127.0.0.1 by default."""

from __future__ import annotations

import asyncio
import socket
import sys
import webbrowser
from pathlib import Path
from typing import Any

from .errors import KBError
from .store import KB

LLM_KEYS = ("model", "llm_url", "llm_model", "n_ctx", "threads", "llm_timeout", "fast", "judge")
"""The `kb ask` options the ask page passes to kb's answer engine (the plugin's configuration)."""


def check_files(paths: list[str | Path]) -> list[Path]:
    """Every path checked as kb opens a file someone sent: header, size, schema and SQLite's quick check."""
    checked: list[Path] = []
    for path in dict.fromkeys(Path(p) for p in paths):
        if path.is_file() and path.stat().st_size == 0:
            raise KBError(f"{path} is empty, not a kb file.")
        with KB.open(path, readonly=True, integrity=True) as kb:
            if kb.model_id is None:
                raise KBError(f"{path} holds no sources yet; add some with `kb ingest {path} SOURCE...`.")
        checked.append(path)
    return checked


def in_wal_mode(path: Path) -> bool:
    """True when the file's header says WAL (a teacher's working KB); export writes rollback-journal files."""
    with path.open("rb") as handle:
        header = handle.read(20)
    return len(header) == 20 and header[18] == 2


def build(paths: list[Path], config: dict[str, Any]) -> Any:
    """A Datasette serving `paths` read-only with kb's plugin."""
    from datasette.app import Datasette
    from datasette.plugins import pm

    import datasette_plugins.kb_plugin as plugin

    if not pm.is_registered(plugin):  # installed without its entry point (e.g. run from a checkout)
        pm.register(plugin, "kb")
    # A learner's copy never changes while served: immutable, so Datasette counts rows once and locks
    # nothing. A WAL file may be written by `kb ingest` meanwhile: read through mode=ro, never written.
    immutable = [str(p) for p in paths if not in_wal_mode(p)]
    mutable = [str(p) for p in paths if in_wal_mode(p)]
    return Datasette(
        mutable,
        immutables=immutable,
        metadata={"title": "kb", "plugins": {"kb": config}},
        settings={"sql_time_limit_ms": 3000},
    )


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def serve(
    paths: list[str], *, host: str = "127.0.0.1", port: int = 8001, open_browser: bool = False, **llm: Any
) -> None:
    """Check every file, then serve them until Ctrl-C."""
    import uvicorn
    from datasette.utils import tilde_encode

    if llm.get("model") and llm.get("llm_url"):
        raise KBError("Give either --model or --llm-url, not both.")
    files = check_files(paths)
    if not port_is_free(host, port):
        raise KBError(f"Port {port} on {host} is in use; choose another with --port.")
    config = {k: v for k, v in llm.items() if k in LLM_KEYS and v is not None}
    datasette = build(files, config)
    asyncio.run(datasette.invoke_startup())
    names = [name for name, db in datasette.databases.items() if not db.is_memory]
    path = f"/-/kb/{tilde_encode(names[0])}" if len(names) == 1 else "/-/kb"
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}{path}"
    print(f"Serving {len(names)} kb file(s) read-only at {url} (Ctrl-C to stop).", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Anyone who can reach {host}:{port} can browse and ask these files.", file=sys.stderr, flush=True)
    if open_browser:
        webbrowser.open(url)
    uvicorn.run(datasette.app(), host=host, port=port, log_level="warning", lifespan="on", workers=1)
