"""The stages a Ray Data dataset runs for `kb ingest --executor ray`, one row per source.

A row is `{"key": int, "speech": bool, "job": bytes}`: the driver's key for the source, whether a
speech model reads it, and a pickled Job (the Planned record, with a path or a URI and never media
bytes, a fetched page's own bytes at most; and the hash the driver read). Each stage fills in
`Job.result` and passes the row on:

    extract_and_chunk  tasks        documents: read the file again, check its hash, extract, chunk
    Transcriber        actor pool   the same for recordings (`speech`), the speech model kept loaded
    Embedder           actor pool   every source's chunks' vectors, the embedder kept loaded

A failure becomes the source's Failed record, never an exception: one exception would end the
dataset, and with it every other source of the run. Nothing here opens the KB.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from ..chunker import ChunkingSettings
from ..deadlines import SourceTimeout
from ..errors import SourceError, exhausted
from ..types import Limits
from .chunk import Prepared
from .embed import embed
from .plan import Planned
from .prepare import Failed, PrepareSettings, chunked
from .read import read
from .write import storing_errors


@dataclass(frozen=True)
class WorkerSettings:
    """What every stage needs besides the source, the same for a whole run (the embedder by id, not as an object)."""

    embedder: str
    chunking: ChunkingSettings
    limits: Limits
    options: dict[str, Any]


@dataclass
class Job:
    """One source on its way through the dataset."""

    planned: Planned
    content_hash: str
    """What the driver hashed: a worker refuses a file that no longer matches it."""
    result: Prepared | Failed | None = None
    """None until extracted; then chunks (vectors once embedded), or why the source failed."""


def row(key: int, planned: Planned, content_hash: str) -> dict[str, Any]:
    """The dataset row of one source the driver planned."""
    speech = bool(getattr(planned.connector, "transcribes", False))
    return {"key": key, "speech": speech, "job": pickle.dumps(Job(planned, content_hash), protocol=5)}


def result(row: dict[str, Any]) -> Prepared | Failed:
    """What the dataset made of a source, from its last row."""
    job: Job = pickle.loads(row["job"])
    return job.result if job.result is not None else Failed("was not prepared on the Ray cluster")


def _each(batch: dict[str, Any], step: Any) -> dict[str, Any]:
    """`batch` with `step(job)` applied to each of its jobs."""
    jobs = []
    for data in batch["job"]:
        job: Job = pickle.loads(data)
        step(job)
        jobs.append(pickle.dumps(job, protocol=5))
    return {**batch, "job": jobs}


def _extract(job: Job, settings: WorkerSettings, options: dict[str, Any]) -> None:
    """Stages 3-5 on a worker: the file read again by path (it must still be what the driver hashed)."""
    try:
        content = read(job.planned, settings.limits)
        if content.content_hash != job.content_hash:
            raise SourceError("changed while it was being ingested; run the ingest again to take the new version")
        job.result = chunked(job.planned, content, PrepareSettings(None, settings.chunking, settings.limits, options))
    except (SourceError, SourceTimeout) as exc:
        job.result = Failed(str(exc))
    except (MemoryError, RecursionError) as exc:
        job.result = Failed(exhausted(exc))


def extract_and_chunk(batch: dict[str, Any], settings: WorkerSettings) -> dict[str, Any]:
    """The task stage, for every source that needs no speech model."""
    return _each(batch, lambda job: _extract(job, settings, settings.options))


class Transcriber:
    """The actor stage for recordings: extract (and so transcribe) and chunk them, on a GPU when given one.

    connectors/transcribe.py keeps each loaded model for the life of its process, so an actor loads
    the speech model once, with its first recording, and keeps it for every recording after. Ray Data
    calls an actor off its main thread, where the per-source SIGALRM deadline cannot fire: here the
    time limit is the transcriber's own pace check (connectors/transcribe.check_pace)."""

    def __init__(self, settings: WorkerSettings, gpus: float = 0.0):
        self.settings = settings
        # On a GPU, faster-whisper runs float16 through its batched pipeline (connectors/transcribe.py).
        self.options = {**settings.options, "whisper_device": "cuda"} if gpus else settings.options

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return _each(batch, lambda job: _extract(job, self.settings, self.options))


class Embedder:
    """The actor stage that embeds every prepared source's chunks, with one embedder loaded per actor."""

    def __init__(self, settings: WorkerSettings):
        from ..plugins import get_embedder

        # KB_PLUGINS works on a worker as anywhere: the worker's own plugin manager finds the model by id.
        self.embedder = get_embedder(settings.embedder)
        if hasattr(self.embedder, "load"):
            self.embedder.load()  # now, not with the first source, so that cost is paid once per actor

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return _each(batch, self._embed)

    def _embed(self, job: Job) -> None:
        if not isinstance(job.result, Prepared):
            return
        try:
            with storing_errors():
                embed(job.result, self.embedder)
        except SourceError as exc:
            job.result = Failed(str(exc))
        except (MemoryError, RecursionError) as exc:
            job.result = Failed(exhausted(exc))
