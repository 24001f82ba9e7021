"""`kb questions`: make study questions from a KB, decide on them, and export them."""

from __future__ import annotations

import sys
from typing import Any

import click

from .cli import CONTEXT, _print_json, cli, llm_options, open_kb, say, user_errors
from .errors import KBError
from .terminal import printable


class QuestionsGroup(click.Group):
    """`kb questions KB` makes questions; `kb questions list|approve|reject|edit|export KB …` work on them."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["make", *args]
        return super().resolve_command(ctx, args)


@cli.group(cls=QuestionsGroup, context_settings=CONTEXT)
def questions() -> None:
    """Study questions made from the course, each checked against it, for the teacher to approve.

    `kb questions DB` makes them (short answer, multiple choice, true/false, cloze), keeping only
    those whose quote occurs in their passage and backs the answer, that kb's answer engine answers
    from that passage, and that repeat no other; the rest are kept as rejected, with the reason.

    \b
    Example:
        kb questions course.db --per-section 2 --source "*.pdf"
        kb questions list course.db --status draft
        kb questions approve course.db 3 4 7
        kb questions export course.db quiz.gift --format gift
    """


def _kinds(value: str) -> tuple[str, ...]:
    from .questions import KINDS

    aliases = {
        "mc": "mcq",
        "multiple-choice": "mcq",
        "tf": "truefalse",
        "true-false": "truefalse",
        "short-answer": "short",
    }
    kinds = tuple(dict.fromkeys(aliases.get(k.strip(), k.strip()) for k in value.split(",") if k.strip()))
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise click.BadParameter(f"choose from {', '.join(KINDS)} (comma-separated), not {value!r}.")
    return kinds


@questions.command()
@click.argument("db", type=click.Path(dir_okay=False, exists=True))
@click.option("--per-section", type=click.IntRange(1, 20), default=1, show_default=True, help="Questions per passage.")
@click.option(
    "--kinds",
    default="short,mcq,truefalse,cloze",
    show_default=True,
    help="Kinds to make, taken in turn: short, mcq, truefalse, cloze.",
)
@click.option("--source", "sources", multiple=True, metavar="GLOB", help="Only sources whose path or title matches.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N passages.")
@llm_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def make(
    db: str, per_section: int, kinds: str, sources: tuple[str, ...], limit: int | None, as_json: bool, llm: Any
) -> None:
    """Make study questions from DB's passages with the local model, check each, and save them all.

    \b
    Example:
        kb questions course.db
        kb questions make course.db --kinds mcq,cloze --per-section 2 --source "field-guide*"
    """
    from .interrupt import run_interruptible
    from .questions.generate import Generator
    from .questions.report import format_report

    chosen = _kinds(kinds)
    llm.check()
    state: dict[str, Any] = {}

    def work() -> Any:
        with open_kb(db, readonly=False, write=True) as kb:
            generator = Generator(kb, llm.load(), llm.settings())
            with click.progressbar(
                length=1, label="Making questions", file=sys.stderr, show_pos=True, item_show_func=lambda q: q
            ) as bar:

                def shown(number: int, total: int, q: Any) -> None:
                    bar.length = total * per_section
                    bar.update(1, f"{q.kind} {'kept' if q.status != 'rejected' else q.reason}")

                state["report"] = generator.run(chosen, per_section, sources, shown, limit)
        return state["report"]

    report = run_interruptible(work, on_interrupt=lambda: say("interrupted; the questions made so far are saved."))
    if as_json:
        _print_json(report.to_dict())
    else:
        click.echo(format_report(report))


@questions.command(name="list")
@click.argument("db", type=click.Path(dir_okay=False, exists=True))
@click.option("--status", "statuses", multiple=True, type=click.Choice(["draft", "approved", "rejected"]))
@click.option("--kind", "kinds", multiple=True, type=click.Choice(["short", "mcq", "truefalse", "cloze"]))
@click.option("--json", "as_json", is_flag=True, help="Print the questions as a JSON array.")
@user_errors
def list_(db: str, statuses: tuple[str, ...], kinds: tuple[str, ...], as_json: bool) -> None:
    """List DB's questions with their status, answer and source.

    \b
    Example:
        kb questions list course.db --status draft --kind mcq
    """
    from .questions import store
    from .questions.report import format_question

    with open_kb(db) as kb:
        found = store.select(kb, statuses, kinds)
    if as_json:
        _print_json([q.to_dict() for q in found])
    elif not found:
        click.echo("No questions.")
    else:
        click.echo("\n\n".join(format_question(q) for q in found))


def _decide(db: str, ids: tuple[int, ...], all_drafts: bool, status: str, reason: str | None) -> None:
    from .questions import store

    with open_kb(db, readonly=False, write=True) as kb:
        chosen = list(ids) + ([q.id for q in store.select(kb, ("draft",))] if all_drafts else [])
        if not chosen:
            raise KBError("Name the questions by id, or pass --all-drafts.")
        count = store.set_status(kb, list(dict.fromkeys(chosen)), status, reason)
    click.echo(f"{status.capitalize()} {count} question{'s' if count != 1 else ''}.")


@questions.command()
@click.argument("db", type=click.Path(dir_okay=False, exists=True))
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-drafts", is_flag=True, help="Approve every draft (every question that passed its checks).")
@user_errors
def approve(db: str, ids: tuple[int, ...], all_drafts: bool) -> None:
    """Approve questions by id: exports and the learner copy carry approved questions.

    \b
    Example:
        kb questions approve course.db 3 4 7
    """
    _decide(db, ids, all_drafts, "approved", None)


@questions.command()
@click.argument("db", type=click.Path(dir_okay=False, exists=True))
@click.argument("ids", nargs=-1, type=int)
@click.option("--all-drafts", is_flag=True, help="Reject every draft.")
@user_errors
def reject(db: str, ids: tuple[int, ...], all_drafts: bool) -> None:
    """Reject questions by id (the reason recorded is "teacher").

    \b
    Example:
        kb questions reject course.db 5
    """
    _decide(db, ids, all_drafts, "rejected", "teacher")


@questions.command()
@click.argument("db", type=click.Path(dir_okay=False, exists=True))
@click.argument("question_id", type=int)
@user_errors
def edit(db: str, question_id: int) -> None:
    """Edit one question in $EDITOR, as "field: value" lines; saved when the editor closes.

    The passage checks run again on the edited question and say what no longer holds; the
    teacher's text is kept either way.

    \b
    Example:
        EDITOR=nano kb questions edit course.db 3
    """
    from .questions import checks, store
    from .questions import edit as editing

    with open_kb(db, readonly=False, write=True) as kb:
        q = store.get(kb, question_id)
        text = click.edit(editing.to_text(q), extension=".txt", require_save=True)
        if text is None:
            click.echo("Unchanged.")
            return
        q = editing.from_text(text, q)
        row = kb.conn.execute("SELECT text FROM chunks WHERE id = ?", (q.chunk_id,)).fetchone() if q.chunk_id else None
        problem = checks.grounding(q, row[0], None) if row else "quote_not_in_chunk"
        q.checks["edited"] = True
        q.checks["after_edit"] = problem
        store.save(kb, q)
    click.echo(f"Saved question {question_id}.")
    if problem:
        from .questions import REASONS

        say(f"note: after the edit, {REASONS.get(problem, problem)}.")


@questions.command(name="export")
@click.argument("db", type=click.Path(dir_okay=False, exists=True))
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True), default="-")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["gift", "moodle-xml", "apkg", "qti", "jsonl"]),
    required=True,
    help="gift or moodle-xml (Moodle), apkg (Anki), qti (QTI 1.2 zip: Canvas and others), jsonl (chat dataset).",
)
@click.option(
    "--all", "everything", is_flag=True, help="Drafts too, not only approved questions (never rejected ones)."
)
@user_errors
def export_(db: str, out: str, fmt: str, everything: bool) -> None:
    """Write DB's approved questions to OUT ("-": standard output, for the text formats).

    \b
    Example:
        kb questions export course.db quiz.gift --format gift
        kb questions export course.db course.apkg --format apkg
        kb questions export course.db - --format jsonl --all
    """
    from .questions.export import export

    with open_kb(db, readonly=True) as kb:
        count, text = export(kb, fmt, out, everything)
    if text is not None:
        click.echo(text, nl=False)
    else:
        say(f"wrote {count} question{'s' if count != 1 else ''} to {printable(out)}.")
