"""The learner copy: one self-contained file that any SQLite or Datasette opens without extensions.

It carries what a learner needs and nothing private: the sources' original files (stored by
content hash), links relative to the course folder instead of the teacher's absolute paths, no
answers log unless asked, and none of the sources left out with `--exclude`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .db import connect, transaction
from .errors import KBError
from .export_plan import SOURCE_CHOICES, Plan, PlannedSource, plan, wanted
from .filecheck import PARTIAL_SUFFIX
from .links import deep_link
from .originals import media_type, read_file_blocks, store, stored_hashes
from .store import KB, utcnow
from .types import Locator
from .vectors import BACKENDS
from .version import __version__


@dataclass
class ExportReport:
    """What `kb export` wrote, for its summary line and `--json`."""

    path: str
    size_bytes: int = 0
    sources: int = 0
    chunks: int = 0
    seconds: float = 0.0
    stored: dict[str, dict[str, int]] = field(default_factory=dict)
    """Originals stored, by source kind: {"files": n, "bytes": n} (a file shared by two sources counts once)."""
    not_stored: dict[str, dict[str, int]] = field(default_factory=dict)
    """Originals `--sources` left out, by kind: what `--sources all` would add."""
    problems: list[dict[str, str]] = field(default_factory=list)
    """Sources whose original could not be stored: {"uri", "reason"}; the copy still has their text."""
    left_out: list[dict[str, str]] = field(default_factory=list)
    """Sources not in the copy at all: {"uri", "reason"} (--exclude, or failed to ingest)."""
    web_sources: int = 0
    """Fetched sources: the copy links to their URLs (their bytes were not kept at ingest)."""
    answers: int = 0
    """Rows of the answers log in the copy (0 unless --with-log)."""
    answers_left_out: int = 0
    questions: int = 0
    """Study questions in the copy: the approved ones (none with --questions none)."""
    questions_left_out: int = 0
    """Drafts and rejected questions (all of them with --questions none): the teacher's, not the learner's."""
    private_paths: list[str] = field(default_factory=list)
    """Places in the copy where a path of this machine still appears (the course's own text, say)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "sources": self.sources,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
            "stored": self.stored,
            "not_stored": self.not_stored,
            "problems": self.problems,
            "left_out": self.left_out,
            "web_sources": self.web_sources,
            "answers": self.answers,
            "answers_left_out": self.answers_left_out,
            "questions": self.questions,
            "questions_left_out": self.questions_left_out,
            "private_paths": self.private_paths,
        }


def export(
    source: KB,
    out: str | Path,
    *,
    force: bool = False,
    sources: str = "documents",
    exclude: tuple[str, ...] | list[str] = (),
    with_log: bool = False,
    questions: str = "approved",
) -> ExportReport:
    """Write the learner copy of `source` to `out`; the KB itself is only read.

    A vec0/vss0 table makes plain Datasette fail ("no such module: vec0"), so the copy keeps only
    the canonical float32 BLOBs; kb scans them (or `kb reindex` rebuilds the index) where it runs.
    """
    started = time.monotonic()
    out = Path(out)
    if sources not in SOURCE_CHOICES:
        raise KBError(f"--sources must be one of {', '.join(SOURCE_CHOICES)}, not {sources!r}.")
    if questions not in QUESTION_CHOICES:
        raise KBError(f"--questions must be one of {', '.join(QUESTION_CHOICES)}, not {questions!r}.")
    if out.resolve() == source.path.resolve():
        raise KBError("The learner copy must be a different file from the KB.")
    if out.exists() and not out.is_file():
        # --force must never replace a device, a FIFO or a folder with the copy.
        raise KBError(f"{out} exists and is not an ordinary file; choose another name for the copy.")
    if out.exists() and not force:
        raise KBError(f"{out} already exists; pass --force to replace it.")
    if not out.parent.is_dir():
        raise KBError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    rows = source.conn.execute("SELECT id, uri, kind, title, content_hash, size, status FROM sources").fetchall()
    # refuses a pattern that matches nothing before anything is written
    the_plan = plan(rows, tuple(exclude), recorded_folders(source))
    report = ExportReport(path=str(out))
    # Written under a name kb refuses to open (and marked inside, should it be renamed), so a copy
    # cut short is never taken for a KB; the next export to the same name removes what is left.
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    for leftover in (partial, out.with_name(out.name + ".partial")):
        for name in (leftover, Path(f"{leftover}-wal"), Path(f"{leftover}-shm"), Path(f"{leftover}-journal")):
            name.unlink(missing_ok=True)
    try:
        # VACUUM INTO reads one consistent snapshot (WAL included) and writes it compacted.
        source.conn.execute("VACUUM INTO ?", (str(partial),))
        conn = connect(partial)
        try:
            conn.execute("INSERT INTO kb_meta(key, value) VALUES ('export_incomplete', '1')")
            _write_copy(conn, the_plan, sources, with_log, report, questions)
            conn.execute("DELETE FROM kb_meta WHERE key = 'export_incomplete'")
            report.private_paths = _private_paths(conn, _private_prefixes(the_plan, source.path))
            report.sources, report.chunks, report.answers = (
                conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("sources", "chunks", "answers")
            )
        finally:
            conn.close()
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    report.size_bytes = out.stat().st_size
    report.seconds = time.monotonic() - started
    return report


