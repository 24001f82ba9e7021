"""Plain-text renderings of ingest reports, hits and KB info for the terminal."""

from __future__ import annotations

import textwrap
from typing import Any

import click

from .ingest import IngestResult
from .progress import plural
from .types import Answer, Hit, Locator


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


STATUS_ORDER = ("ok", "unchanged", "restored", "renamed", "duplicate", "empty", "missing", "removed", "error")
STATUS_WORDS = {"error": ("error", "errors"), "duplicate": ("duplicate", "duplicates")}
"""How a count of each status reads in the closing line: "1 error", "2 errors", "3 ok", "2 missing"."""


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def format_ingest_report(result: IngestResult) -> str:
    lines = []
    listed = [r for r in result.reports if r.status not in ("skipped", "excluded")]
    width = min(max((len(_short_uri(r.uri)) for r in listed), default=10), 60)
    for r in listed:
        pages = plural(r.pages, "page") if r.pages else ""
        chunks = plural(r.chunks, "chunk")
        detail = "; ".join(filter(None, (r.reason, r.note)))
        lines.append(f"{r.status:<9} {_short_uri(r.uri):<{width}} {chunks:>11} {pages:>10}  {detail}".rstrip())
    for status, what in (("skipped", "kb does not read"), ("excluded", "left out by --exclude or .kbignore")):
        group = [r for r in result.reports if r.status == status]
        if group:
            suffixes: dict[str, int] = {}
            for r in group:
                name = r.uri.rsplit("/", 1)[-1]
                suffix = "." + name.rsplit(".", 1)[-1] if "." in name else "(no suffix)"
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
    counted = sum(totals.get(k, 0) for k in STATUS_ORDER)
    parts = [f"{totals[k]} {STATUS_WORDS.get(k, (k, k))[totals[k] != 1]}" for k in STATUS_ORDER if totals.get(k)]
    summary = f"{plural(counted, 'source')}: " + ", ".join(parts) if parts else "nothing to do"
    lines.append(f"Done in {duration(result.seconds)}: {summary}; {plural(totals['chunks'], 'new chunk')}.")
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
        f"{plural(counts['sources'], 'source')}{_by_status(data['sources'])}, {plural(counts['chunks'], 'chunk')}, "
        f"{plural(counts['answers'], 'answer')} logged",
    ]
    if not counts["chunks"]:
        lines.append(f"The KB is empty: add sources with `kb ingest {data['path']} FOLDER-OR-FILE...`.")
    for s in data["sources"]:
        reason = f"  {s['error']}" if s["error"] else ""
        if s["status"] == "duplicate" and s.get("duplicate_of"):
            reason = f"  duplicate of {_short_uri(s['duplicate_of'])}"
        lines.append(
            f"  {s['status']:<9} {plural(s['chunks'], 'chunk'):>11}  {s['title'] or ''}  {_short_uri(s['uri'])}{reason}"
        )
    if any(s["status"] == "missing" for s in data["sources"]):
        lines.append("Missing sources are gone from their folder or site; `kb sync` takes them out.")
    if data.get("roots"):
        lines.append("Built from (`kb sync` reads these again): " + ", ".join(data["roots"]))
    return "\n".join(lines)


def _by_status(sources: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for s in sources:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    if set(counts) <= {"ok"}:
        return ""
    return " (" + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + ")"


class AnswerPrinter:
    """Streams the model's words to the terminal, then prints the checked answer and its references."""

    def __init__(self, stream: bool):
        self.stream = stream
        self.streamed: list[str] = []

    def token(self, piece: str) -> None:
        if self.stream:
            self.streamed.append(piece)
            click.echo(piece, nl=False)

    def finish(self, answer: Answer) -> None:
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
        if not streamed or " ".join(streamed.split()) != answer.text:
            if streamed:
                note = (
                    "kb: the model's answer did not hold up against the evidence; here is what the sources say:"
                    if answer.origin == "extract"
                    else "kb: checked answer (unsupported sentences and citations removed):"
                )
                click.echo("\n" + note)
            click.echo(answer.text)
        click.echo("\nReferences:")
        for piece in answer.cited:
            where = locator_label(piece.hit.locator)
            click.echo(
                f"  [{piece.key}] {piece.hit.source.title}"
                + (f", {where}" if where else "")
                + f"\n      {piece.hit.link or piece.hit.source.uri}"
            )


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
