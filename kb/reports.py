"""Plain-text renderings of ingest reports, hits and KB info for the terminal."""

from __future__ import annotations

import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import click

from .ingest import IngestResult
from .progress import plural
from .terminal import printable
from .text import citations_inside, clock, duration
from .types import Answer, Hit, Locator


def locator_label(locator: Locator) -> str:
    parts = []
    if locator.page is not None:
        parts.append(f"p. {locator.page}")
    if locator.slide is not None:
        parts.append(f"slide {locator.slide}")
    if locator.start_s is not None:
        parts.append(clock(locator.start_s) + (f"-{clock(locator.end_s)}" if locator.end_s is not None else ""))
    if locator.heading:
        parts.append(f"\u00a7 {printable(locator.heading)}")
    return ", ".join(parts)


def _short_uri(uri: str) -> str:
    if uri.startswith("file://"):
        from pathlib import Path
        from urllib.parse import unquote, urlparse

        path = Path(unquote(urlparse(uri).path))
        try:
            return printable(path.relative_to(Path.cwd()))
        except ValueError:
            return printable(path)
    return printable(uri)


STATUS_ORDER = ("ok", "unchanged", "restored", "renamed", "duplicate", "empty", "missing", "removed", "error")
STATUS_WORDS = {"error": ("error", "errors"), "duplicate": ("duplicate", "duplicates")}
"""How a count of each status reads in the closing line: "1 error", "2 errors", "3 ok", "2 missing"."""


def _counted(status: str, n: int) -> str:
    """A count of sources of one status, as the reports say it ("1 error", "2 errors", "3 ok")."""
    return f"{n} {STATUS_WORDS.get(status, (status, status))[n != 1]}"


def format_ingest_report(result: IngestResult) -> str:
    lines = []
    listed = [r for r in result.reports if r.status not in ("skipped", "excluded")]
    width = min(max((len(_short_uri(r.uri)) for r in listed), default=10), 60)
    for r in listed:
        pages = plural(r.pages, "page") if r.pages else ""
        chunks = plural(r.chunks, "chunk")
        detail = printable("; ".join(filter(None, (r.reason, r.note))))
        if r.flags:
            detail = "; ".join(filter(None, (detail, flag_note(r.flags))))
        lines.append(f"{r.status:<9} {_short_uri(r.uri):<{width}} {chunks:>11} {pages:>10}  {detail}".rstrip())
    for status, what in (("skipped", "kb does not read"), ("excluded", "left out by --exclude or .kbignore")):
        group = [r for r in result.reports if r.status == status]
        if group:
            suffixes: dict[str, int] = {}
            for r in group:
                name = r.uri.rsplit("/", 1)[-1]
                suffix = printable("." + name.rsplit(".", 1)[-1]) if "." in name else "(no suffix)"
                suffixes[suffix] = suffixes.get(suffix, 0) + 1
            kinds = ", ".join(f"{s} \u00d7{n}" for s, n in sorted(suffixes.items()))
            lines.append(f"{status:<9} {plural(len(group), 'file')} {what} ({kinds})")
    totals = result.totals()
    missing = totals.get("missing", 0)
    if missing:
        lines.append(
            f"{plural(missing, 'source is', 'sources are')} no longer where {'it was' if missing == 1 else 'they were'}"
            " and still in the KB: `kb ingest --prune` with the same folders, or `kb sync`, takes "
            f"{'it' if missing == 1 else 'them'} out."
        )
    flagged = [r for r in listed if r.flags]
    if flagged:
        names = ", ".join(_short_uri(r.uri) for r in flagged[:5]) + (", ..." if len(flagged) > 5 else "")
        lines.append(
            f"{plural(len(flagged), 'source holds', 'sources hold')} instruction-like text or image/link markup "
            f"({names}): it stays searchable and chunks.flags marks it; answers never carry its images or links."
        )
    counted = sum(totals.get(k, 0) for k in STATUS_ORDER)
    parts = [_counted(k, totals[k]) for k in STATUS_ORDER if totals.get(k)]
    summary = f"{plural(counted, 'source')}: " + ", ".join(parts) if parts else "nothing to do"
    lines.append(f"Done in {duration(result.seconds)}: {summary}; {plural(totals['chunks'], 'new chunk')}.")
    return "\n".join(lines)


