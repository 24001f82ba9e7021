"""`kb questions` on the sample course with the default model: how many made, kept, rejected and why.

    python benchmarks/bench_questions.py [--per-source 2] [--per-section 1] [--limit N] [--db course.db] [--json PATH]

Ingests corpora/hydrology (or uses --db, copied, so the file given is not changed), loads the default
model once, and makes questions from the first --per-source passages of every source, their kinds
(short answer, multiple choice, true/false, cloze) taken in turn. It prints the per-source report,
made / kept / rejected by reason, the share kept, seconds per kept question (generation and every
check, model load excluded), the multiple-choice baselines (longest option, fixed letter), and the
load average before and after: the machine is shared, so read the seconds with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-source", type=int, default=2, help="passages per source (0: all)")
    parser.add_argument("--per-section", type=int, default=1)
    parser.add_argument("--limit", type=int, help="at most this many passages in all (a quick look on a busy machine)")
    parser.add_argument("--db", type=Path, help="an ingest of the sample course to copy instead of ingesting")
    parser.add_argument("--model", default=None)
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: the physical cores)")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()

    from kb import KB
    from kb.answer import load_llm
    from kb.questions.generate import Generator
    from kb.questions.report import format_report

    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "course.db"
        if options.db:
            shutil.copy(options.db, db)
        else:
            subprocess.run(
                [sys.executable, "-m", "kb", "ingest", str(db), str(ROOT / "corpora" / "hydrology")],
                check=True,
                capture_output=True,
            )
        with KB.open(db, write=True) as kb:
            kb.conn.execute("DELETE FROM questions")
            started = time.monotonic()
            llm = load_llm(options.model, threads=options.threads)
            load_s = time.monotonic() - started
            generator = Generator(kb, llm)

            def progress(number: int, total: int, q) -> None:
                print(f"  [{number}/{total}] {q.kind:<9} {q.reason or 'kept':<20} {q.question[:70]}", flush=True)

            report = generator.run(
                per_section=options.per_section,
                per_source=options.per_source or None,
                on_question=progress,
                limit=options.limit,
            )
    print()
    print(format_report(report))
    data = report.to_dict()
    print(
        f"\nmodel load {load_s:.1f} s (not counted); {data['seconds_per_kept']} s per kept question; "
        f"share kept {data['share_kept']:.0%}"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if options.json:
        options.json.write_text(json.dumps({**data, "model_load_s": round(load_s, 1)}, indent=2))


if __name__ == "__main__":
    main()
