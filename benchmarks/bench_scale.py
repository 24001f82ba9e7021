"""Ingest at institution scale (issue 16): a generated corpus of 2,000 documents through the local
executor and through Ray at 1 and 2 CPUs, and what that says about 10,000 lecture hours and 100,000 PDFs.

    .venv/bin/python benchmarks/bench_scale.py [--docs 2000] [--audio 24] [--only local,ray1,ray2] [--json out.json]

The corpus (cached under ~/.cache/kb/bench/scale) is mostly Markdown and plain text cut from real prose
(the Python documentation's sources in /usr/share/doc/python3*-doc, when installed, and the sample
course), shuffled; about one document in twelve is a PDF (fpdf2, one to three pages); a few dozen are
short clips spoken by espeak-ng. Every run ingests it into a new KB with the default embedder, and prints
documents/s, chunks/s and the driver's writer throughput: the time spent inside KB.write_source only
(wrapped here, kb itself unchanged), as chunk rows/s, each row with its vector and index entries.
The local run also times each stage per document kind, from the stage events ingest reports; the
projection at the end scales those per-stage costs. Wall times on a shared machine stretch with its
load, so the load average is printed beside every run, and the Ray runs are given as ratios to the
local run measured in the same process.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Spinning BLAS threads on a busy machine cost more than they save (DESIGN.md, turn 2).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CACHE = Path.home() / ".cache" / "kb" / "bench" / "scale"
CORPUS_VERSION = 2
LECTURE_HOURS = 10_000
PDFS = 100_000
PAGES_PER_PDF = 20
"""Assumed for the projection: a course PDF (lecture notes, a reader chapter) is longer than the
generated ones, so the PDF costs are measured per page and scaled to this many pages."""
WORKERS = (10, 100)


# -- the corpus --------------------------------------------------------------------------------------


def prose() -> list[str]:
    """Paragraphs of real prose: the Python documentation's reST sources (markup stripped) and the sample course."""
    paragraphs: list[str] = []
    sources = sorted(glob.glob("/usr/share/doc/python3*-doc/html/_sources/**/*.rst.txt", recursive=True))
    for path in [*sources, *map(str, sorted((ROOT / "corpora" / "hydrology").glob("*.md")))]:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        for block in re.split(r"\n\s*\n", text):
            if re.search(r"^\s|^\.\.|::$|^>>>|^[=\-~^*#]{3,}", block, re.M):
                continue  # code, directives, headings, tables
            block = re.sub(r":[\w:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", block)  # :func:`len` -> len
            block = re.sub(r"`+([^`]*?)(?:\s*<[^>]*>)?`+_?", r"\1", block)
            block = re.sub(r"\*\*?([^*]+)\*\*?", r"\1", block)
            words = block.split()
            if len(words) >= 40 and sum(w.isalpha() for w in words) > 0.6 * len(words):
                paragraphs.append(" ".join(words))
    return list(dict.fromkeys(paragraphs))


@dataclass
class Corpus:
    folder: Path
    kinds: dict[str, str]
    """File name -> kind (text, pdf, audio)."""
    audio_s: dict[str, float]
    pdf_pages: dict[str, int]
    words: dict[str, int]
    """Words written (spoken, for a clip) into each file."""


