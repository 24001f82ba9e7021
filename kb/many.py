"""`kb ingest-many`: many courses from one manifest, each into its own KB file (one writer per file).

A manifest is TOML. `[defaults]` holds settings every course starts from; each `[[course]]` names its
output `db`, its `sources` and any of `kb ingest`'s settings, by flag name:

    [defaults]
    embedder = "all-MiniLM-L6-v2"

    [[course]]
    name = "hydrology"                     # optional; the db's file name without .db
    db = "out/hydrology.db"
    sources = ["hydrology/", "https://example.org/hydrology/"]
    exclude = ["staff-*"]
    options = { max_depth = 1 }            # -o KEY VALUE

Relative paths resolve against the manifest's folder. Locally the courses run one after another;
with Ray, several at once from threads of this process, each with its own Ingester and executor on
one cluster, which this run starts (or joins) once and closes last.
"""

from __future__ import annotations

import queue
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .db import sqlite3
from .errors import KBError
from .ingest import IngestResult
from .sync import URL_SCHEME

__all__ = ["Course", "CourseResult", "ingest_many", "load_manifest"]

COURSE_KEYS = ("name", "db", "sources")
"""A course's own keys; every other key is one of `kb ingest`'s settings (kb.cli_sources.course_settings)."""


@dataclass(frozen=True)
class Course:
    """One course of a manifest, as written there (its settings are checked when the run starts)."""

    name: str
    db: str
    """The output KB file, an absolute path ("" when the entry gives none)."""
    sources: tuple[str, ...]
    """Files and folders as absolute paths, URLs as written."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """`[defaults]` with the course's own settings over it, as written."""
    base: Path = Path(".")
    """The manifest's folder: relative paths in the settings resolve against it."""
    problem: str | None = None
    """Why this entry cannot run (the others still do)."""


@dataclass
class CourseResult:
    """What `kb ingest-many` did with one course."""

    course: Course
    result: IngestResult | None = None
    """The course's ingest report; None when the course could not run."""
    reason: str | None = None
    """Why the course could not run, as one sentence."""
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.result is None or self.result.failed

    def to_dict(self) -> dict[str, Any]:
        totals = self.result.totals() if self.result else {}
        errors = [r for r in self.result.reports if r.status == "error"] if self.result else []
        return {
            "course": self.course.name,
            "db": self.course.db,
            "status": "error" if self.failed else "ok",
            "reason": self.reason,
            "sources": {k: v for k, v in totals.items() if k != "chunks"},
            "chunks": totals.get("chunks", 0),
            "errors": [{"uri": r.uri, "reason": r.reason} for r in errors],
            "seconds": round(self.seconds, 3),
        }