def course_line(course: Any) -> str:
    """One course of `kb ingest-many` (a kb.many.CourseResult): its status, name, file and counts,
    or why it could not run; the sources that failed below it."""
    data = course.to_dict()
    where = f"{printable(data['course'])}  {_short_uri(Path(data['db']).as_uri()) if data['db'] else '-'}"
    if course.result is None:
        return f"error  {where}  {printable(data['reason'] or 'failed')}"
    counts = data["sources"]
    parts = [_counted(k, counts.get(k, 0)) for k in ("ok", "unchanged")]
    parts += [_counted(k, counts[k]) for k in STATUS_ORDER[2:] if counts.get(k)]
    line = f"{data['status']:<6} {where}  {', '.join(parts)}; {plural(data['chunks'], 'new chunk')} in " + duration(
        data["seconds"]
    )
    for error in data["errors"][:5]:
        line += f"\n         {_short_uri(error['uri'])}: {printable(error['reason'] or 'error')}"
    if len(data["errors"]) > 5:
        line += f"\n         ... and {len(data['errors']) - 5} more (kb info {printable(data['db'])} lists them)"
    return line


def format_many_report(courses: list[Any], seconds: float) -> str:
    """`kb ingest-many`'s report: a line per course, then how many courses failed."""
    failed = sum(1 for c in courses if c.failed)
    lines = [course_line(c) for c in courses]
    ok = len(courses) - failed
    lines.append(f"Done in {duration(seconds)}: {plural(len(courses), 'course')}, {ok} ok, {failed} failed.")
    return "\n".join(lines)


def format_hits(hits: list[Hit], explain: bool = False) -> str:
    blocks = []
    for hit in hits:
        where = locator_label(hit.locator)
        head = f"[{hit.rank}] {printable(hit.source.title)}" + (f" ({where})" if where else "")
        body = printable(textwrap.shorten(" ".join(hit.text.split()), width=300, placeholder=" \u2026"))
        block = f"{head}\n    {body}\n    {printable(hit.link or hit.source.uri)}"
        if explain:
            ranks = hit.explain()
            block += (
                f"\n    keyword rank {ranks['keyword_rank'] or '-'}, vector rank {ranks['vector_rank'] or '-'}, "
                f"fused score {ranks['fused_score']:.6f}"
            )
        blocks.append(block)
    return "\n\n".join(blocks)


def explain_fusion(fusion: Any, meta: dict[str, str] | None = None) -> str:
    """One line saying how the two lists were fused (the settings the KB records, and when kb tune
    chose them)."""
    tuned = ""
    if meta and "fusion_tuned_at" in meta:
        tuned = f" Tuned by kb tune on {printable(meta.get('fusion_tuned_questions', '?'))} questions"
        tuned += f" ({printable(meta['fusion_tuned_at'])})."
    return f"Fusion: {fusion.describe()}; {fusion.depth} candidates from each list.{tuned}\n"


def format_tuning(tuning: Any, db: str, recorded: bool) -> str:
    """kb tune's table: hit@1, hit@5 and MRR before, tuned, and for each list alone."""
    settings = {
        "before": tuning.before.brief(),
        "tuned": tuning.chosen.brief(),
        "keywords alone": "BM25",
        "vectors alone": "nearest neighbours",
    }
    lines = [
        f"{printable(db)}: {plural(tuning.n, 'question')} scored, {tuning.tried} fusion settings tried.",
        f"{'':<16}{'setting':<28}{'hit@1':>7}{'hit@5':>7}{'MRR':>7}",
    ]
    for label, setting in settings.items():
        s = tuning.table[label]
        lines.append(f"{label:<16}{setting:<28}{s.hit1:>7.3f}{s.hit5:>7.3f}{s.mrr:>7.3f}")
    if tuning.not_found:
        shown = ", ".join(printable(i) for i in tuning.not_found[:10]) + (", ..." if len(tuning.not_found) > 10 else "")
        count = plural(len(tuning.not_found), "question")
        lines.append(f"Left out: {count} whose expected passage is not in the KB ({shown}).")
    if tuning.passed_over is not None:
        lines.append(
            f"The best fusion ({tuning.passed_over.brief()}) beat the better list alone on too few questions "
            "to trust: that list alone was chosen."
        )
    if not tuning.changed:
        lines.append("No setting did better than the current one: it stays, and nothing was written.")
    elif recorded:
        lines.append(f"Recorded in {printable(db)}: kb search and kb ask now fuse this way.")
    else:
        lines.append("Dry run: nothing recorded.")
    return "\n".join(lines)


