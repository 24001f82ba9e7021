"""The `kb` command: a thin layer over the library that turns known errors into one sentence."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import KBError
from .terminal import printable


def error_sentence(exc: BaseException) -> str | None:
    """The one sentence a user is shown for a known failure (a KBError, a busy or damaged file,
    memory); None for anything else, which is a bug and keeps its traceback."""
    from .db import sqlite3

    if isinstance(exc, KBError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "kb ran out of memory."
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in str(exc) or "busy" in str(exc):
            return "The KB file is being written by another process (database is locked); try again when it is done."
        return f"SQLite could not complete the operation ({exc})."
    if isinstance(exc, sqlite3.DatabaseError):
        # Damage deeper than the opening checks read (a bad page in a large file) shows up mid-query.
        return f"The KB file is damaged ({exc}); rebuild it or ask for a new copy."
    return None


def user_errors(func: Callable) -> Callable:
    """Show a known failure (error_sentence) as one line on stderr and exit 1, with no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .db import sqlite3

        try:
            return func(*args, **kwargs)
        except (KBError, MemoryError, sqlite3.DatabaseError) as exc:
            raise click.ClickException(error_sentence(exc) or str(exc)) from exc

    return wrapper


# JSON escapes C0 controls itself; C1 controls, bidi controls and line separators are valid as raw
# characters in a JSON string but act on a terminal, so they are written as \u escapes too.
_JSON_UNSAFE = re.compile("[\u0080-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _print_json(value: Any) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    click.echo(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text))


def say(message: str) -> None:
    """One line for the user on stderr (a note, a wait), printed safely."""
    click.echo(f"kb: {printable(message)}", err=True)


def open_kb(db: str, **options: Any) -> Any:
    """KB.open for a command: read-only where the file cannot be written, notes and waits said on stderr."""
    from .store import KB

    options.setdefault("readonly", _readonly(db))
    kb = KB.open(db, on_wait=say, **options)
    for note in kb.notes:
        say(note)
    return kb


no_wait_option = click.option(
    "--no-wait", is_flag=True, help="Fail at once if another kb process is writing DB, instead of waiting for it."
)


class Group(click.Group):
    """kb's command group: every error click itself reports (a bad option, a missing file) is printed
    through printable() too, since it may quote a path someone else named."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            exc.message = printable(exc.message)
            if not standalone_mode:
                raise
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            if not standalone_mode:
                raise
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except OSError as exc:
            import errno

            if not standalone_mode or exc.errno != errno.EPIPE:
                raise
            sys.stderr.close()  # `kb search ... | head`: the reader left; not an error of kb's
            sys.exit(1)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


class RootGroup(Group):
    """The `kb` group: before a command is looked up, plugins add theirs (the register_commands hook)."""

    _plugins_asked = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def _add_plugin_commands(self) -> None:
        # Only third-party plugins can add commands, so only they are loaded here: importing every
        # built-in connector would cost `kb search` a second.
        if self._plugins_asked:
            return
        self._plugins_asked = True
        from .plugins import load_external_plugins, pm

        try:
            load_external_plugins()
        except KBError as exc:
            raise click.ClickException(str(exc)) from exc
        pm.hook.register_commands(cli=self)


def llm_options(func: Callable) -> Callable:
    """The options that choose and tune the LLM (`kb.options.LLMOptions`, declared once for every
    surface that asks), handed to the command as one `llm` argument."""
    from .options import LLMOptions, click_options, describe

    names = [info.name for info in describe(LLMOptions)]

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["llm"] = LLMOptions(**{name: kwargs.pop(name) for name in names})
        return func(*args, **kwargs)

    return click_options(LLMOptions)(wrapper)


def make_engine(kb: Any, llm: Any) -> Any:
    """The answer engine over `kb` with the LLM `llm` (LLMOptions) names, loaded on the first answer."""
    from .answer import AnswerEngine

    return AnswerEngine(kb, llm.check().load, llm.settings())


# Fixed widths keep --help identical everywhere, so the README copy of it can be checked.
CONTEXT = {"max_content_width": 100, "terminal_width": 100, "help_option_names": ["-h", "--help"]}


@click.group(cls=RootGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="kb")
def cli() -> None:
    """Course materials in one SQLite file, searched and answered with citations.

    \b
    Example:
        kb ingest course.db corpora/
        kb search course.db "what is transpiration?"
    """


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("query")
@click.option("-k", "k", type=click.IntRange(min=1, max=1000), default=10, show_default=True, help="Number of hits.")
@click.option("--json", "as_json", is_flag=True, help="Print hits as a JSON array.")
@click.option("--explain", is_flag=True, help="Show each hit's keyword rank, vector rank and fused score.")
@user_errors
def search(db: str, query: str, k: int, as_json: bool, explain: bool) -> None:
    """Search DB by keywords and meaning together (BM25 + vectors, fused by the weights DB records).

    \b
    Example:
        kb search course.db "how does a rain gauge work" -k 5
        kb search course.db "Darcy's law" --json
        kb search course.db "Darcy's law" --explain
    """
    from .reports import explain_fusion, format_hits
    from .search import Searcher

    with open_kb(db) as kb:
        searcher = Searcher(kb)
        hits = searcher.search(query, k)
        meta = kb.meta() if explain else {}
    if as_json:
        _print_json([hit.to_dict() | ({"explain": hit.explain()} if explain else {}) for hit in hits])
    else:
        if explain:
            click.echo(explain_fusion(searcher.fusion, meta))
        click.echo(format_hits(hits, explain=explain) if hits else "No hits.")


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("question")
@llm_options
@click.option("--json", "as_json", is_flag=True, help="Print the answer, citations and timings as JSON.")
@user_errors
def ask(db: str, question: str, as_json: bool, llm: Any) -> None:
    """Answer QUESTION from DB with a local LLM, citing page, slide, heading or time.

    kb retrieves passages, keeps those that answer the question as evidence, has the model write
    from them only, and checks every citation. When no passage answers, it says so and lists the
    nearest sources instead of guessing.

    \b
    Example:
        kb ask course.db "Why is one side of a mountain range drier?"
        kb ask course.db "What is baseflow?" --fast --json
        kb ask course.db "What is baseflow?" --llm-url http://127.0.0.1:8080/v1
    """
    from .interrupt import run_interruptible
    from .reports import AnswerPrinter

    printer = AnswerPrinter(stream=not as_json and sys.stdout.isatty(), status=not as_json and sys.stderr.isatty())

    def work() -> Any:
        # On a worker thread, so that Ctrl-C stops kb at once even inside llama.cpp (kb/interrupt.py);
        # the KB is opened there too, as an SQLite connection stays on the thread that made it.
        with open_kb(db) as kb:
            engine = make_engine(kb, llm)
            return engine.ask(question, on_token=printer.token, on_stage=printer.stage)

    answer = run_interruptible(work, on_interrupt=printer.interrupted)
    if as_json:
        from .injection import clean_answer_record

        # Nothing in an answer may phone home: no image, no link but the citations kb made.
        _print_json(clean_answer_record(answer.to_dict()))
    else:
        printer.finish(answer)


@cli.command(name="eval")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("questions", type=click.Path(dir_okay=False))
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1, max=100),
    default=5,
    show_default=True,
    help="Retrieval depth for recall@k and MRR.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N questions.")
@llm_options
@click.option("--json", "as_json", is_flag=True, help="Print per-question results and totals as JSON.")
@user_errors
def eval_(db: str, questions: str, k: int, limit: int | None, as_json: bool, llm: Any) -> None:
    """Measure retrieval and answers on a questions file (JSON lines).

    Each line: {"id", "question", "answerable", "expected_source", "expected_page" or
    "expected_heading", "keywords"}. Reports recall@k, MRR, keyword hit rate, citation precision
    and, for unanswerable questions, the abstention rate. A hit matches expected_heading when
    its heading path ends with it part by part, compared without case, punctuation, "¶" marks
    or leading numbers ("8.3.", "Chapter 4:").

    \b
    Example:
        kb eval course.db corpora/questions.jsonl --fast
    """
    from .evaluate import evaluate, load_questions
    from .interrupt import run_interruptible
    from .reports import format_eval

    items = load_questions(questions)[:limit]

    def work() -> Any:
        with open_kb(db, readonly=True) as kb:
            return evaluate(make_engine(kb, llm), items, k=k)

    report = run_interruptible(work, on_interrupt=lambda: say("interrupted."))
    if as_json:
        _print_json(report)
    else:
        click.echo(format_eval(report))


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def info(db: str, as_json: bool) -> None:
    """Show what DB holds: model, counts and every source with its status.

    \b
    Example:
        kb info course.db
    """
    from .reports import format_info

    with open_kb(db) as kb:
        data = kb.info()
    if as_json:
        _print_json(data)
    else:
        click.echo(format_info(data))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@user_errors
def models(as_json: bool) -> None:
    """List the built-in LLMs: size, memory, licence and where the weights come from.

    Choose one with `kb ask --model NAME`; any other GGUF file works with `--model FILE.gguf`,
    and any OpenAI-compatible server with `--llm-url`.

    \b
    Example:
        kb models
        kb ask course.db "What is baseflow?" --model smollm2-135m
    """
    from .models import BUILTIN, DEFAULT_MODEL, installed

    rows = [
        {
            "name": m.name,
            "title": m.title,
            "default": m.name == DEFAULT_MODEL,
            "tier": m.tier,
            "judges_evidence": m.judges,
            "size_bytes": m.size_bytes,
            "ram_gb": m.ram_gb,
            "licence": m.licence,
            "origin": m.origin,
            "installed": installed(m),
        }
        for m in BUILTIN.values()
    ]
    if as_json:
        _print_json(rows)
        return
    from .reports import format_models

    click.echo(format_models(rows))


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--vector-backend", type=click.Choice(["vec", "vss"]), help="Switch to this backend (default: keep).")
@no_wait_option
@user_errors
def reindex(db: str, vector_backend: str | None, no_wait: bool) -> None:
    """Rebuild DB's vector index and keyword index from its stored embeddings and text.

    Optionally switches the vector backend. Also repairs a keyword index that lost rows.

    \b
    Example:
        kb reindex course.db
        kb reindex course.db --vector-backend vss
    """
    with open_kb(db, readonly=False, write=True, wait=not no_wait, repair=True) as kb:
        backend = vector_backend or kb.meta().get("vector_backend", "vec")
        count = kb.reindex(backend)
    click.echo(f"Rebuilt the {backend} index and the keyword index of {printable(db)} from {count:,} embeddings.")


@cli.command(name="export")
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--sources",
    type=click.Choice(["none", "documents", "all"]),
    default="documents",
    show_default=True,
    help="Original files to store in the copy: none, every kind but audio and video, or all.",
)
@click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out sources whose path below the course folder (or URL) matches; repeatable.",
)
@click.option("--with-log", is_flag=True, help="Keep the answers log (every kb ask asked of DB).")
@click.option(
    "--questions",
    type=click.Choice(["approved", "none"]),
    default="approved",
    show_default=True,
    help="Study questions to carry (kb questions): those the teacher approved, or none; never drafts.",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def export_(
    db: str,
    out: str,
    sources: str,
    exclude: tuple[str, ...],
    with_log: bool,
    questions: str,
    force: bool,
    as_json: bool,
) -> None:
    """Write the learner copy of DB to OUT: one compacted file that stands alone.

    The copy holds every source's text, passages and embeddings, and (with --sources) the
    original files, so citations open the PDF page, the slide or the lecture time with no
    course folder around. Paths become relative to the course folder; the answers log stays
    behind unless --with-log, and of the study questions only the approved ones go. Only the
    derived vector index is left out, so a stock SQLite and a plain Datasette open it; `kb
    search`, `kb ask` and `kb serve` work on it.

    \b
    Example:
        kb export course.db course-learner.db
        kb export course.db course-learner.db --sources all --exclude website/staff-notes.html
    """
    from .export import export
    from .reports import format_export

    with open_kb(db) as kb:
        report = export(kb, out, force=force, sources=sources, exclude=exclude, with_log=with_log, questions=questions)
    if as_json:
        _print_json(report.to_dict())
        return
    text, warnings = format_export(report)
    click.echo(text)
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)  # already printable (format_export)


@cli.command()
@click.argument("dbs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for the whole network)."
)
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=8001, show_default=True, help="Port to listen on.")
@click.option("--open", "open_browser", is_flag=True, help="Open the ask page in a web browser.")
@click.option(
    "--api-key",
    envvar="KB_API_KEY",
    help="Bearer token that /v1 and /mcp require (needed to serve them beyond this machine).",
)
@llm_options
@user_errors
def serve(dbs: tuple[str, ...], host: str, port: int, open_browser: bool, api_key: str | None, llm: Any) -> None:
    """Browse, search and ask DB files in a web browser (Datasette with kb's plugin), read-only.

    Each file gets an ask page (/-/kb/NAME) that answers with citations: each opens the source
    there (a stored PDF at its page, a recording at its second, the passage highlighted in the
    source's text) or shows the passage's row. Its tables and stored keyword, semantic and hybrid
    searches are browsable too. Every file is checked first; a damaged, altered or non-kb file is
    refused. The --model/--llm-url options choose the LLM as for `kb ask`.

    Other programs ask the same files: an OpenAI-compatible API at /v1 (model `kb:NAME`; chat
    completions with citations, models, embeddings) and MCP at /mcp. Served beyond loopback
    (--host), both need --api-key.

    \b
    Example:
        kb serve course-learner.db
        kb serve course.db other-course.db --port 8080 --open
        kb serve course.db --host 0.0.0.0 --api-key "$(openssl rand -hex 16)"
    """
    from .serve import serve as run

    run(list(dbs), host=host, port=port, open_browser=open_browser, api_key=api_key, llm=llm)


@cli.command()
@click.argument("dbs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@llm_options
@user_errors
def mcp(dbs: tuple[str, ...], llm: Any) -> None:
    """Serve DB files to an MCP client (a desktop agent) over stdio, read-only.

    Tools: search(query, k), ask(question) with citations or abstention, get_passage(chunk_id),
    list_sources(); each source is a resource (kb://NAME/sources/ID). With several files, each
    tool takes `course` (the file's name without .db). `kb serve` offers the same at /mcp.

    \b
    Example:
        kb mcp course-learner.db
        claude mcp add course -- kb mcp /path/to/course-learner.db
    """
    from .mcp_server import run_stdio
    from .serve import check_files

    llm.check()
    files = check_files(list(dbs))
    run_stdio(files, llm.load_args(), llm.settings())


def _readonly(db: str) -> bool:
    """Open read-only when the file cannot be written (a learner's copy on read-only media)."""
    import os

    from .filecheck import in_wal_mode, writable_folder

    if not os.path.exists(db):
        return False
    if not os.access(db, os.W_OK):
        return True
    # A WAL file needs its folder writable (SQLite creates -wal and -shm beside it).
    path = Path(db)
    return in_wal_mode(path) and not writable_folder(path.parent)


# The commands that bring sources in and take them out, and the study questions, live in their own modules.
from . import cli_plugins, cli_questions, cli_sources, cli_tune  # noqa: E402,F401


def main() -> None:
    cli()
