"""Time `kb ask` on the sample course: first token and whole answer, warm and in a new process.

    python benchmarks/bench_ask.py [--quick] [--levers] [--model NAME] [--json PATH]

"new process" is a fresh `kb ask` (imports, model load, first answer), run twice so the second has
the model file in the page cache; "warm" reuses one engine in one process, as `kb serve` does.
Each phase is reported: retrieval, evidence (the judge call and its yes/no check), answer; first
token is measured from the question to the first streamed word of the answer.

Goals on a 2-core machine with the default model: warm first token <= 4 s and whole answer <= 15 s;
a new `kb ask` process <= 20 s.

--levers measures, on the same questions in the same run, what each speed lever buys: passages
trimmed to their nearest sentences against whole chunks; llama.cpp's prefix cache (the fixed system
prompt kept) against a cleared cache; one thread against all physical cores.
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
PHASES = ("retrieval_s", "evidence_s", "answer_s", "first_token_s", "total_s")


def new_process(db: Path, question: str, extra: list[str]) -> dict:
    args = [sys.executable, "-m", "kb", "ask", str(db), question, "--json", *extra]
    started = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    wall = time.monotonic() - started
    return {"wall_s": wall, **json.loads(proc.stdout)["timings"]}


def warm_runs(db: Path, questions: list[str], settings, model: str | None, reset: bool = False, **llm) -> dict:
    """Median timings over `questions` with one engine; `reset` clears llama.cpp's cache before each."""
    from kb import KB
    from kb.answer import AnswerEngine
    from kb.plugins import get_llm

    with KB.open(db) as kb:
        engine = AnswerEngine(kb, lambda: get_llm("llama-cpp", model_path=model, **llm), settings)
        engine.ask(questions[0], log=False)  # load the model and fill the cache
        timings = []
        for question in questions:
            if reset:
                engine.llm.llama.reset()
            timings.append(engine.ask(question, log=False).timings)
    return {key: statistics.median(t.get(key, t["total_s"]) for t in timings) for key in PHASES}


def row(name: str, t: dict) -> str:
    cells = [t.get("wall_s", float("nan"))] + [t.get(k, 0.0) for k in ("first_token_s", "total_s", *PHASES[:3])]
    return f"{name:<34} " + " ".join(f"{c:>9.2f}" for c in cells) + f" {t.get('model_load_s', 0):>6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="two questions instead of five")
    parser.add_argument("--levers", action="store_true", help="also measure each speed lever")
    parser.add_argument("--model", default=None, help="a built-in model name or GGUF file (default: the default)")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    questions = QUESTIONS[:2] if options.quick else QUESTIONS
    extra = ["--model", options.model] if options.model else []

    from kb.answer import AskSettings

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "course.db"
        subprocess.run(
            [sys.executable, "-m", "kb", "ingest", str(db), str(ROOT / "corpora" / "hydrology")],
            check=True,
            capture_output=True,
        )
        results["new process (1st)"] = new_process(db, questions[0], extra)
        results["new process (2nd)"] = new_process(db, questions[1], extra)
        results["warm, median"] = warm_runs(db, questions, AskSettings(), options.model)
        results["warm --fast, median"] = warm_runs(db, questions, AskSettings(fast=True), options.model)
        if options.levers:
            results["lever: whole chunks (no trimming)"] = warm_runs(
                db, questions, AskSettings(excerpt_chars=100_000), options.model
            )
            results["lever: cache cleared each question"] = warm_runs(
                db, questions, AskSettings(), options.model, reset=True
            )
            results["lever: 1 thread"] = warm_runs(db, questions, AskSettings(), options.model, n_threads=1)

    header = ["wall", "first tok", "total", "retrieval", "evidence", "answer"]
    print(f"{'run':<34} " + " ".join(f"{h:>9}" for h in header) + f" {'load':>6}")
    for name, t in results.items():
        print(row(name, t))
    warm, first, second = results["warm, median"], results["new process (1st)"], results["new process (2nd)"]
    print(
        f"\nwarm first token {warm['first_token_s']:.2f} s (goal <= 4 s); warm whole answer "
        f"{warm['total_s']:.2f} s (goal <= 15 s); new process {first['wall_s']:.2f} s first, "
        f"{second['wall_s']:.2f} s second (goal <= 20 s)"
    )
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
