"""`kb eval` over the whole sample course with the real models: retrieval, answers, citations, abstention.

    python benchmarks/bench_course.py [--model NAME] [--json PATH]

This ran in the test suite until it took over 900 s on a busy machine; it is a measurement, so it
lives here. It prints kb eval's table: recall@5, MRR, keyword hits in the answers, citation
precision, abstention on the off-topic and near-subject questions, false abstention.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="a built-in model name or GGUF file (default: the default)")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "course.db"
        subprocess.run(
            [sys.executable, "-m", "kb", "ingest", str(db), str(ROOT / "corpora" / "hydrology")],
            check=True,
            capture_output=True,
        )
        args = [sys.executable, "-m", "kb", "eval", str(db), str(ROOT / "corpora" / "questions.jsonl"), "--json"]
        if options.model:
            args += ["--model", options.model]
        report = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    from kb.evaluate import load_questions
    from kb.reports import format_eval

    print(format_eval(report))
    near = {q.id for q in load_questions(ROOT / "corpora" / "questions.jsonl") if q.near_subject}
    traps = [r for r in report["results"] if r["id"] in near]
    if traps:
        abstained = sum(r["abstained"] for r in traps)
        print(f"\nnear-subject questions the course does not answer: abstained on {abstained}/{len(traps)}")
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