def recorded_folders(kb: KB) -> list[Path]:
    """The folders `kb ingest` was given (a file's folder for a file), from the roots table."""
    folders = []
    for (target,) in kb.conn.execute("SELECT target FROM roots"):
        path = Path(target)
        if not path.is_absolute():
            continue  # a URL
        folders.append(path if path.is_dir() or not path.suffix else path.parent)
    # A folder ingested inside another one adds no root of its own.
    return [f for f in set(folders) if not any(other in f.parents for other in folders)]


QUESTION_CHOICES = ("approved", "none")
"""`kb export --questions`: the study questions the teacher approved, or none."""


def _write_copy(
    conn: Any, the_plan: Plan, choice: str, with_log: bool, report: ExportReport, questions: str = "approved"
) -> None:
    with transaction(conn):
        # What the teacher ingested, and from where, is for `kb sync` on the teacher's machine only.
        conn.execute("DELETE FROM roots")
        _leave_out(conn, the_plan, report)
        _relocate(conn, the_plan)
        if with_log:
            report.answers_left_out = _scrub_log(conn, the_plan)
        else:
            report.answers_left_out = conn.execute("DELETE FROM answers").rowcount
        _keep_questions(conn, the_plan, questions, report)
        keep = {s.content_hash for s in the_plan.kept if wanted(s, choice) and s.content_hash}
        # Originals a KB already holds (stored at ingest) stay only where --sources wants them.
        stale = [h for h in stored_hashes(conn) if h not in keep]
        conn.executemany("DELETE FROM source_files WHERE sha256 = ?", [(h,) for h in stale])
        conn.execute(
            "INSERT INTO kb_meta(key, value) VALUES ('exported_at', ?), ('exported_with', ?), ('stored_sources', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (utcnow(), f"kb {__version__}", choice),
        )
    _drop_vector_index(conn)
    conn.execute("PRAGMA journal_mode = DELETE")
    # Rewrites every page: nothing deleted above (the log, left-out sources) survives in free pages.
    conn.execute("VACUUM")
    if _store_originals(conn, the_plan, choice, report):
        conn.execute("VACUUM")  # a changed file was rolled back: drop the pages it took
    check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if check != "ok":
        raise KBError(f"The copy failed SQLite's integrity check ({check}); the KB is unchanged.")


def _keep_questions(conn: Any, the_plan: Plan, choice: str, report: ExportReport) -> None:
    """Only what the teacher approved reaches learners: drafts are undecided, rejected ones may be wrong.

    Questions of a source left out went with it (ON DELETE CASCADE); the rest lose any path of
    this machine their text or checks hold, as the sources do.
    """
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'questions'").fetchone():
        return  # a KB of schema v3/v4 opened read-only (not upgraded): it has no questions
    condition = "1" if choice == "none" else "status != 'approved'"
    report.questions_left_out = conn.execute(f"DELETE FROM questions WHERE {condition}").rowcount
    # A question whose source was left out goes with it, even where foreign keys were not enforced.
    conn.execute("DELETE FROM questions WHERE source_id IS NOT NULL AND source_id NOT IN (SELECT id FROM sources)")
    _strip(conn, "questions", ("question", "answer", "quote", "locator", "checks"), _root_prefixes(the_plan))
    report.questions = conn.execute("SELECT count(*) FROM questions").fetchone()[0]