def load_manifest(path: str | Path) -> list[Course]:
    """The courses a manifest lists; KBError naming the line or key when the file itself is malformed.
    A bad course entry is not: it comes back with its `problem`, and only that course fails."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KBError(f"Cannot read the manifest {path}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise KBError(f"The manifest {path} is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as exc:
        raise KBError(f"The manifest {path} is not valid TOML: {exc}.") from None
    unknown = sorted(set(data) - {"defaults", "course"})
    if unknown:
        raise KBError(
            f"The manifest {path} has an unknown top-level key {unknown[0]!r}: it holds a [defaults] table "
            "and [[course]] tables."
        )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise KBError(f"The manifest {path}: defaults is a table of settings ([defaults]).")
    clash = sorted(set(defaults) & set(COURSE_KEYS))
    if clash:
        raise KBError(f"The manifest {path}: [defaults] cannot set {clash[0]!r}; each [[course]] sets its own.")
    entries = data.get("course")
    if not isinstance(entries, list) or not entries:
        raise KBError(f"The manifest {path} lists no courses: add a [[course]] table with db and sources.")
    base = path.resolve().parent
    courses: list[Course] = []
    for number, entry in enumerate(entries, 1):
        course = _course(entry, number, defaults, base)
        earlier = next((c for c in courses if c.db and c.db == course.db), None)
        if earlier is not None and course.problem is None:
            # Each file has one writer: two courses into one file would wait for each other or mix.
            course = replace(course, problem=f"writes the same file as the course {earlier.name!r} ({course.db})")
        courses.append(course)
    return courses


def _course(entry: Any, number: int, defaults: Mapping[str, Any], base: Path) -> Course:
    """One [[course]] table as a Course (with a problem when the entry cannot run)."""
    label = f"course {number}"
    if not isinstance(entry, dict):
        return Course(label, "", (), base=base, problem="is not a table of db, sources and settings")
    name, db, sources = entry.get("name"), entry.get("db"), entry.get("sources")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        return Course(label, "", (), base=base, problem="has a name that is not text")
    if not isinstance(db, str) or not db.strip():
        return Course(name or label, "", (), base=base, problem="gives no db (the KB file to write)")
    db_path = str(base / Path(db).expanduser())
    name = name or Path(db).stem
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        return Course(name, db_path, (), base=base, problem="needs sources: a list of files, folders or URLs")
    resolved = tuple(s if URL_SCHEME.match(s) else str(base / Path(s).expanduser()) for s in sources)
    own = {k: v for k, v in entry.items() if k not in COURSE_KEYS}
    settings = {**defaults, **own}
    if isinstance(defaults.get("options"), dict) and isinstance(own.get("options"), dict):
        settings["options"] = {**defaults["options"], **own["options"]}  # options merge key by key
    return Course(name, db_path, resolved, settings, base)


def ingest_many(
    courses: list[Course],
    *,
    executor: str = "local",
    ray_address: str | None = None,
    ray_gpus: float = 0.0,
    jobs: int | None = None,
    no_wait: bool = False,
    on_done: Callable[[CourseResult], None] | None = None,
) -> list[CourseResult]:
    """Ingest every course into its own file; one result per course, in the manifest's order.

    A course that cannot run (a bad entry, a missing folder, a KB another process writes) fails
    alone. With `executor="ray"`, up to `jobs` courses run at once (default: one per cluster CPU)."""
    from .cli_sources import course_settings

    run = {"executor": executor, "ray_address": ray_address, "ray_gpus": ray_gpus, "no_wait": no_wait}
    results: list[CourseResult | None] = [None] * len(courses)

    def finished(index: int, result: CourseResult) -> None:
        results[index] = result
        if on_done is not None:
            on_done(result)

    todo: list[tuple[int, Course, dict[str, Any]]] = []
    # Settings are checked here, on this thread, before any course starts: the plugin manager loads once.
    for index, course in enumerate(courses):
        try:
            if course.problem:
                raise KBError(f"The course {course.name!r} {course.problem}.")
            todo.append((index, course, {**course_settings(course.settings, course.base), **run}))
        except KBError as exc:
            finished(index, CourseResult(course, reason=str(exc)))
    if executor == "ray" and todo:
        _on_ray(todo, ray_address, ray_gpus, jobs, finished)
    else:
        for index, course, settings in todo:
            finished(index, run_course(course, settings, "local"))
    return [r for r in results if r is not None]


def run_course(course: Course, settings: dict[str, Any], executor: Any) -> CourseResult:
    """One course into its file, as `kb ingest DB SOURCE...` with `settings` would; a known failure
    becomes the result's reason."""
    from .cli import error_sentence
    from .cli_sources import check_targets, ingest_into

    started = time.monotonic()
    try:
        check_targets(course.db, course.sources)
        try:
            Path(course.db).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise KBError(f"Cannot write {course.db}: {exc.strerror or exc}.") from None
        result = ingest_into(course.db, list(course.sources), settings, executor)
    except (KBError, MemoryError, sqlite3.DatabaseError) as exc:
        return CourseResult(course, reason=error_sentence(exc), seconds=time.monotonic() - started)
    return CourseResult(course, result, seconds=time.monotonic() - started)


def _on_ray(
    todo: list[tuple[int, Course, dict[str, Any]]],
    address: str | None,
    gpus: float,
    jobs: int | None,
    finished: Callable[[int, CourseResult], None],
) -> None:
    """The courses on one Ray cluster, `jobs` at a time, each from a thread with its own executor."""
    from .pipeline.ray_executor import RayExecutor

    # This executor starts (or joins) the cluster and holds it for the whole run: closed last, it is
    # the one that shuts down a cluster this run started. An unreachable cluster ends the run here.
    owner = RayExecutor(address=address, gpus=gpus)
    done: queue.Queue[tuple[int, CourseResult | BaseException]] = queue.Queue()

    def work(index: int, course: Course, settings: dict[str, Any]) -> None:
        try:
            executor = RayExecutor(address=address, gpus=gpus)
            try:
                done.put((index, run_course(course, settings, executor)))
            finally:
                executor.close()
        except BaseException as exc:  # a bug: re-raised on the main thread, with its traceback
            done.put((index, exc))

    interrupted = False
    try:
        if jobs is None:
            jobs = owner.cluster_cpus
        pending, running = list(reversed(todo)), 0
        while pending or running:
            while pending and running < max(1, jobs):
                # Daemon threads: Ctrl-C ends the run without waiting for them; every source they
                # committed stays, and the next run carries on (one transaction per source).
                threading.Thread(target=work, args=pending.pop(), name="kb-course", daemon=True).start()
                running += 1
            index, outcome = _next(done)
            running -= 1
            if isinstance(outcome, BaseException):
                raise outcome
            finished(index, outcome)
    except KeyboardInterrupt:
        # The threads may still submit: Ray's own exit handler stops the cluster once they are gone.
        interrupted = True
        raise
    finally:
        if not interrupted:
            owner.close()


def _next(done: queue.Queue) -> Any:
    # A get with a timeout, in a loop: a blocking get() would not let Ctrl-C through.
    while True:
        try:
            return done.get(timeout=0.5)
        except queue.Empty:
            continue
