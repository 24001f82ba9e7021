"""Load test of `kb serve`: a burst of 200 concurrent searches and 8 asks, on loopback, bounded.

    python benchmarks/bench_serve.py [--db COPY.db] [--searches 200] [--asks 8] [--fast]
                                     [--kb-tree DIR] [--json PATH]

The sample course is ingested with the default embedder and exported as a learner copy (or --db
names one), `kb serve` serves it on 127.0.0.1 with the default model, and after one warm-up
search and ask, every request of the burst is sent at once: searches (distinct queries, mode=search)
and asks (the ask page's JSON). Reported: p50/p95/max latency of each kind, status counts (5xx
split into 503-with-Retry-After, the overload answer, and the rest), and the server's peak
resident memory (VmHWM). Only loopback is ever contacted, every request has a timeout, and the
server is stopped at the end.

--kb-tree DIR serves with another copy of kb's source (e.g. `git archive` of an older commit
unpacked in DIR), for before/after figures on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
QUESTIONS = [
    "How wide is the funnel on the standard UK Met Office rain gauge?",
    "What is Hortonian overland flow and when does it happen?",
    "What is a perched water table?",
    "Roughly how long does water stay in the atmosphere before it comes back down?",
    "Why is one side of a mountain range drier than the other?",
    "What is baseflow?",
    "How is a river's rating curve built?",
    "Clay holds a lot of water, so why is it a poor aquifer?",
]
WORDS = "rain gauge funnel snow river flow aquifer soil infiltration evaporation runoff storm".split()
REQUEST_TIMEOUT_S = 900


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def run_kb(*args: str, env: dict, timeout: float = 1800) -> None:
    subprocess.run([sys.executable, "-m", "kb", *args], check=True, env=env, timeout=timeout, capture_output=True)


def build_copy(folder: Path, env: dict) -> Path:
    db, copy = folder / "course.db", folder / "course-learner.db"
    run_kb("ingest", str(db), str(ROOT / "corpora" / "hydrology"), env=env)
    run_kb("export", str(db), str(copy), env=env)
    return copy


def start(copy: Path, port: int, env: dict, log: Path, extra: list[str]) -> subprocess.Popen:
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kb", "serve", str(copy), "--host", HOST, "--port", str(port), *extra],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kb serve ended:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/-/kb.json", timeout=5):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("kb serve did not start")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:", 1)[1].split()[0]) / 1024


async def burst(base: str, database: str, searches: int, asks: int) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=searches + asks + 8, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S) as client:

        async def one(kind: str, query: str) -> dict:
            params = {"q": query} if kind == "ask" else {"q": query, "mode": "search", "k": "10"}
            started = time.monotonic()
            try:
                response = await client.get(f"{base}/-/kb/{database}.json?{urlencode(params)}")
                status, retry = response.status_code, response.headers.get("retry-after")
            except httpx.HTTPError as exc:
                status, retry = f"error: {type(exc).__name__}", None
            return {"kind": kind, "status": status, "retry_after": retry, "seconds": time.monotonic() - started}

        jobs = [one("search", f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} {i}") for i in range(searches)]
        jobs += [one("ask", QUESTIONS[i % len(QUESTIONS)]) for i in range(asks)]
        return await asyncio.gather(*jobs)


def summary(results: list[dict], kind: str) -> dict:
    mine = [r for r in results if r["kind"] == kind]
    times = sorted(r["seconds"] for r in mine)
    statuses: dict[str, int] = {}
    for r in mine:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    overload = sum(1 for r in mine if r["status"] == 503 and r["retry_after"])
    other_5xx = sum(1 for r in mine if isinstance(r["status"], int) and r["status"] >= 500) - overload
    q = statistics.quantiles(times, n=20) if len(times) >= 2 else times * 19
    return {
        "requests": len(mine),
        "p50_s": round(statistics.median(times), 3) if times else None,
        "p95_s": round(q[18], 3) if times else None,
        "max_s": round(times[-1], 3) if times else None,
        "statuses": statuses,
        "503_retry_after": overload,
        "other_5xx": other_5xx,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="A learner copy to serve (default: built from the sample course).")
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--asks", type=int, default=8)
    parser.add_argument("--fast", action="store_true", help="Serve with --fast (no evidence step).")
    parser.add_argument("--llm-url", help="Answer through this OpenAI-compatible server instead of the default model.")
    parser.add_argument("--kb-tree", type=Path, help="Serve with kb's source from this folder (before/after).")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not 1 <= args.searches <= 1000 or not 0 <= args.asks <= 50:
        raise SystemExit("--searches must be 1-1000 and --asks 0-50: this is a bounded test.")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    tree = (args.kb_tree or ROOT).resolve()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    env["PYTHONSAFEPATH"] = "1"  # or `python -m kb` imports the kb of the current directory before the tree's
    folder = Path(tempfile.mkdtemp(prefix="kb-bench-serve-"))
    load_before = os.getloadavg()
    try:
        copy = args.db or build_copy(folder, env)
        port = free_port()
        extra = ["--fast"] if args.fast else []
        extra += ["--llm-url", args.llm_url] if args.llm_url else []
        log = folder / "serve.log"
        proc = start(copy, port, env, log, extra)
        base = f"http://{HOST}:{port}"
        database = copy.stem
        try:
            # Warm-up: the query embedder and the model load once, as on a server that has been up a while.
            warm = asyncio.run(burst(base, database, 1, 1 if args.asks else 0))
            started = time.monotonic()
            results = asyncio.run(burst(base, database, args.searches, args.asks))
            wall = time.monotonic() - started
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logged = log.read_text(errors="replace")
        report = {
            "kb_tree": str(tree),
            "load_average_before": load_before,
            "load_average": os.getloadavg(),
            "warm_up": warm,
            "wall_s": round(wall, 2),
            "search": summary(results, "search"),
            "ask": summary(results, "ask"),
            "peak_rss_mb": round(rss, 1),
            "log_bytes": len(logged),
            "log_tracebacks": logged.count("Traceback"),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    before, after = report["load_average_before"][0], report["load_average"][0]
    print(f"kb serve under a burst ({tree}; load average {before:.1f} before, {after:.1f} after)")
    for kind in ("search", "ask"):
        s = report[kind]
        print(
            f"  {kind:<7} {s['requests']:>4} requests  p50 {s['p50_s']} s  p95 {s['p95_s']} s  max {s['max_s']} s  "
            f"statuses {s['statuses']}  503+Retry-After {s['503_retry_after']}  other 5xx {s['other_5xx']}"
        )
    print(f"  wall {report['wall_s']} s, peak RSS {report['peak_rss_mb']} MB, log {report['log_bytes']} bytes "
          f"({report['log_tracebacks']} tracebacks)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