def _leave_out(conn: Any, the_plan: Plan, report: ExportReport) -> None:
    dropped = the_plan.dropped
    for item in dropped:
        report.left_out.append({"uri": item.new_uri, "reason": item.dropped_because})
    if not dropped:
        return
    # Chunks and embeddings go with their source (ON DELETE CASCADE).
    conn.executemany("DELETE FROM sources WHERE id = ?", [(s.id,) for s in dropped])
    # Rebuilt rather than 'delete'd: FTS5 keeps a deleted row's words in old segments until they merge.
    conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")


def _relocate(conn: Any, the_plan: Plan) -> None:
    """Every uri and deep link of a file source, relative to the course root instead of absolute."""
    prefixes = _root_prefixes(the_plan)
    for item in the_plan.kept:
        if item.new_uri == item.uri:
            continue
        conn.execute("UPDATE sources SET uri = ? WHERE id = ?", (item.new_uri, item.id))
        rows = conn.execute(
            "SELECT id, page, slide, start_s, end_s, heading, anchor FROM chunks WHERE source_id = ?", (item.id,)
        ).fetchall()
        conn.executemany(
            "UPDATE chunks SET link = ? WHERE id = ?",
            [(deep_link(item.new_uri, item.kind or "", Locator(*row[1:])), row[0]) for row in rows],
        )
    # What connectors wrote about a file (its error, its metadata) may name its folder.
    _strip(conn, "sources", ("error", "metadata"), prefixes)


def _scrub_log(conn: Any, the_plan: Plan) -> int:
    """Keep the answers log, minus answers that cite a source left out; relative uris in the rest."""
    dropped_uris = {s.uri for s in the_plan.dropped}
    new_uri = {s.uri: s.new_uri for s in the_plan.kept}
    links = dict(conn.execute("SELECT id, link FROM chunks").fetchall())
    removed = 0
    for answer_id, citations in conn.execute("SELECT id, citations FROM answers").fetchall():
        try:
            cited = json.loads(citations or "[]")
        except ValueError:
            cited = None
        if not isinstance(cited, list) or any(
            not isinstance(c, dict) or (c.get("source") or {}).get("uri") in dropped_uris for c in cited
        ):
            conn.execute("DELETE FROM answers WHERE id = ?", (answer_id,))
            removed += 1
            continue
        for citation in cited:
            ref = citation.get("source") if isinstance(citation.get("source"), dict) else {}
            if ref.get("uri") in new_uri:
                ref["uri"] = new_uri[ref["uri"]]
            citation["link"] = links.get(citation.get("chunk_id"), ref.get("uri"))
        text = json.dumps(cited, ensure_ascii=False)
        conn.execute("UPDATE answers SET citations = ? WHERE id = ?", (text, answer_id))
    _strip(conn, "answers", ("model", "settings", "answer", "question"), _root_prefixes(the_plan))
    return removed


def _strip(conn: Any, table: str, columns: tuple[str, ...], prefixes: list[str]) -> None:
    """Remove `prefixes` (longest first) from text columns: an absolute path becomes a relative one."""
    for column in columns:
        for prefix in prefixes:
            conn.execute(
                f"UPDATE {table} SET {column} = replace({column}, ?, '') WHERE instr({column}, ?) > 0", (prefix, prefix)
            )


def _drop_vector_index(conn: Any) -> None:
    meta = dict(conn.execute("SELECT key, value FROM kb_meta").fetchall())
    backend = meta.get("vector_backend")
    if backend in ("vec", "vss"):
        index = BACKENDS[backend](conn, int(meta["embedding_dimension"]))
        index.load()  # dropping a virtual table needs its module
        index.drop()
        conn.execute(
            "INSERT INTO kb_meta(key, value) VALUES ('vector_index_state', 'absent') "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        )