def format_info(data: dict[str, Any]) -> str:
    # Everything in a KB's metadata and rows was written by whoever made the file: printed escaped.
    meta = {key: printable(value) for key, value in data["meta"].items()}
    counts = data["counts"]
    path = printable(data["path"])
    lines = [
        f"{path}  ({data['size_bytes'] / 2**20:.1f} MB, schema v{meta.get('schema_version')}, "
        f"{meta.get('created_with', '?')})",
        f"embedding model: {meta.get('embedding_model', '(none yet)')}"
        + (
            f" ({meta.get('embedding_dimension')}-d), vector index: {meta.get('vector_backend')}"
            if "embedding_model" in meta
            else ""
        ),
        f"{plural(counts['sources'], 'source')}{_by_status(data['sources'])}, {plural(counts['chunks'], 'chunk')}, "
        f"{plural(counts['answers'], 'answer')} logged",
    ]
    if not counts["chunks"]:
        lines.append(f"The KB is empty: add sources with `kb ingest {path} FOLDER-OR-FILE...`.")
    for s in data["sources"]:
        reason = f"  {printable(s['error'])}" if s["error"] else ""
        if s["status"] == "duplicate" and s.get("duplicate_of"):
            reason = f"  duplicate of {_short_uri(s['duplicate_of'])}"
        if s.get("flags"):
            reason += f"  {flag_note(s['flags'])}"
        lines.append(
            f"  {printable(s['status']):<9} {plural(s['chunks'], 'chunk'):>11}  {printable(s['title'] or '')}  "
            f"{_short_uri(s['uri'])}{reason}"
        )
    if any(s["status"] == "missing" for s in data["sources"]):
        lines.append("Missing sources are gone from their folder or site; `kb sync` takes them out.")
    if data.get("roots"):
        lines.append("Built from (`kb sync` reads these again): " + ", ".join(printable(r) for r in data["roots"]))
    return "\n".join(lines)


def flag_note(flags: dict[str, int]) -> str:
    """What the report says of a source holding text that addresses an AI, or markup (kb/injection.py)."""
    parts = []
    if flags.get("instructions"):
        parts.append(f"instruction-like text in {plural(flags['instructions'], 'chunk')}")
    if flags.get("markup"):
        parts.append(f"image/link markup in {plural(flags['markup'], 'chunk')}")
    return ", ".join(parts)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


def _by_kind(totals: dict[str, dict[str, int]]) -> str:
    return ", ".join(
        f"{printable(kind)} {_size(t['bytes'])} ({t['files']} file{'s' if t['files'] != 1 else ''})"
        for kind, t in sorted(totals.items())
    )


def format_export(report: Any) -> tuple[str, list[str]]:
    """`kb export`'s summary for stdout, and its warnings for stderr."""
    lines = [
        f"Wrote {printable(report.path)} ({_size(report.size_bytes)}, {report.sources} sources, "
        f"{report.chunks} chunks) in {report.seconds:.1f} s."
    ]
    stored = sum(t["bytes"] for t in report.stored.values())
    if report.stored:
        lines.append(f"Originals stored ({_size(stored)}): {_by_kind(report.stored)}.")
    if report.not_stored:
        lines.append(f"Not stored (--sources all adds them): {_by_kind(report.not_stored)}.")
    if report.web_sources:
        lines.append(f"Linked by URL: {report.web_sources} web sources.")
    left_out = [f"{printable(item['uri'])} ({printable(item['reason'])})" for item in report.left_out]
    if left_out:
        lines.append("Left out: " + "; ".join(left_out) + ".")
    if report.answers:
        lines.append(f"Kept the answers log: {report.answers} answers.")
    elif report.answers_left_out:
        lines.append(f"Left out the answers log ({report.answers_left_out} answers; --with-log keeps it).")
    if report.questions or report.questions_left_out:
        lines.append(
            f"Study questions: {report.questions} approved ones in the copy, "
            f"{report.questions_left_out} others left out."
        )
    warnings = [f"{printable(p['uri'])}: {printable(p['reason'])}." for p in report.problems]
    warnings += [
        f"the copy still holds a path of this machine in {printable(place)}." for place in report.private_paths
    ]
    return "\n".join(lines), warnings


