"""Timed text, shared by the recording connectors: a `Segment` of speech, the sections segments
make, and the recording limits and formats.

A leaf module: captions.py, transcribe.py, media.py and ytdlp.py all import it and it imports none
of them, so they no longer import each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass

from kb import ChunkingSettings, Locator, Section, option

MEDIA_SUFFIXES = (
    ".wav", ".mp3", ".m4a", ".ogg", ".oga", ".opus", ".flac", ".aac",
    ".mp4", ".m4v", ".mov", ".webm", ".mkv",
)  # fmt: skip
DEFAULT_MAX_DURATION_S = 4 * 3600.0
"""Longest recording read (option max_duration_s): a day-long stream is refused from its header."""


@dataclass(frozen=True)
class DurationOptions:
    """How long a recording may be: read by the media connector and the yt-dlp fetcher alike."""

    max_duration_s: float = option(
        DEFAULT_MAX_DURATION_S,
        "Refuse recordings longer than this (read from the file's header, before decoding).",
        minimum=3.6,  # --max-hours 0.001
        flag="--max-hours",
        scale=3600,
    )


MAX_MEDIA_BYTES = 4 * 2**30
"""Largest recording read or downloaded (the engine hashes it as a stream, never holds it)."""
SOFT_SECTION_CHARS = 450
"""A section closes at the first sentence end past this size: about 30 s of speech, so a citation
opens the recording near the sentence it cites."""
HARD_SECTION_CHARS = ChunkingSettings().max_chars
"""Never more than the chunker's size, so the chunker keeps each section as one chunk."""


@dataclass(frozen=True)
class Segment:
    """A stretch of speech with its time in the recording: a caption cue or a transcribed sentence."""

    start: float
    end: float
    text: str


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def group_segments(segments: list[Segment], title: str | None) -> list[Section]:
    """Consecutive sentences (or cues) into sections no larger than one chunk, each with its times."""
    sections: list[Section] = []
    current: list[Segment] = []
    size = 0

    def close() -> None:
        nonlocal size
        if current:
            text = " ".join(s.text for s in current)
            locator = Locator(start_s=current[0].start, end_s=max(s.end for s in current), heading=title)
            sections.append(Section(text=text, locator=locator))
        current.clear()
        size = 0

    for segment in segments:
        extra = len(segment.text) + (1 if current else 0)
        if current and size + extra > HARD_SECTION_CHARS:
            close()
            extra = len(segment.text)
        current.append(segment)
        size += extra
        if size >= SOFT_SECTION_CHARS:
            close()
    close()
    return sections
