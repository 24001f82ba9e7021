"""Speak the sample course's recorded lecture with espeak-ng, sentence by sentence.

Writes `hydrology/gauging-a-river-lecture.ogg` (16 kHz mono Opus, small enough to commit) and
`lecture-timings.json` beside this script: each sentence with the second it starts and ends in the
recording, which the tests use to check that every chunk's time range covers the sentences it holds.
Run from the repository root after editing the text:

    .venv/bin/python corpora/make_lecture.py

Needs the Debian packages espeak-ng and ffmpeg. `speak()` is also what the tests call to make a WAV.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

HERE = Path(__file__).parent
LECTURE = HERE / "hydrology" / "gauging-a-river-lecture.ogg"
TIMINGS = HERE / "lecture-timings.json"
TITLE = "Gauging a river"
VOICE = "en-us"  # tiny.en hears espeak-ng's US voice with fewer mistakes (measured)
WORDS_PER_MINUTE = 150
RATE = 16000  # what speech models read: 16 kHz mono
PAUSE_S = 0.35  # silence after every sentence
PARAGRAPH_PAUSE_S = 0.9

# Original text written for kb (CC BY 4.0, like the rest of the course). Paragraphs are lists of sentences.
PARAGRAPHS = [
    [
        "Gauging a river.",
        "In this short lecture we look at how hydrologists measure the flow of a river.",
        "The flow, or discharge, is the volume of water passing a point each second, "
        "measured in cubic metres per second.",
        "Discharge cannot be read directly, so we measure the water level instead.",
        "The water level is called the stage, and it is read from a staff gauge "
        "or recorded by a pressure sensor in a stilling well.",
    ],
    [
        "To turn stage into discharge we need a rating curve.",
        "We build it with the velocity area method.",
        "The river is divided into vertical slices across its width.",
        "In each slice we measure the depth, and we measure the speed of the water with a current meter "
        "held at six tenths of the depth below the surface.",
        "Speed times area gives the flow of each slice, and the slices are added up.",
        "Repeating this at many different stages gives the rating curve.",
    ],
    [
        "Steep mountain streams are too rough for a current meter, so there we use dilution gauging.",
        "A known mass of salt is poured into the stream, and a conductivity probe downstream "
        "records the salt cloud as it passes.",
        "The more water the stream carries, the more the salt is diluted.",
    ],
]


def _espeak(text: str, out: Path) -> None:
    subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(out), text],
        check=True,
        capture_output=True,
    )


def _resampled_pcm(path: Path) -> bytes:
    """16-bit mono PCM at RATE (espeak-ng writes 22,050 Hz)."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-"],
        check=True,
        capture_output=True,
    )
    return result.stdout


def speak(wav_path: Path) -> list[dict]:
    """Write the lecture as a 16 kHz mono WAV; return each sentence with its start and end second."""
    timings: list[dict] = []
    pcm = bytearray()
    with tempfile.TemporaryDirectory() as tmp:
        for p, paragraph in enumerate(PARAGRAPHS):
            for s, sentence in enumerate(paragraph):
                piece = Path(tmp) / f"{p}-{s}.wav"
                _espeak(sentence, piece)
                audio = _resampled_pcm(piece)
                start = len(pcm) / 2 / RATE
                pcm += audio
                end = len(pcm) / 2 / RATE
                timings.append({"paragraph": p, "text": sentence, "start_s": round(start, 3), "end_s": round(end, 3)})
                last = s == len(paragraph) - 1
                pcm += b"\x00\x00" * int(RATE * (PARAGRAPH_PAUSE_S if last else PAUSE_S))
    with wave.open(str(wav_path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(pcm))
    return timings


def main() -> None:
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (Debian package {tool}).")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "lecture.wav"
        timings = speak(wav)
        # Opus at 32 kb/s: a tenth of the WAV's size, and tiny.en gets 0.90 of the words in order against
        # 0.92 from the WAV (24 kb/s: 0.89, MP3 at 32 kb/s: 0.85; measured). -bitexact keeps the output
        # identical from run to run.
        subprocess.run(
            [
                "ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "libopus", "-b:a", "32k",
                "-metadata", f"title={TITLE}", "-fflags", "+bitexact", "-flags:a", "+bitexact", str(LECTURE),
            ],
            check=True,
        )  # fmt: skip
    TIMINGS.write_text(json.dumps({"title": TITLE, "sentences": timings}, indent=1) + "\n", encoding="utf-8")
    duration = timings[-1]["end_s"]
    size = LECTURE.stat().st_size
    print(f"wrote {LECTURE.relative_to(HERE.parent)} ({size:,} bytes, {duration:.1f} s) and {TIMINGS.name}")


if __name__ == "__main__":
    main()