def build_corpus(docs: int, clips: int) -> Corpus:
    folder = CACHE / f"v{CORPUS_VERSION}-docs{docs}-audio{clips}"
    index = folder / "corpus.json"
    if index.exists():
        data = json.loads(index.read_text())
        return Corpus(folder / "files", data["kinds"], data["audio_s"], data["pdf_pages"], data["words"])
    from fpdf import FPDF

    if not shutil.which("espeak-ng"):
        sys.exit("bench_scale needs espeak-ng (Debian package espeak-ng) for the spoken clips.")
    rng = random.Random(16)
    pool = prose()
    rng.shuffle(pool)
    print(f"building the corpus: {len(pool):,} paragraphs of prose -> {docs:,} documents in {folder}", flush=True)
    files = folder / "files"
    shutil.rmtree(folder, ignore_errors=True)
    files.mkdir(parents=True)
    kinds: dict[str, str] = {}
    audio_s: dict[str, float] = {}
    pdf_pages: dict[str, int] = {}
    words: dict[str, int] = {}
    pdfs = docs // 12
    cursor = 0

    def take(n: int) -> list[str]:
        nonlocal cursor
        got = [pool[(cursor + i) % len(pool)] for i in range(n)]
        cursor += n
        return got

    for number in range(docs):
        sub = files / f"part{number // 200:02d}"
        sub.mkdir(exist_ok=True)
        if number < clips:
            # One or two sentences: 10-25 s of speech, transcribed at ~0.1x real time on 2 cores.
            sentences = re.split(r"(?<=[.!?])\s+", take(1)[0])
            text = " ".join(sentences[:2])[:400]
            path = sub / f"clip{number:04d}.wav"
            subprocess.run(["espeak-ng", "-s", "160", "-w", str(path), text], check=True, capture_output=True)
            with wave.open(str(path)) as clip:
                audio_s[path.name] = clip.getnframes() / clip.getframerate()
            kinds[path.name] = "audio"
            words[path.name] = len(text.split())
        elif number < clips + pdfs:
            pdf = FPDF()
            pdf.set_font("Helvetica", size=11)
            pdf.add_page()
            pdf.set_font("Helvetica", "B", 14)
            paragraphs = take(rng.randint(3, 9))
            pdf.multi_cell(
                0,
                8,
                " ".join(paragraphs[0].split()[:8]).encode("latin-1", "replace").decode("latin-1"),
                new_x="LMARGIN",
                new_y="NEXT",
            )
            pdf.set_font("Helvetica", size=11)
            for paragraph in paragraphs:
                pdf.multi_cell(
                    0, 6, paragraph.encode("latin-1", "replace").decode("latin-1"), new_x="LMARGIN", new_y="NEXT"
                )
                pdf.ln(3)
            path = sub / f"notes{number:04d}.pdf"
            pdf.output(str(path))
            pdf_pages[path.name] = pdf.page_no()
            kinds[path.name] = "pdf"
            words[path.name] = sum(len(p.split()) for p in paragraphs)
        else:
            paragraphs = take(rng.randint(2, 4))
            title = " ".join(paragraphs[0].split()[:6])
            if number % 4:
                path = sub / f"page{number:04d}.md"
                body = f"# {title}\n\n" + "\n\n".join(
                    f"## Part {i + 1}\n\n{p}" if i and i % 2 == 0 else p for i, p in enumerate(paragraphs)
                )
            else:
                path = sub / f"page{number:04d}.txt"
                body = f"{title}\n\n" + "\n\n".join(paragraphs)
            path.write_text(body + "\n", encoding="utf-8")
            kinds[path.name] = "text"
            words[path.name] = len(body.split())
    index.write_text(json.dumps({"kinds": kinds, "audio_s": audio_s, "pdf_pages": pdf_pages, "words": words}))
    return Corpus(files, kinds, audio_s, pdf_pages, words)


# -- measuring --------------------------------------------------------------------------------------


@dataclass
class Writer:
    """Time spent inside KB.write_source, the driver's one writer, and the rows it wrote."""

    seconds: float = 0.0
    sources: int = 0
    rows: int = 0
    writes: list[tuple[int, float]] = field(default_factory=list)
    """(chunk rows, seconds) of each transaction, to split a source's fixed cost from a row's."""

    def fit(self) -> tuple[float, float]:
        """Seconds per transaction and per chunk row, by least squares over the run's writes."""
        import numpy as np

        rows = np.array([[1.0, r] for r, _ in self.writes])
        seconds = np.array([s for _, s in self.writes])
        (fixed, per_row), *_ = np.linalg.lstsq(rows, seconds, rcond=None)
        return max(float(fixed), 0.0), max(float(per_row), 1e-9)

    def ceiling(self, rows_per_source: float) -> float:
        """Chunk rows/s this writer sustains for sources of `rows_per_source` chunks each."""
        fixed, per_row = self.fit()
        return rows_per_source / (fixed + per_row * rows_per_source)


def time_the_writer(writer: Writer) -> None:
    from kb.store import KB

    original = KB.write_source
    if getattr(original, "timed", False):
        original = original.__wrapped__

    def write_source(self, doc, **kwargs):
        started = time.perf_counter()
        try:
            return original(self, doc, **kwargs)
        finally:
            took = time.perf_counter() - started
            writer.seconds += took
            writer.sources += 1
            writer.rows += len(kwargs.get("chunks") or ())
            writer.writes.append((len(kwargs.get("chunks") or ()), took))

    write_source.timed = True
    write_source.__wrapped__ = original
    KB.write_source = write_source


STAGES = {
    "reading": "read+extract",
    "decoding audio": "decode",
    "transcribing": "transcribe",
    "chunking": "chunk",
    "embedding": "embed",
    "storing": "store",
}