def _store_originals(conn: Any, the_plan: Plan, choice: str, report: ExportReport) -> bool:
    """Store each wanted original once, read from where it was ingested; True if any was rolled back."""
    rolled_back = False
    with transaction(conn):
        stored = stored_hashes(conn)
        counted: set[str] = set()
        for item in the_plan.kept:
            if item.is_web:
                report.web_sources += 1
                continue
            if item.status not in ("ok", "empty") or not item.content_hash:
                continue
            kind = item.kind or "other"
            if not wanted(item, choice):
                if item.content_hash not in stored:
                    _add(report.not_stored, kind, item.size or 0)
                continue
            if item.content_hash in stored:
                # The same bytes under another name, or stored in the KB already: counted once.
                if item.content_hash not in counted:
                    counted.add(item.content_hash)
                    _add(report.stored, kind, item.size or 0)
                continue
            problem = _store_one(conn, item)
            if problem is None:
                stored.add(item.content_hash)
                counted.add(item.content_hash)
                _add(report.stored, kind, item.size or 0)
            else:
                rolled_back = rolled_back or problem.startswith("changed")
                report.problems.append({"uri": item.new_uri, "reason": problem})
    return rolled_back


def _store_one(conn: Any, item: PlannedSource) -> str | None:
    """Store one original; the reason it could not be, or None."""
    if item.path is None:
        return "not stored: its original is not on this machine"
    if not item.path.is_file():
        return f"not stored: there is no file at {item.path} any more"
    conn.execute("SAVEPOINT original")
    try:
        digest, _ = store(conn, item.content_hash, read_file_blocks(item.path), media_type(item.name))
    except OSError as exc:
        conn.execute("ROLLBACK TO original")
        conn.execute("RELEASE original")
        return f"not stored: {item.path} cannot be read ({exc.strerror or exc})"
    if digest != item.content_hash:
        conn.execute("ROLLBACK TO original")
        conn.execute("RELEASE original")
        return f"changed since it was ingested, so not stored; run `kb ingest` on {item.path} again to store it"
    conn.execute("RELEASE original")
    return None


def _add(totals: dict[str, dict[str, int]], kind: str, size: int) -> None:
    entry = totals.setdefault(kind, {"files": 0, "bytes": 0})
    entry["files"] += 1
    entry["bytes"] += size


def _root_prefixes(the_plan: Plan) -> list[str]:
    """The course roots as the KB writes them (file URI, path), longest first: what relocating removes."""
    prefixes = set()
    for path in the_plan.roots:
        root = str(path).rstrip("/")
        if len(root) > 1:
            prefixes.update({f"file://{quote(root)}/", f"{root}/", root})
    return sorted(prefixes, key=len, reverse=True)


def _private_prefixes(the_plan: Plan, kb_path: Path) -> list[str]:
    """The absolute paths of this machine that the copy must not carry: the root, the KB's folder, home."""
    prefixes = set(_root_prefixes(the_plan))
    prefixes.add(str(kb_path.resolve().parent).rstrip("/") + "/")
    home = os.path.expanduser("~").rstrip("/")
    if len(home) > 1:
        prefixes.add(home + "/")
    return sorted((p for p in prefixes if len(p) > 3), key=len, reverse=True)


def _private_paths(conn: Any, prefixes: list[str]) -> list[str]:
    """table.column places of the copy whose text still holds one of `prefixes`."""
    found = []
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' "
            "AND name NOT LIKE 'chunks_fts%' AND name NOT LIKE 'sqlite_%' AND name != 'source_file_blocks'"
        )
    ]
    for table in tables:
        columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")') if r[2].upper() in ("TEXT", "")]
        for column in columns:
            for prefix in prefixes:
                hits = conn.execute(
                    f'SELECT count(*) FROM "{table}" WHERE instr("{column}", ?) > 0', (prefix,)
                ).fetchone()[0]
                if hits:
                    found.append(f"{table}.{column} ({hits} rows hold {prefix})")
                    break
    return found
