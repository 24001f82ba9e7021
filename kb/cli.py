"""The `kb` command: a thin layer over the library that turns known errors into one sentence."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from . import __version__
from .errors import KBError


def user_errors(func: Callable) -> Callable:
    """Show KBError as one line on stderr and exit 1, with no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .db import sqlite3

        try:
            return func(*args, **kwargs)
        except KBError as exc:
            raise click.ClickException(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise click.ClickException(
                    "The KB file is being written by another process (database is locked); try again when it is done."
                ) from exc
            raise click.ClickException(f"SQLite could not complete the operation ({exc}).") from exc
        except sqlite3.DatabaseError as exc:
            # Damage deeper than the opening checks read (a bad page in a large file) shows up mid-query.
            raise click.ClickException(f"The KB file is damaged ({exc}); rebuild it or ask for a new copy.") from exc

    return wrapper


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def llm_options(func: Callable) -> Callable:
    """The options that choose and tune the LLM, shared by `ask` and `eval`."""
    options = [
        click.option(
            "--model",
            "model_path",
            type=click.Path(dir_okay=False),
            envvar="KB_MODEL",
            help="A built-in model by name (see `kb models`; default: qwen2.5-coder-1.5b) or a GGUF file.",
        ),
        click.option(
            "--llm-url", envvar="KB_LLM_URL", help="An OpenAI-compatible server instead, e.g. http://127.0.0.1:8080/v1."
        ),
        click.option("--llm-model", help="Model name to ask the --llm-url server for."),
        click.option(
            "--n-ctx", type=click.IntRange(min=512), default=4096, show_default=True, help="Context size for --model."
        ),
        click.option("--threads", type=click.IntRange(min=1), help="CPU threads for --model (default: all)."),
        click.option(
            "--llm-timeout",
            type=click.FloatRange(min=1),
            default=120,
            show_default=True,
            help="Seconds to wait for a --llm-url server.",
        ),
        click.option(
            "--fast", is_flag=True, help="Skip the evidence check: the model writes from the passages in one call."
        ),
        click.option(
            "--judge",
            type=click.Choice(["auto", "retrieval", "llm"]),
            default="auto",
            show_default=True,
            help="Who decides what is evidence: the model, choosing exact quotes (llm), or retrieval scores "
            "alone (auto: the model when it can judge; the low-memory models cannot).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def make_engine(
    kb: Any,
    model_path: str | None,
    llm_url: str | None,
    llm_model: str | None,
    n_ctx: int,
    threads: int | None,
    llm_timeout: float,
    fast: bool,
    judge: str,
) -> Any:
    from .answer import AnswerEngine, AskSettings, load_llm

    if model_path and llm_url:
        raise KBError("Give either --model or --llm-url, not both.")

    def factory() -> Any:
        return load_llm(model_path, llm_url, llm_model, n_ctx, threads, llm_timeout)

    return AnswerEngine(kb, factory, AskSettings(fast=fast, judge=judge))


# Fixed widths keep --help identical everywhere, so the README copy of it can be checked.
CONTEXT = {"max_content_width": 100, "terminal_width": 100, "help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
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
@user_errors
def search(db: str, query: str, k: int, as_json: bool) -> None:
    """Search DB by keywords and meaning together (BM25 + vectors, fused by rank).

    \b
    Example:
        kb search course.db "how does a rain gauge work" -k 5
        kb search course.db "Darcy's law" --json
    """
    from .reports import format_hits
    from .search import Searcher
    from .store import KB

    with KB.open(db, readonly=_readonly(db)) as kb:
        hits = Searcher(kb).search(query, k)
    if as_json:
        _print_json([hit.to_dict() for hit in hits])
    else:
        click.echo(format_hits(hits) if hits else "No hits.")


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("question")
@llm_options
@click.option("--json", "as_json", is_flag=True, help="Print the answer, citations and timings as JSON.")
@user_errors
def ask(db: str, question: str, as_json: bool, **llm: Any) -> None:
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
    from .reports import AnswerPrinter
    from .store import KB

    with KB.open(db, readonly=_readonly(db)) as kb:
        engine = make_engine(kb, **llm)
        printer = AnswerPrinter(stream=not as_json and sys.stdout.isatty(), status=not as_json and sys.stderr.isatty())
        answer = engine.ask(question, on_token=printer.token, on_stage=printer.stage)
    if as_json:
        _print_json(answer.to_dict())
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
def eval_(db: str, questions: str, k: int, limit: int | None, as_json: bool, **llm: Any) -> None:
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
    from .reports import format_eval
    from .store import KB

    items = load_questions(questions)[:limit]
    with KB.open(db, readonly=True) as kb:
        engine = make_engine(kb, **llm)
        report = evaluate(engine, items, k=k)
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
    from .store import KB

    with KB.open(db, readonly=_readonly(db)) as kb:
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
@user_errors
def reindex(db: str, vector_backend: str | None) -> None:
    """Rebuild DB's vector index from its stored embeddings, optionally switching backend.

    \b
    Example:
        kb reindex course.db --vector-backend vss
    """
    from .store import KB

    with KB.open(db) as kb:
        backend = vector_backend or kb.meta().get("vector_backend", "vec")
        count = kb.reindex(backend)
    click.echo(f"Rebuilt the {backend} index of {db} from {count:,} embeddings.")


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
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def export_(
    db: str, out: str, sources: str, exclude: tuple[str, ...], with_log: bool, force: bool, as_json: bool
) -> None:
    """Write the learner copy of DB to OUT: one compacted file that stands alone.

    The copy holds every source's text, passages and embeddings, and (with --sources) the
    original files, so citations open the PDF page, the slide or the lecture time with no
    course folder around. Paths become relative to the course folder; the answers log stays
    behind unless --with-log. Only the derived vector index is left out, so a stock SQLite
    and a plain Datasette open it; `kb search`, `kb ask` and `kb serve` work on it.

    \b
    Example:
        kb export course.db course-learner.db
        kb export course.db course-learner.db --sources all --exclude website/staff-notes.html
    """
    from .export import export
    from .reports import format_export
    from .store import KB

    with KB.open(db, readonly=_readonly(db)) as kb:
        report = export(kb, out, force=force, sources=sources, exclude=exclude, with_log=with_log)
    if as_json:
        _print_json(report.to_dict())
        return
    text, warnings = format_export(report)
    click.echo(text)
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)


@cli.command()
@click.argument("dbs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for the whole network)."
)
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=8001, show_default=True, help="Port to listen on.")
@click.option("--open", "open_browser", is_flag=True, help="Open the ask page in a web browser.")
@llm_options
@user_errors
def serve(dbs: tuple[str, ...], host: str, port: int, open_browser: bool, **llm: Any) -> None:
    """Browse, search and ask DB files in a web browser (Datasette with kb's plugin), read-only.

    Each file gets an ask page (/-/kb/NAME) that answers with citations: each opens the source
    there (a stored PDF at its page, a recording at its second, the passage highlighted in the
    source's text) or shows the passage's row. Its tables and stored keyword, semantic and hybrid
    searches are browsable too. Every file is checked first; a damaged, altered or non-kb file is
    refused. The --model/--llm-url options choose the LLM as for `kb ask`.

    \b
    Example:
        kb serve course-learner.db
        kb serve course.db other-course.db --port 8080 --open
    """
    from .serve import serve as run

    llm["model"] = llm.pop("model_path")
    run(list(dbs), host=host, port=port, open_browser=open_browser, **llm)


def _readonly(db: str) -> bool:
    """Open read-only when the file cannot be written (a learner's copy on read-only media)."""
    import os

    return os.path.exists(db) and not os.access(db, os.W_OK)


# The commands that bring sources in and take them out live in their own module.
from . import cli_sources  # noqa: E402,F401


def main() -> None:
    cli()