@dataclass
class StageClock:
    """Seconds per stage per document kind, from the stage events of a local ingest (one source at a time)."""

    kinds: dict[str, str]
    seconds: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    docs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    chunks: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first: set[str] = field(default_factory=set)
    names: list[str] = field(default_factory=list)
    """The documents counted."""
    _stage: str | None = None
    _since: float = 0.0
    _current: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def progress(self):
        from kb.progress import Progress

        clock = self

        class Events(Progress):
            def start(self, index, total, name, size=0):
                clock._switch("reading")

            def stage(self, stage, fraction=None):
                clock._switch(STAGES.get(stage, stage))

            def done(self, report):
                clock._switch(None)
                kind = clock.kinds.get(report.uri.rsplit("/", 1)[-1])
                if kind and report.status == "ok" and kind not in clock.first:
                    # The first of each kind carries the models' loading (the embedder, Whisper): left out.
                    clock.first.add(kind)
                elif kind and report.status == "ok":
                    clock.names.append(report.uri.rsplit("/", 1)[-1])
                    clock.docs[kind] += 1
                    clock.chunks[kind] += report.chunks
                    for stage, seconds in clock._current.items():
                        clock.seconds[kind][stage] += seconds
                clock._current = defaultdict(float)

        return Events()

    def _switch(self, stage: str | None) -> None:
        now = time.perf_counter()
        if self._stage is not None and stage != self._stage:
            self._current[self._stage] += now - self._since
        if stage != self._stage or stage is None:
            self._since = now
        self._stage = STAGES.get(stage, stage) if stage else None


@dataclass
class Run:
    name: str
    seconds: float
    docs: int
    chunks: int
    errors: int
    writer: Writer
    load: tuple[float, float, float]

    def row(self) -> dict:
        return {
            "run": self.name,
            "docs_per_s": self.docs / self.seconds,
            "chunks_per_s": self.chunks / self.seconds,
            "writer_rows_per_s": self.writer.rows / self.writer.seconds if self.writer.seconds else 0.0,
            "writer_sources_per_s": self.writer.sources / self.writer.seconds if self.writer.seconds else 0.0,
            "writer_share": self.writer.seconds / self.seconds,
            "seconds": self.seconds,
            "docs": self.docs,
            "chunks": self.chunks,
            "errors": self.errors,
            "load": self.load,
        }


def ingest(name: str, corpus: Corpus, tmp: Path, cpus: int | None, clock: StageClock | None) -> Run:
    from kb import KB, Ingester

    writer = Writer()
    time_the_writer(writer)
    # A cache of its own per run: kb keeps transcripts by content hash, and a second run would skip Whisper.
    os.environ["XDG_CACHE_HOME"] = str(tmp / f"cache-{name}")
    executor = "local"
    if cpus:
        import ray

        from kb.pipeline.ray_executor import RayExecutor

        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        env["XDG_CACHE_HOME"] = os.environ["XDG_CACHE_HOME"]
        ray.init(
            address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env}
        )
        executor = RayExecutor()
    db = tmp / f"{name}.db"
    try:
        started = time.perf_counter()
        with KB.open(db, create=True) as kb:
            result = Ingester(kb, executor=executor).run(
                [str(corpus.folder)], progress=clock.progress() if clock else None
            )
        seconds = time.perf_counter() - started
    finally:
        if cpus:
            executor.close()
            import ray

            ray.shutdown()
    totals = result.totals()
    return Run(name, seconds, totals.get("ok", 0), totals["chunks"], totals.get("error", 0), writer, os.getloadavg())


# -- reporting --------------------------------------------------------------------------------------