def _by_status(sources: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for s in sources:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    if set(counts) <= {"ok"}:
        return ""
    return " (" + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ")"


STAGES = {"retrieving": "finding passages", "judging": "checking the evidence", "writing": "writing"}


class AnswerPrinter:
    """Streams the model's words to the terminal, then prints the checked answer and its references.

    While no word has come yet, a status line on stderr says what the engine is doing and for how
    long, so a slow machine never looks stuck.
    """

    def __init__(self, stream: bool, status: bool = False):
        self.stream = stream
        self.status = status
        self.streamed: list[str] = []
        self._started = time.monotonic()
        self._stage_started = self._started
        self._shown = False
        self._last: str | None = None
        self._pending = ""

    def stage(self, name: str) -> None:
        if not self.status:
            return
        now = time.monotonic()
        done = f" ({self._last} {now - self._stage_started:.1f} s)" if self._last else ""
        self._last, self._stage_started = STAGES.get(name, name), now
        click.echo(f"\r\033[K{printable(self._last)} …{done}", file=sys.stderr, nl=False)
        self._shown = True

    def _clear_status(self) -> None:
        if self._shown:
            click.echo("\r\033[K", file=sys.stderr, nl=False)
            self._shown = False

    def interrupted(self) -> None:
        """Ctrl-C: the status line cleared, and one line saying so."""
        self._clear_status()
        if self.streamed:
            click.echo()
        click.echo("kb: interrupted.", err=True)

    def token(self, piece: str) -> None:
        if self.stream:
            self._clear_status()
            self.streamed.append(piece)
            self._pending += piece
            # Shown a word at a time, so that markup or a URL the model writes is held back whole
            # (kb/injection.py); and what is shown is never a terminal control.
            words = re.split(r"(\s+)", self._pending)
            self._pending = words.pop() if words else ""
            click.echo(printable("".join(_shown_word(w) for w in words), newlines=True), nl=False)

    def finish(self, answer: Answer) -> None:
        from .injection import clean_answer

        self._clear_status()
        if self._pending:
            click.echo(printable(_shown_word(self._pending), newlines=True), nl=False)
            self._pending = ""
        links = [e.hit.link for e in answer.cited] + [h.link for h in answer.nearest]
        text = clean_answer(answer.text, links)
        for warning in answer.warnings:
            click.echo(f"kb: {printable(warning)}", err=True)
        streamed = "".join(self.streamed).strip()
        if streamed:
            click.echo()
        if answer.abstained:
            click.echo(printable(text, newlines=True))
            if answer.nearest:
                click.echo("\nNearest sources:")
                for hit in answer.nearest:
                    where = locator_label(hit.locator)
                    click.echo(
                        f"  - {printable(hit.source.title)}"
                        + (f" ({where})" if where else "")
                        + f"  {printable(hit.link or hit.source.uri)}"
                    )
            return
        if not streamed or _plain(streamed) != _plain(text):
            if streamed:
                note = (
                    "kb: the model's answer did not hold up against the evidence; here is what the sources say:"
                    if answer.origin == "extract"
                    else "kb: checked answer (unsupported sentences and citations removed):"
                )
                click.echo("\n" + note)
            click.echo(printable(text, newlines=True))
        if self.status:
            took = answer.timings.get("total_s", time.monotonic() - self._started)
            click.echo(f"kb: answered in {took:.1f} s", file=sys.stderr)
        click.echo("\nReferences:")
        for piece in answer.cited:
            where = locator_label(piece.hit.locator)
            click.echo(
                f"  [{piece.key}] {printable(piece.hit.source.title)}"
                + (f", {where}" if where else "")
                + f"\n      {printable(piece.hit.link or piece.hit.source.uri)}"
            )


_HELD_BACK = re.compile(r"!\[|\]\(|<|>|://|www\.", re.I)


def _shown_word(word: str) -> str:
    """A streamed word as the terminal shows it: markup and URLs are held back (the checked answer follows)."""
    return "" if _HELD_BACK.search(word) else word


def format_models(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'name':<20} {'size':>8} {'RAM':>6}  {'tier':<11} {'judges':<6}  licence; origin"]
    for r in rows:
        name = r["name"] + (" *" if r["default"] else "")
        size = f"{r['size_bytes'] / 1e9:.2f} GB" if r["size_bytes"] >= 1e9 else f"{r['size_bytes'] / 1e6:.0f} MB"
        state = "" if r["installed"] else "  (not installed)"
        judges = "yes" if r["judges_evidence"] else "no"
        lines.append(
            f"{name:<20} {size:>8} {r['ram_gb']:>4.1f} GB  {r['tier']:<11} {judges:<6}  "
            f"{r['licence']}; {r['origin']}{state}"
        )
    lines.append("* the default. Models that do not judge answer from the retrieved passages only.")
    return "\n".join(lines)


def _plain(text: str) -> str:
    """Text compared for "did the checks change it": citation placement and spacing do not count."""
    return " ".join(citations_inside(text).split())


def format_eval(report: dict[str, Any]) -> str:
    lines = [f"{'id':<6} {'ans':<4} {'rank':>4} {'kw':>3} {'cites':>5} {'abst':>4} {'origin':<8} {'s':>5}  answer"]
    for r in report["results"]:
        rank = str(r["rank"]) if r["rank"] else "-"
        kw = {True: "yes", False: "no", None: ""}[r["keyword_hit"]]
        answer = printable(textwrap.shorten(r["answer"], width=60, placeholder="\u2026"))
        lines.append(
            f"{printable(r['id']):<6} {'yes' if r['answerable'] else 'no':<4} {rank:>4} {kw:>3} "
            f"{r['valid_citations']}/{r['citations']:<3} {'yes' if r['abstained'] else 'no':>4} "
            f"{r['origin']:<8} {r['seconds']:>5.1f}  {answer}"
        )
    lines.append("")
    for key, value in report["summary"].items():
        lines.append(f"{key:<26} {'-' if value is None else value}")
    return "\n".join(lines)
