"""Stages 4-6 of ingest on a Ray cluster (`kb ingest --executor ray`); the driver keeps stages 1-3 and 7.

The driver plans, reads and hashes each source (so unchanged, renamed and duplicate sources end
there, as on a laptop) and writes every Prepared record that comes back with the one writer
(kb/pipeline/write.py), in whatever order they arrive. Workers get the source's path, never its
bytes: they read the file again and refuse it if its hash no longer matches what the driver planned.
Each worker loads the embedder once, by model id, through its own plugin manager (KB_PLUGINS works
there as anywhere), and never opens the KB: SQLite has one writer, and WAL does not work over NFS.

Ray is the optional extra `coursekb[ray]`; only `--executor ray` imports this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from ..chunker import ChunkingSettings
from ..deadlines import SourceTimeout
from ..errors import KBError, SourceError, exhausted
from ..types import Limits
from .chunk import Prepared
from .plan import Planned
from .prepare import Failed, PrepareSettings, prepare
from .read import Content, read_file

# Ray reads these when it is imported and when a cluster starts: no usage reports leave the machine.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs besides the source, sent once per run (the embedder by id, not as an object)."""

    embedder: str
    chunking: ChunkingSettings
    limits: Limits
    options: dict[str, Any]


@lru_cache(maxsize=4)
def _embedder(model_id: str) -> Any:
    # One load per worker process: Ray reuses its workers for the tasks of a run.
    from ..plugins import get_embedder

    return get_embedder(model_id)


def prepare_on_worker(planned: Planned, content_hash: str, settings: WorkerSettings) -> Prepared | Failed:
    """Read the source from its path, check it is what the driver hashed, then extract, chunk and embed it."""
    try:
        content = read_file(planned.connector, planned.path, settings.limits)
        if content.content_hash != content_hash:
            raise SourceError("changed while it was being ingested; run the ingest again to take the new version")
        prepare_settings = PrepareSettings(
            _embedder(settings.embedder), settings.chunking, settings.limits, settings.options
        )
        return prepare(planned, content, prepare_settings)
    except (SourceError, SourceTimeout) as exc:
        return Failed(str(exc))
    except (MemoryError, RecursionError) as exc:
        return Failed(exhausted(exc))


class RayExecutor:
    """Sends sources to Ray workers and hands back each prepared one as it arrives.

    Made before the KB is opened (so a cluster that cannot serve the run leaves no new file behind),
    then `bind()`-ed to the run's settings, which the KB records."""

    def __init__(self, *, address: str | None = None, gpus: float = 0.0):
        try:
            import ray
        except ImportError as exc:
            raise KBError("--executor ray needs Ray: pip install 'coursekb[ray]'.") from exc
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            try:
                # No dashboard: it would listen on a port and start more processes nobody asked for.
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            except Exception as exc:  # no cluster there, a ray:// address without ray[client], ...
                where = f" at {address}" if address else ""
                raise KBError(f"Could not reach a Ray cluster{where} ({exc}).") from exc
            self._started = True
        if gpus:
            # A task asking for a GPU no node has waits forever; say so at once instead.
            available = ray.cluster_resources().get("GPU", 0)
            if available < gpus:
                self.close()
                raise KBError(
                    f"The Ray cluster has {available:g} GPUs, fewer than the {gpus:g} each source asks for "
                    "(--ray-gpus); leave the option out or add GPU workers."
                )
        self._task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=1)(prepare_on_worker)
        self._settings: Any = None
        self._running: dict[Any, Any] = {}
        # Enough to keep every CPU busy, few enough that finished sources do not pile up unwritten.
        self.window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))

    def bind(self, settings: WorkerSettings) -> None:
        """The settings every source of the run is prepared with, sent to the cluster once."""
        self._settings = self._ray.put(settings)

    def submit(self, planned: Planned, content: Content, key: Any) -> None:
        """Start preparing `planned` on a worker; `key` comes back with its result."""
        ref = self._task.remote(replace(planned, data=None), content.content_hash, self._settings)
        self._running[ref] = key

    @property
    def running(self) -> int:
        return len(self._running)

    def finished(self, *, wait: bool) -> Iterator[tuple[Any, Prepared | Failed]]:
        """(key, result) of the sources finished so far; with `wait`, at least one unless none runs."""
        if not self._running:
            return
        ready, _ = self._ray.wait(list(self._running), num_returns=1, timeout=None if wait else 0)
        if ready:
            # Take every other finished one too, without waiting for more.
            more, _ = self._ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        for ref in ready:
            key = self._running.pop(ref)
            try:
                result = self._ray.get(ref)
            except self._ray.exceptions.RayError as exc:
                # A worker that died (out of memory, killed) fails its source, not the run.
                result = Failed(f"the Ray worker failed ({type(exc).__name__})")
            yield key, result

    def close(self) -> None:
        """Stop the cluster this executor started (one it joined keeps running)."""
        if self._started:
            self._ray.shutdown()
            self._started = False