def per_kind(clock: StageClock, corpus: Corpus) -> dict:
    table = {}
    for kind in ("text", "pdf", "audio"):  # text first: audio's chunks per hour come from it
        n = clock.docs.get(kind, 0)
        if not n:
            continue
        stages = {stage: s / n for stage, s in clock.seconds[kind].items()}
        row = {"docs": n, "chunks_per_doc": clock.chunks[kind] / n, "s_per_doc": stages}
        if kind == "audio":
            audio = sum(corpus.audio_s.get(name, 0.0) for name in clock.names)
            row["audio_s"] = audio
            row["transcribe_s_per_audio_s"] = clock.seconds[kind].get("transcribe", 0.0) / audio
            row["decode_s_per_audio_s"] = clock.seconds[kind].get("decode", 0.0) / audio
            # A clip of a few seconds is one chunk; an hour-long lecture is as many chunks as its words
            # fill: the words spoken per second, chunked as the text documents were.
            counted = [n for n in clock.names if corpus.kinds[n] == "text"]
            text_chunks_per_word = clock.chunks["text"] / sum(corpus.words[n] for n in counted)
            spoken = sum(corpus.words[n] for n in clock.names if corpus.kinds[n] == "audio")
            row["words_per_audio_s"] = spoken / audio
            row["chunks_per_audio_s"] = spoken / audio * text_chunks_per_word
        if kind == "pdf":
            pages = sum(corpus.pdf_pages.get(name, 0) for name in clock.names)
            row["pages_per_doc"] = pages / n
            row["extract_s_per_page"] = clock.seconds[kind].get("read+extract", 0.0) / pages
            row["chunks_per_page"] = clock.chunks[kind] / pages
        table[kind] = row
    embed_s = sum(clock.seconds[k].get("embed", 0.0) for k in clock.seconds)
    chunk_s = sum(clock.seconds[k].get("chunk", 0.0) for k in clock.seconds)
    chunks = sum(clock.chunks.values())
    table["per_chunk"] = {"embed_s": embed_s / chunks, "chunk_s": chunk_s / chunks}
    return table


def projection(costs: dict, writer: Writer) -> dict:
    """Worker-seconds per stage for 10,000 lecture hours and 100,000 PDFs, from the measured costs."""
    per_chunk = costs["per_chunk"]["embed_s"] + costs["per_chunk"]["chunk_s"]
    out = {}
    audio = costs.get("audio")
    if audio:
        seconds = LECTURE_HOURS * 3600
        chunks = seconds * audio["chunks_per_audio_s"]
        out["lectures"] = {
            "what": f"{LECTURE_HOURS:,} hours of lectures",
            "chunks": chunks,
            # One recording per lecture hour: a source of that many chunks per transaction.
            "writer_rows_per_s": writer.ceiling(3600 * audio["chunks_per_audio_s"]),
            "stages": {
                "transcribe": seconds * audio["transcribe_s_per_audio_s"],
                "decode": seconds * audio["decode_s_per_audio_s"],
                "chunk+embed": chunks * per_chunk,
            },
        }
    pdf = costs.get("pdf")
    if pdf:
        pages = PDFS * PAGES_PER_PDF
        chunks = pages * pdf["chunks_per_page"]
        out["pdfs"] = {
            "what": f"{PDFS:,} PDFs of {PAGES_PER_PDF} pages",
            "chunks": chunks,
            "writer_rows_per_s": writer.ceiling(PAGES_PER_PDF * pdf["chunks_per_page"]),
            "stages": {"read+extract": pages * pdf["extract_s_per_page"], "chunk+embed": chunks * per_chunk},
        }
    for item in out.values():
        item["writer_s"] = item["chunks"] / item["writer_rows_per_s"]
        item["worker_s"] = sum(item["stages"].values())
        item["at"] = {}
        for workers in WORKERS:
            parallel = item["worker_s"] / workers
            item["at"][workers] = {
                "hours": max(parallel, item["writer_s"]) / 3600,
                "binds": "the single writer"
                if item["writer_s"] > parallel
                else max(item["stages"], key=item["stages"].get),
            }
        # Workers past which the writer binds: the parallel stages then finish faster than one file takes rows.
        item["writer_binds_from"] = item["worker_s"] / item["writer_s"]
    return out


