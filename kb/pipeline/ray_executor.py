"""Stages 4-6 of ingest on a Ray cluster, through Ray Data (`kb ingest --executor ray`).

The driver plans, reads and hashes each source (so unchanged, renamed and duplicate sources end
there, as on a laptop) and keeps the one writer (kb/pipeline/write.py). The sources left to prepare
become the rows of one Ray Data dataset (kb/pipeline/ray_stages.py): extract and chunk as tasks,
recordings through an actor pool that keeps the speech model loaded, the chunks through an actor
pool that keeps the embedder loaded, and each finished source streams back to the driver, which
writes it as it arrives, in whatever order. Rows carry paths and hashes, never a file's bytes: workers
read each file again and refuse it if it no longer matches the hash the driver planned (a web page the
driver fetched travels with its bytes, within the size limit; a downloaded video is prepared on the
driver, kb/ingest.py). Workers never open the KB (SQLite has one writer, and WAL does not work
over a network file system).

A dataset is built from a finished list of rows: Ray Data has no source the driver could keep
appending to while it runs. So the driver plans first and then runs the dataset: one per run, or
one per WINDOW sources for a larger run (that bounds what the driver holds: the planned rows, a
kilobyte or so each; the Prepared records stream through and are written one at a time). A second
copy of content still being prepared also runs the dataset early, so that the copy is then found
in the KB as a duplicate, as on a laptop.

Several executors may run at once from threads of one driver process (`kb ingest-many`), each for
its own Ingester: they share the process's connection to one cluster. A cluster an executor
started stays up until the last executor using it closes; one this process joined keeps running.

Ray is the optional extra `coursekb[ray]`; only `--executor ray` imports this module.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import KBError
from .chunk import Prepared
from .plan import Planned
from .prepare import Failed
from .ray_stages import Embedder, Transcriber, WorkerSettings, extract_and_chunk, result, row
from .read import Content

__all__ = ["RayExecutor", "WorkerSettings"]

# Ray reads these when it is imported and when a cluster starts: no usage reports leave the machine.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

WINDOW = 10_000
"""Sources planned before a dataset runs over them (most runs are one dataset)."""

RETRIES = 2
"""Tries more a source gets when its worker dies (out of memory, a parser's crash): a lost node costs
nothing, while a file that kills every worker fails alone. Ray's default for actors is to retry for
ever, so one such file would hang the run. (Set on every stage, these also keep Ray Data from fusing
the extract tasks into the embedder actors, which would leave extraction to that one small pool.)"""

MAX_BLOCKS = 2_000
"""Blocks the dataset's input is cut into: one source each up to here, so a long recording or a large
PDF holds up no other source; beyond it, Ray's per-block overhead would outweigh that."""

_cluster = threading.Lock()  # guards the process's one connection to a cluster, and who made it
_users = 0
_ours = False  # whether an executor made that connection (then the last one to close ends it)
_datasets = 0  # datasets running now, from any executor of this process


class RayExecutor:
    """Prepares sources on a Ray cluster through Ray Data and hands back each one as it arrives.

    Made before the KB is opened (so a cluster that cannot serve the run leaves no new file behind),
    then `bind()`-ed to the run's settings, which the KB records."""

    window = WINDOW

    def __init__(self, *, address: str | None = None, gpus: float = 0.0):
        try:
            import ray
            import ray.data
        except ImportError as exc:
            raise KBError("--executor ray needs Ray: pip install 'coursekb[ray]'.") from exc
        self._ray = ray
        self.gpus = gpus
        self._open = False
        _join(ray, address)
        self._open = True
        if gpus:
            # An actor asking for a GPU no node has waits forever; say so at once instead.
            available = ray.cluster_resources().get("GPU", 0)
            if available < gpus:
                self.close()
                raise KBError(
                    f"The Ray cluster has {available:g} GPUs, fewer than the {gpus:g} each transcriber and "
                    "embedder asks for (--ray-gpus); leave the option out or add GPU workers."
                )
        self._settings: WorkerSettings | None = None
        self._pending: list[dict[str, Any]] = []  # rows planned, waiting for the next dataset
        self._keys: dict[int, Any] = {}  # every source submitted and not yet handed back, by row key
        self._next = 0

    def bind(self, settings: WorkerSettings) -> None:
        """The settings every source of the run is prepared with (they travel with the dataset's stages)."""
        self._settings = settings

    def submit(self, planned: Planned, content: Content, key: Any) -> None:
        """Plan `planned` for the next dataset; `key` comes back with its result."""
        self._next += 1
        self._keys[self._next] = key
        self._pending.append(row(self._next, planned, content.content_hash))

    @property
    def running(self) -> int:
        return len(self._keys)

    @property
    def cluster_cpus(self) -> int:
        """CPUs the cluster has now, in all (at least 1)."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def finished(self, *, wait: bool) -> Iterator[tuple[Any, Prepared | Failed]]:
        """(key, result) of the sources submitted so far. With `wait`, runs the dataset over them and
        yields each as it arrives; without, yields none (a dataset's results only come while it runs)."""
        if not wait or not self._pending:
            return
        rows, self._pending = self._pending, []
        with _running(self._ray) as datasets:
            yield from self._stream(rows, datasets)

    def _stream(self, rows: list[dict[str, Any]], datasets: int) -> Iterator[tuple[Any, Prepared | Failed]]:
        """Run the dataset of `rows` (one of `datasets` this process runs at once) and yield each result."""
        # Block by block, none fetched ahead: iter_rows() holds a finished block back until the next
        # one is ready, so a source that was done would wait, unwritten, for the slowest one after it.
        dataset = self._dataset(rows, datasets)
        stream = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0))
        # A block that failed on every try is dropped (max_errored_blocks), its source with it.
        lost = "failed on the Ray cluster: its workers died or raised on every try (the cluster's logs say why)"
        while True:
            try:
                done = next(stream)
            except StopIteration:
                break
            except self._ray.exceptions.RayError as exc:
                # The cluster lost the run (a node gone, an actor that kept dying): its unreturned
                # sources fail, each with one sentence, and the next run prepares them again.
                lost = f"the Ray cluster failed ({type(exc).__name__})"
                break
            for each in done.to_pylist():
                yield self._keys.pop(each["key"]), result(each)
        for key in [r["key"] for r in rows if r["key"] in self._keys]:
            yield self._keys.pop(key), Failed(lost)

    def _dataset(self, rows: list[dict[str, Any]], datasets: int) -> Any:
        """The dataset that prepares `rows`: documents through extract tasks and recordings through the
        transcriber actors, side by side (so neither waits for a slot of the other's stage), then all
        of them through the embedder actors."""
        ray = self._ray
        documents = [r for r in rows if not r["speech"]]
        recordings = [r for r in rows if r["speech"]]
        stages = int(bool(documents)) + int(bool(recordings)) + 1
        cpus, pool = _shares(ray, stages=stages * datasets)
        branches = []
        # One source per block and per batch: sources differ a thousandfold in cost, and a batch or a
        # block waits for its slowest.
        if documents:
            branch = ray.data.from_items(documents, override_num_blocks=min(len(documents), MAX_BLOCKS))
            branches.append(
                branch.map_batches(
                    extract_and_chunk,
                    batch_size=1,
                    fn_kwargs={"settings": self._settings},
                    num_cpus=cpus,
                    max_retries=RETRIES,
                )
            )
        if recordings:
            branch = ray.data.from_items(recordings, override_num_blocks=min(len(recordings), MAX_BLOCKS))
            branches.append(self._actors(branch, Transcriber, {"gpus": self.gpus}, cpus, pool))
        dataset = branches[0].union(*branches[1:]) if len(branches) > 1 else branches[0]
        return self._actors(dataset, Embedder, {}, cpus, pool)

    def _actors(self, dataset: Any, stage: type, kwargs: dict[str, Any], cpus: float, pool: int) -> Any:
        """`dataset` through a pool of `stage` actors (each keeps its model loaded), one source a call,
        on GPUs when the run asks for them."""
        return dataset.map_batches(
            stage,
            batch_size=1,
            fn_constructor_kwargs={"settings": self._settings, **kwargs},
            compute=self._ray.data.ActorPoolStrategy(min_size=1, max_size=self._pool_size(pool)),
            num_cpus=cpus,
            num_gpus=self.gpus or None,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
        )

    def _pool_size(self, by_cpu: int) -> int:
        """The most actors one pool may grow to: its share of the CPUs, or of the GPUs when it asks for them."""
        if not self.gpus:
            return by_cpu
        return max(1, int(self._ray.cluster_resources().get("GPU", 0) // self.gpus))

    def close(self) -> None:
        """Leave the cluster; stop it if an executor started it and no other executor still uses it."""
        if self._open:
            self._open = False
            _leave(self._ray)


def _join(ray: Any, address: str | None) -> None:
    """Connect this process to the cluster (or start one here), unless another executor already did."""
    global _users, _ours
    with _cluster:
        if not ray.is_initialized():
            try:
                # No dashboard: it would listen on a port and start more processes nobody asked for.
                ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
            except Exception as exc:  # no cluster there, a ray:// address without ray[client], ...
                where = f" at {address}" if address else ""
                raise KBError(f"Could not reach a Ray cluster{where} ({exc}).") from exc
            _ours = True
        _quiet(ray)
        _users += 1


def _leave(ray: Any) -> None:
    global _users, _ours
    with _cluster:
        _users -= 1
        if _users == 0 and _ours:
            # Stops a cluster ray.init started here; from one joined (an address) it only disconnects.
            ray.shutdown()
            _ours = False


@contextmanager
def _running(ray: Any) -> Iterator[int]:
    """Count a dataset as running while the block runs; gives how many run, this one included."""
    global _datasets
    with _cluster:
        _datasets += 1
        running = _datasets
    try:
        yield running
    finally:
        with _cluster:
            _datasets -= 1


def _quiet(ray: Any) -> None:
    """No progress bars or per-dataset log lines on the terminal (kb's own display reports the run), and a
    source that fails on every try fails alone instead of ending the dataset."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = -1
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    # Ray 2.60 names no parameter for a stage's retries (RETRIES) yet still warns on the keyword
    # arguments that set them; the warning is for Ray's API, not for the teacher running kb.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", module="kb.pipeline")


def _shares(ray: Any, *, stages: int) -> tuple[float, int]:
    """The CPUs each task or actor asks for, and how many actors a pool may grow to.

    Every actor pool keeps at least one actor, holding its CPUs while it waits for rows; if the pools'
    actors held all of a node's CPUs, no extract task could run and the dataset would wait forever.
    So each stage asks for at most 1/stages of the smallest node: one of each always fits on one node.
    `stages` counts those of every dataset this process runs at once (two courses of kb ingest-many
    would otherwise each keep an embedder on one of two CPUs, and neither could extract).
    """
    nodes = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    smallest = min((c for c in nodes if c > 0), default=1.0)
    cpus = min(1.0, smallest / stages)
    pool = max(1, int(sum(nodes) // (stages * cpus)))
    return cpus, pool
