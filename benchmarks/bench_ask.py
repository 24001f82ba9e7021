"""Time `kb ask` on the sample course: first token and total, cold and warm, split by phase.

    python benchmarks/bench_ask.py [--quick] [--json PATH]

"cold process" is a new `kb ask` process (imports, model load, first answer), run twice so the
second has the model file in the page cache; "warm" reuses one engine in one process, as a
server or `kb eval` does. Each phase is reported: retrieval, evidence (per-passage LLM calls),
answer; first token is measured from the question to the first streamed token of the answer.
Goals on a 2-core machine with the default model: first token <= 3 s warm, whole answer
<= 15 s (<= 5 s with --fast).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "How wide is the funnel on the standard UK Met Office rain gauge?",
    "Clay holds a lot of water, so why is it a poor aquifer?",
    "What is Hortonian overland flow and when does it happen?",
    "What is a perched water table?",
    "Roughly how long does water stay in the atmosphere before it comes back down?",
]


def cold(db: Path, question: str, fast: bool) -> dict:
    args = [sys.executable, "-m", "kb", "ask", str(db), question, "--json"] + (["--fast"] if fast else [])
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    wall = time.monotonic() - started
    timings = json.loads(proc.stdout)["timings"]
    return {"wall_s": wall, **timings}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    questions = QUESTIONS[:2] if options.quick else QUESTIONS

    from kb import KB
    from kb.answer import AnswerEngine, AskSettings
    from kb.plugins import get_llm

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "course.db"
        subprocess.run(
            [sys.executable, "-m", "kb", "ingest", str(db), str(ROOT / "corpora" / "hydrology")],
            check=True,
            capture_output=True,
        )
        for fast in (False, True):
            mode = "fast" if fast else "full"
            first = cold(db, questions[0], fast)
            second = cold(db, questions[1], fast)
            with KB.open(db) as kb:
                engine = AnswerEngine(kb, lambda: get_llm("llama-cpp"), AskSettings(fast=fast))
                engine.ask(questions[0], log=False)  # load the model
                warm = [engine.ask(q, log=False).timings for q in questions]
            median = {
                key: statistics.median(t.get(key, 0.0) for t in warm)
                for key in ("retrieval_s", "evidence_s", "answer_s", "first_token_s", "total_s")
            }
            results[mode] = {"cold_first_process": first, "cold_second_process": second, "warm_median": median}

    print(
        f"{'mode':<5} {'run':<22} {'wall':>6} {'first tok':>9} {'total':>6} {'retrieval':>9} {'evidence':>8} {'answer':>7} {'load':>5}"
    )
    for mode, runs in results.items():
        for name, t in (
            ("new process (1st)", runs["cold_first_process"]),
            ("new process (2nd)", runs["cold_second_process"]),
            ("warm, median", runs["warm_median"]),
        ):
            print(
                f"{mode:<5} {name:<22} {t.get('wall_s', float('nan')):>6.2f} {t.get('first_token_s', float('nan')):>9.2f} "
                f"{t.get('total_s', 0):>6.2f} {t.get('retrieval_s', 0):>9.2f} {t.get('evidence_s', 0):>8.2f} "
                f"{t.get('answer_s', 0):>7.2f} {t.get('model_load_s', 0):>5.2f}"
            )
    warm_full, warm_fast = results["full"]["warm_median"], results["fast"]["warm_median"]
    print(
        f"\nwarm first token: {warm_full['first_token_s']:.2f} s full, {warm_fast['first_token_s']:.2f} s fast (goal <= 3 s)"
    )
    print(
        f"warm whole answer: {warm_full['total_s']:.2f} s full (goal <= 15 s), {warm_fast['total_s']:.2f} s fast (goal <= 5 s)"
    )
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
