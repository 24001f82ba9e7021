"""Plain-text renderings of ingest reports, hits and KB info for the terminal."""

from __future__ import annotations

import sys
import textwrap
import time
from typing import Any

import click

from .ingest import IngestResult
from .types import Answer, Hit, Locator, SourceReport


def locator_label(locator: Locator) -> str:
    parts = []
    if locator.page is not None:
        parts.append(f"p. {locator.page}")
    if locator.slide is not None:
        parts.append(f"slide {locator.slide}")
    if locator.start_s is not None:
        parts.append(
            _timestamp(locator.start_s) + (f"-{_timestamp(locator.end_s)}" if locator.end_s is not None else "")
        )
    if locator.heading:
        parts.append(f"\u00a7 {locator.heading}")
    return ", ".join(parts)


def _timestamp(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _short_uri(uri: str) -> str:
    if uri.startswith("file://"):
        from pathlib import Path
        from urllib.parse import unquote, urlparse

        path = Path(unquote(urlparse(uri).path))
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)
    return uri


def format_ingest_report(result: IngestResult) -> str:
    lines = []
    listed = [r for r in result.reports if r.status != "skipped"]
    width = max((len(_short_uri(r.uri)) for r in listed), default=10)
    width = min(width, 60)
    for r in listed:
        pages = f"{r.pages} pages" if r.pages else ""
        detail = r.reason or ""
        lines.append(f"{r.status:<9} {_short_uri(r.uri):<{width}} {r.chunks:>5} chunks {pages:>10}  {detail}".rstrip())
    skipped = [r for r in result.reports if r.status == "skipped"]
    if skipped:
        suffixes: dict[str, int] = {}
        for r in skipped:
            name = r.uri.rsplit("/", 1)[-1]
            suffix = "." + name.rsplit(".", 1)[-1] if "." in name else "(none)"
            suffixes[suffix] = suffixes.get(suffix, 0) + 1
        kinds = ", ".join(f"{s} \u00d7{n}" for s, n in sorted(suffixes.items()))
        lines.append(f"skipped   {len(skipped)} files no connector reads ({kinds})")
    totals = result.totals()
    summary = ", ".join(f"{totals[k]} {k}" for k in ("ok", "unchanged", "empty", "error") if totals.get(k))
    lines.append(f"Done: {summary or 'nothing to do'}; {totals['chunks']} new chunks.")
    return "\n".join(lines)


def format_hits(hits: list[Hit]) -> str:
    blocks = []
    for hit in hits:
        where = locator_label(hit.locator)
        head = f"[{hit.rank}] {hit.source.title}" + (f" ({where})" if where else "")
        body = textwrap.shorten(" ".join(hit.text.split()), width=300, placeholder=" \u2026")
        blocks.append(f"{head}\n    {body}\n    {hit.link or hit.source.uri}")
    return "\n\n".join(blocks)


def format_info(data: dict[str, Any]) -> str:
    meta = data["meta"]
    counts = data["counts"]
    lines = [
        f"{data['path']}  ({data['size_bytes'] / 2**20:.1f} MB, schema v{meta.get('schema_version')}, "
        f"{meta.get('created_with', '?')})",
        f"embedding model: {meta.get('embedding_model', '(none yet)')}"
        + (
            f" ({meta.get('embedding_dimension')}-d), vector index: {meta.get('vector_backend')}"
            if "embedding_model" in meta
            else ""
        ),
        f"{counts['sources']} sources, {counts['chunks']} chunks, {counts['answers']} answers logged",
    ]
    for s in data["sources"]:
        reason = f"  {s['error']}" if s["error"] else ""
        lines.append(f"  {s['status']:<6} {s['chunks']:>5} chunks  {s['title'] or ''}  {_short_uri(s['uri'])}{reason}")
    return "\n".join(lines)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.1f} KB"


def _by_kind(totals: dict[str, dict[str, int]]) -> str:
    return ", ".join(
        f"{kind} {_size(t['bytes'])} ({t['files']} file{'s' if t['files'] != 1 else ''})"
        for kind, t in sorted(totals.items())
    )