def report(runs: list[Run], costs: dict | None, plan: dict | None, corpus: Corpus) -> None:
    print(
        f"\ncorpus: {len(corpus.kinds):,} documents: {sum(k == 'text' for k in corpus.kinds.values()):,} text/markdown, "
        f"{len(corpus.pdf_pages)} PDFs ({sum(corpus.pdf_pages.values())} pages), "
        f"{len(corpus.audio_s)} spoken clips ({sum(corpus.audio_s.values()):.0f} s)"
    )
    print(
        f"\n{'run':<8}{'docs/s':>9}{'chunks/s':>10}{'writer rows/s':>15}{'writer src/s':>14}{'writer share':>14}"
        f"{'wall s':>9}{'docs':>7}{'chunks':>8}{'errors':>7}  load (1/5/15 min)"
    )
    base = runs[0].row() if runs else None
    for run in runs:
        row = run.row()
        print(
            f"{run.name:<8}{row['docs_per_s']:>9.2f}{row['chunks_per_s']:>10.2f}{row['writer_rows_per_s']:>15,.0f}"
            f"{row['writer_sources_per_s']:>14,.0f}{row['writer_share']:>13.1%}{run.seconds:>9.0f}{run.docs:>7}"
            f"{run.chunks:>8}{run.errors:>7}  {'/'.join(f'{x:.1f}' for x in run.load)}"
        )
    if base and len(runs) > 1:
        ratios = ", ".join(f"{r.name} {r.row()['docs_per_s'] / base['docs_per_s']:.2f}x" for r in runs[1:])
        print(f"docs/s relative to {runs[0].name} (same process, same corpus): {ratios}")
    if costs:
        print(
            "\nper-stage cost of the local run (seconds of one process on this machine, per document; the first "
            "document of each kind, which loads the models, left out):"
        )
        for kind in ("text", "pdf", "audio"):
            if kind in costs:
                row = costs[kind]
                stages = ", ".join(f"{s} {v:.3f}" for s, v in sorted(row["s_per_doc"].items(), key=lambda x: -x[1]))
                print(f"  {kind:<6} {row['docs']:>5} docs, {row['chunks_per_doc']:.1f} chunks each: {stages}")
        if "audio" in costs:
            a = costs["audio"]
            print(
                f"  audio: transcription {a['transcribe_s_per_audio_s']:.3f} s per audio second (real-time factor), "
                f"decode {a['decode_s_per_audio_s']:.4f}; {a['words_per_audio_s'] * 60:.0f} words a minute, so "
                f"{a['chunks_per_audio_s'] * 3600:.0f} chunks per lecture hour"
            )
        if "pdf" in costs:
            p = costs["pdf"]
            print(
                f"  pdf: {p['pages_per_doc']:.1f} pages each, read+extract {p['extract_s_per_page']:.3f} s per page, "
                f"{p['chunks_per_page']:.1f} chunks per page"
            )
        fixed, per_row = runs[0].writer.fit()
        print(
            f"  the writer (local run): {fixed * 1000:.2f} ms per source transaction + {per_row * 1000:.3f} ms per chunk "
            "row (its vector, FTS5 and vec0 rows), fitted over every write"
        )
        c = costs["per_chunk"]
        print(f"  per chunk: embed {c['embed_s'] * 1000:.1f} ms, chunking {c['chunk_s'] * 1000:.2f} ms")
    if plan:
        print("\nprojection (worker = one process as measured above; the writer is one per KB file):")
        for item in plan.values():
            stages = ", ".join(f"{s} {v / 3600:,.0f} h" for s, v in item["stages"].items())
            print(
                f"  {item['what']}: {item['chunks']:,.0f} chunks; worker-hours {item['worker_s'] / 3600:,.0f} ({stages}); "
                f"the writer alone {item['writer_s'] / 3600:,.1f} h at {item['writer_rows_per_s']:,.0f} rows/s"
            )
            for workers, at in item["at"].items():
                print(f"    at {workers:>3} workers: {at['hours']:,.1f} h, bound by {at['binds']}")
            print(
                f"    the single writer binds from about {item['writer_binds_from']:,.0f} workers on "
                "(into one file; courses in separate files each have their own writer)"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=2000, help="documents in the corpus (default 2,000)")
    parser.add_argument("--audio", type=int, default=24, help="spoken clips among them (default 24)")
    parser.add_argument("--only", default="local,ray1,ray2", help="runs, comma-separated: local, ray1, ray2")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    corpus = build_corpus(options.docs, min(options.audio, options.docs))
    print(f"load average before the runs: {'/'.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    runs: list[Run] = []
    costs = plan = None
    with tempfile.TemporaryDirectory() as tmp:
        for name in options.only.split(","):
            cpus = {"local": None, "ray1": 1, "ray2": 2}[name.strip()]
            clock = StageClock(corpus.kinds) if cpus is None else None
            print(f"running {name} ...", flush=True)
            run = ingest(name, corpus, Path(tmp), cpus, clock)
            runs.append(run)
            print(f"  {run.docs} docs, {run.chunks} chunks in {run.seconds:.0f} s (load {run.load[0]:.1f})", flush=True)
            if clock is not None:
                costs = per_kind(clock, corpus)
                plan = projection(costs, run.writer)
    report(runs, costs, plan, corpus)
    if options.json:
        options.json.write_text(
            json.dumps({"runs": [r.row() for r in runs], "costs": costs, "projection": plan}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
