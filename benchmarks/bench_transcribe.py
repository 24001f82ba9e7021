"""kb's transcription path vs raw faster-whisper on the same recording, in one process.

kb: the media connector's own steps with no cache: PyAV decode with its checks, faster-whisper with
word timestamps, regrouping into sentences and sections. Raw: WhisperModel(...).transcribe(path) and
list(segments) with the same model folder, compute type and word_timestamps. Both load the model
once, outside the timings. Prints the real-time factor (seconds of compute per second of audio) of
each, the median over alternating runs, and raw ÷ kb (goal >= 0.9: kb no more than ~11% slower).

    .venv/bin/python benchmarks/bench_transcribe.py [--runs 3] [--audio FILE] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_AUDIO = ROOT / "corpora" / "hydrology" / "gauging-a-river-lecture.ogg"
GOAL = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from faster_whisper import WhisperModel

    from connectors.media import DEFAULT_MAX_DURATION_S, decode_audio, group_segments, probe
    from connectors.transcribe import SAMPLE_RATE, _load_faster_whisper, choose_model, transcribe

    model = choose_model({"transcriber": "faster-whisper"})
    _load_faster_whisper(model)  # kb's model, loaded once (as in one ingest run)
    raw_model = WhisperModel(model.path, device="cpu", compute_type="int8", local_files_only=True)

    def kb_path() -> float:
        info = probe(args.audio)
        audio = decode_audio(args.audio, DEFAULT_MAX_DURATION_S, info.duration)
        transcript = transcribe(audio, len(audio) / SAMPLE_RATE, model)
        group_segments(transcript.segments, info.title)
        return len(audio) / SAMPLE_RATE

    def raw_path() -> float:
        segments, info = raw_model.transcribe(str(args.audio), language="en", word_timestamps=True)
        list(segments)
        return info.duration

    # Warm both once (first-call allocations, page cache), then alternate so load drifts hit both.
    duration = kb_path()
    raw_path()
    kb_times, raw_times = [], []
    for _ in range(args.runs):
        for _name, run, times in (("kb", kb_path, kb_times), ("raw", raw_path, raw_times)):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
    kb_time, raw_time = statistics.median(kb_times), statistics.median(raw_times)
    result = {
        "audio": str(args.audio.relative_to(ROOT) if args.audio.is_relative_to(ROOT) else args.audio),
        "audio_seconds": round(duration, 2),
        "model": model.origin,
        "runs": args.runs,
        "kb_rtf": round(kb_time / duration, 4),
        "raw_rtf": round(raw_time / duration, 4),
        "ratio_raw_over_kb": round(raw_time / kb_time, 3),
        "kb_seconds": [round(t, 2) for t in kb_times],
        "raw_seconds": [round(t, 2) for t in raw_times],
        "load_average": os.getloadavg()[0],
    }
    verdict = "PASS" if result["ratio_raw_over_kb"] >= GOAL else "FAIL"
    print(
        f"audio: {result['audio']} ({duration:.1f} s), {model.origin}, int8 on CPU, word timestamps, {args.runs} runs"
    )
    print(f"load average: {result['load_average']:.2f}")
    print(f"{'':24}{'median s':>10}{'RTF':>8}")
    print(f"{'kb transcription path':24}{kb_time:>10.2f}{result['kb_rtf']:>8.3f}")
    print(f"{'raw faster-whisper':24}{raw_time:>10.2f}{result['raw_rtf']:>8.3f}")
    print(f"raw/kb time ratio: {result['ratio_raw_over_kb']:.3f} (goal >= {GOAL}) {verdict}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