def format_export(report: Any) -> tuple[str, list[str]]:
    """`kb export`'s summary for stdout, and its warnings for stderr."""
    lines = [
        f"Wrote {report.path} ({_size(report.size_bytes)}, {report.sources} sources, {report.chunks} chunks) "
        f"in {report.seconds:.1f} s."
    ]
    stored = sum(t["bytes"] for t in report.stored.values())
    if report.stored:
        lines.append(f"Originals stored ({_size(stored)}): {_by_kind(report.stored)}.")
    if report.not_stored:
        lines.append(f"Not stored (--sources all adds them): {_by_kind(report.not_stored)}.")
    if report.web_sources:
        lines.append(f"Linked by URL: {report.web_sources} web sources.")
    left_out = [f"{item['uri']} ({item['reason']})" for item in report.left_out]
    if left_out:
        lines.append("Left out: " + "; ".join(left_out) + ".")
    if report.answers:
        lines.append(f"Kept the answers log: {report.answers} answers.")
    elif report.answers_left_out:
        lines.append(f"Left out the answers log ({report.answers_left_out} answers; --with-log keeps it).")
    warnings = [f"{p['uri']}: {p['reason']}." for p in report.problems]
    warnings += [f"the copy still holds a path of this machine in {place}." for place in report.private_paths]
    return "\n".join(lines), warnings


class ProgressPrinter:
    """A one-line progress display on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.count = 0

    def __enter__(self) -> ProgressPrinter:
        return self

    def __call__(self, report: SourceReport) -> None:
        if report.status == "skipped":
            return
        self.count += 1
        if not self.enabled:
            return
        name = report.uri.rsplit("/", 1)[-1][:50]
        click.echo(f"\r\033[K[{self.count}] {report.status:<9} {name}", file=sys.stderr, nl=False)

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self.count:
            click.echo("\r\033[K", file=sys.stderr, nl=False)


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

    def stage(self, name: str) -> None:
        if not self.status:
            return
        now = time.monotonic()
        done = f" ({self._last} {now - self._stage_started:.1f} s)" if self._last else ""
        self._last, self._stage_started = STAGES.get(name, name), now
        click.echo(f"\r\033[K{self._last} …{done}", file=sys.stderr, nl=False)
        self._shown = True

    def _clear_status(self) -> None:
        if self._shown:
            click.echo("\r\033[K", file=sys.stderr, nl=False)
            self._shown = False

    def token(self, piece: str) -> None:
        if self.stream:
            self._clear_status()
            self.streamed.append(piece)
            click.echo(piece, nl=False)

    def finish(self, answer: Answer) -> None:
        self._clear_status()
        for warning in answer.warnings:
            click.echo(f"kb: {warning}", err=True)
        streamed = "".join(self.streamed).strip()
        if streamed:
            click.echo()
        if answer.abstained:
            click.echo(answer.text)
            if answer.nearest:
                click.echo("\nNearest sources:")
                for hit in answer.nearest:
                    where = locator_label(hit.locator)
                    click.echo(
                        f"  - {hit.source.title}" + (f" ({where})" if where else "") + f"  {hit.link or hit.source.uri}"
                    )
            return
        if not streamed or _plain(streamed) != _plain(answer.text):
            if streamed:
                note = (
                    "kb: the model's answer did not hold up against the evidence; here is what the sources say:"
                    if answer.origin == "extract"
                    else "kb: checked answer (unsupported sentences and citations removed):"
                )
                click.echo("\n" + note)
            click.echo(answer.text)
        if self.status:
            took = answer.timings.get("total_s", time.monotonic() - self._started)
            click.echo(f"kb: answered in {took:.1f} s", file=sys.stderr)
        click.echo("\nReferences:")
        for piece in answer.cited:
            where = locator_label(piece.hit.locator)
            click.echo(
                f"  [{piece.key}] {piece.hit.source.title}"
                + (f", {where}" if where else "")
                + f"\n      {piece.hit.link or piece.hit.source.uri}"
            )


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
    from .grounding import citations_inside

    return " ".join(citations_inside(text).split())


def format_eval(report: dict[str, Any]) -> str:
    lines = [f"{'id':<6} {'ans':<4} {'rank':>4} {'kw':>3} {'cites':>5} {'abst':>4} {'origin':<8} {'s':>5}  answer"]
    for r in report["results"]:
        rank = str(r["rank"]) if r["rank"] else "-"
        kw = {True: "yes", False: "no", None: ""}[r["keyword_hit"]]
        answer = textwrap.shorten(r["answer"], width=60, placeholder="\u2026")
        lines.append(
            f"{r['id']:<6} {'yes' if r['answerable'] else 'no':<4} {rank:>4} {kw:>3} "
            f"{r['valid_citations']}/{r['citations']:<3} {'yes' if r['abstained'] else 'no':>4} "
            f"{r['origin']:<8} {r['seconds']:>5.1f}  {answer}"
        )
    lines.append("")
    for key, value in report["summary"].items():
        lines.append(f"{key:<26} {'-' if value is None else value}")
    return "\n".join(lines)
