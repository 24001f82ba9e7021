"""Subtitle files (WebVTT, SRT): timed text that needs no speech model.

Used three ways: captions yt-dlp downloaded for a video URL (the fetcher names them "ID.en.vtt" and
gives the video's URL as the source), a sidecar file next to a local recording ("lecture.vtt" or
"lecture.en.vtt" beside "lecture.mp4", read by the media connector instead of transcribing), and a
caption file on its own.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from kb import Document, SourceError, SourceFile

from ._timed import MEDIA_SUFFIXES, Segment, group_segments
from .text import decode_text

CAPTION_SUFFIXES = (".vtt", ".srt")

# "01:02:03.456", "02:03.456" (WebVTT may leave out the hours), "01:02:03,456" (SRT).
_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
_CUE_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")  # <c.colour>, <i>, <00:00:01.500> word timings, <v Speaker>
_SSA_OVERRIDE = re.compile(r"\{\\[^}]*\}")  # {\an8} in SRT files converted from SSA


def _seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000


def parse_captions(text: str, max_chars: int) -> list[Segment]:
    """Cues of a WebVTT or SRT file, in order, tags removed and rolling repeats dropped.

    YouTube's automatic captions repeat the previous line at the top of every cue (a "roll-up"
    display), so a line equal to one of the last two kept is not kept again.
    """
    segments: list[Segment] = []
    recent: list[str] = []
    chars = 0
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        match = _CUE_TIMING.match(lines[i])
        i += 1
        if not match:
            continue  # header, cue numbers, NOTE/STYLE/REGION blocks
        groups = match.groups()
        start, end = _seconds(*groups[:4]), _seconds(*groups[4:])
        body: list[str] = []
        while i < len(lines) and lines[i].strip() and not _CUE_TIMING.match(lines[i]):
            body.append(lines[i])
            i += 1
        kept = []
        for raw in body:
            line = " ".join(html.unescape(_SSA_OVERRIDE.sub("", _TAG.sub("", raw))).split())
            if line and line not in recent:
                kept.append(line)
                recent = (recent + [line])[-2:]
        if not kept:
            continue
        cue = " ".join(kept)
        chars += len(cue)
        if chars > max_chars:
            raise SourceError(f"too much text (over {max_chars:,} characters of captions)")
        segments.append(Segment(start=start, end=max(end, start), text=cue))
    segments.sort(key=lambda s: s.start)
    return segments


def read_caption_file(path: Path, max_chars: int, max_bytes: int) -> list[Segment]:
    """Parse a caption file from disk, refusing one too large or not text."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SourceError(f"caption file {path.name} too large ({size / 2**20:,.1f} MB)")
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read the caption file {path.name} ({exc.strerror or exc})") from exc
    text, _ = decode_text(data)
    return parse_captions(text, max_chars)


def sidecar_captions(media: Path) -> Path | None:
    """A caption file beside a local recording: "lecture.vtt", or "lecture.en.vtt" (English first)."""
    folder, stem = media.parent, media.stem
    exact = [folder / f"{stem}{suffix}" for suffix in CAPTION_SUFFIXES]
    for candidate in exact:
        if candidate.is_file():
            return candidate
    try:
        tagged = sorted(p for p in folder.glob(f"{_glob_escape(stem)}.*") if p.suffix.lower() in CAPTION_SUFFIXES)
    except OSError:
        return None
    tagged = [p for p in tagged if p.is_file() and p.name.count(".") == media.name.count(".") + 1]
    tagged.sort(key=lambda p: (not p.name.lower().endswith((".en.vtt", ".en.srt")), p.name))
    return tagged[0] if tagged else None


def _media_for_sidecar(captions: Path, media_suffixes: tuple[str, ...]) -> Path | None:
    """The local recording a caption file belongs to, if one lies beside it."""
    stem = captions.stem
    candidates = [stem]
    if "." in stem:  # "lecture.en" -> "lecture"
        candidates.append(stem.rsplit(".", 1)[0])
    for base in candidates:
        for suffix in media_suffixes:
            media = captions.with_name(base + suffix)
            # Every caption file of a recording counts, not only the one read with it (lecture.vtt
            # and lecture.en.vtt both): either would repeat the recording's text.
            if media.is_file():
                return media
    return None


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


class CaptionsConnector:
    """WebVTT and SRT files: one section per group of cues, with their times."""

    kind = "captions"
    suffixes = CAPTION_SUFFIXES

    def extract(self, source: SourceFile) -> Document:
        path = Path(source.path) if source.path is not None else None
        if path is not None and source.uri.startswith("file:"):
            media = _media_for_sidecar(path, MEDIA_SUFFIXES)
            if media is not None:
                # The media connector reads these captions with the recording (and links to the
                # recording, which is what a learner wants to open): ingesting them here too would
                # put every sentence in the KB twice.
                return Document(
                    uri=source.uri,
                    kind=self.kind,
                    title=path.name,
                    empty_reason=f"captions of {media.name}, read with that recording",
                )
        text, _ = decode_text(source.data)
        segments = parse_captions(text, source.limits.max_chars)
        name = source.name or (path.name if path else "captions")
        title = _title_from_name(name)
        doc = Document(
            uri=source.uri,
            kind=self.kind,
            title=title,
            sections=group_segments(segments, title),
            metadata={"transcript_origin": "captions"},
        )
        if segments:
            doc.metadata["duration"] = round(segments[-1].end, 3)
        else:
            doc.empty_reason = "the caption file has no cues"
        return doc


def _title_from_name(name: str) -> str:
    stem = Path(name).stem
    if "." in stem:  # "lecture.en" -> "lecture"
        stem = stem.rsplit(".", 1)[0]
    return stem
