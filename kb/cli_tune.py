"""`kb tune`: choose a KB's fusion of keyword and vector search on the teacher's own questions."""

from __future__ import annotations

import click

from .cli import _print_json, _readonly, cli, open_kb, user_errors
from .errors import KBError


@cli.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.argument("questions", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Measure and show the table, but record nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the chosen setting and the table as JSON.")
@user_errors
def tune(db: str, questions: str, dry_run: bool, as_json: bool) -> None:
    """Tune how DB fuses keyword and vector search, on questions with known answers (JSON lines).

    QUESTIONS is `kb eval`'s format; the answerable questions with an expected_source (and
    expected_page or expected_heading) count, at least 10 of them. Every fusion setting is tried
    on them; the best at putting the expected passage first (then in the top 5, then MRR) is
    recorded in DB, which `kb search`, `kb ask` and learner copies exported afterwards then use.
    A tie keeps the current setting; a best that beats the better list alone on too few questions
    to tell from luck (a sign test) gives way to that list alone. Prints before/after and each
    list alone.

    \b
    Example:
        kb tune course.db corpora/questions.jsonl --dry-run
        kb tune course.db corpora/questions.jsonl
        kb search course.db "what is baseflow?" --explain
    """
    from .evaluate import load_questions
    from .reports import format_tuning
    from .tune import tune as run_tune

    items = load_questions(questions)
    if not dry_run and _readonly(db):
        raise KBError(f"{db} cannot be written here; tune a copy you can write, or measure with --dry-run.")
    with open_kb(db, readonly=dry_run, write=not dry_run) as kb:
        tuning = run_tune(kb, items, record=not dry_run)
    if as_json:
        _print_json({"db": db, "recorded": not dry_run} | tuning.to_dict())
    else:
        click.echo(format_tuning(tuning, db, recorded=not dry_run))
