"""Recorded lectures: local audio and video files, and video URLs through yt-dlp.

A recording is probed with PyAV first (audio track, duration, title), so a video without sound, a
corrupt file or a 24-hour recording is refused in milliseconds, before anything is decoded. Its
text comes from captions when it has them (a sidecar "lecture.vtt"/"lecture.en.vtt"), else from a
speech model (connectors/transcribe.py). Sections hold whole sentences or caption cues, each with
its start and end second and the recording's title as heading, and stay within the chunker's size,
so every chunk starts and ends where a sentence does and its times are exact.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kb import Document, SourceError, SourceFile, hookimpl, read_options

from ._timed import MAX_MEDIA_BYTES, MEDIA_SUFFIXES, DurationOptions, Segment, format_duration, group_segments
from .captions import CaptionsConnector, read_caption_file, sidecar_captions
from .transcribe import SAMPLE_RATE, TranscribeOptions, cache_path, choose_model, load_cached, save_cached, transcribe

# A truncated file decodes to less audio than its header declares; VBR MP3s without a Xing header
# misstate their length a little, so only a clear shortfall counts.
TRUNCATED_FRACTION = 0.9
TRUNCATED_MIN_S = 5.0
FIFO_BLOCK = 500_000
TIME_PER_AUDIO_SECOND = 0.5


@dataclass(frozen=True)
class Probe:
    """What the container says about a recording, read without decoding it."""

    duration: float | None
    title: str | None
    codec: str
    tags: dict[str, str]


def probe(path: Path) -> Probe:
    """Audio track, duration and tags from the container header (PyAV); decodes nothing."""
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise SourceError(f"not a readable audio or video file: corrupt or truncated ({_av_reason(exc)})") from exc
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams})
            found = f" (it has only {', '.join(kinds)})" if kinds else ""
            raise SourceError(f"no audio track{found}: nothing to transcribe")
        stream = container.streams.audio[0]
        # The audio track's own length: a video track (a still image) can run on past the sound.
        duration = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None and container.duration > 0:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        tags = {str(k).lower(): str(v) for k, v in {**container.metadata, **stream.metadata}.items()}
        codec = stream.codec_context.name if stream.codec_context else "unknown"
    title = (tags.get("title") or "").strip() or None
    return Probe(duration=duration, title=title, codec=codec, tags=tags)


def _av_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(": '", 1)[0]


def decode_audio(path: Path, max_seconds: float, declared: float | None) -> Any:
    """16 kHz mono float32 samples, as faster-whisper's decode_audio makes them, but checked:
    stops past `max_seconds` (a header can lie about the length) and refuses a file that decodes
    to clearly less audio than it declares (truncated) or to none at all (corrupt)."""
    import av
    import numpy as np

    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    fifo = av.AudioFifo()
    buffer = io.BytesIO()
    samples = 0
    heard = 0.0  # seconds of input decoded, checked against the limit as decoding goes
    damaged = 0
    failure: str | None = None

    def take(frames: Iterable[Any]) -> None:
        nonlocal samples
        for out in frames:
            array = out.to_ndarray()
            buffer.write(array.tobytes())
            samples += array.shape[-1]

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    damaged += 1
                    continue
                for frame in frames:
                    frame.pts = None  # gaps in timestamps must not stop the resampler
                    heard += frame.samples / (frame.sample_rate or SAMPLE_RATE)
                    fifo.write(frame)
                # Resample in blocks, as faster-whisper does: one call per 20 ms frame costs twice the time.
                if fifo.samples >= FIFO_BLOCK:
                    take(resampler.resample(fifo.read()))
                if heard > max_seconds:
                    raise SourceError(f"longer than the {format_duration(max_seconds)} limit for one recording")
    except av.error.FFmpegError as exc:
        failure = _av_reason(exc)
    if fifo.samples:
        take(resampler.resample(fifo.read()))
    take(resampler.resample(None))
    decoded = samples / SAMPLE_RATE
    if samples == 0:
        raise SourceError(f"corrupt audio: nothing could be decoded{f' ({failure})' if failure else ''}")
    if declared and decoded < declared * TRUNCATED_FRACTION and declared - decoded > TRUNCATED_MIN_S:
        raise SourceError(
            f"truncated or damaged: the audio stops at {format_duration(decoded)} "
            f"of the {format_duration(declared)} the file declares"
        )
    if failure and damaged:
        raise SourceError(f"corrupt audio: {damaged} damaged packets, then {failure}")
    audio = np.frombuffer(buffer.getbuffer(), dtype=np.int16).astype(np.float32) / 32768.0
    return audio


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class MediaOptions(TranscribeOptions, DurationOptions):
    """The media connector's options: the speech model, and the longest recording it reads."""


class MediaConnector:
    """Audio and video files: captions when a sidecar file has them, else a speech model."""

    kind = "media"
    suffixes = MEDIA_SUFFIXES
    reads_path = True  # the engine hashes the file as a stream instead of reading it into memory
    transcribes = True  # a Ray run sends it to the workers that keep a speech model loaded
    max_bytes = MAX_MEDIA_BYTES
    options = MediaOptions

    def time_budget(self, source: SourceFile) -> float:
        """Seconds that transcribing this recording may take: half its length plus a minute.

        tiny.en runs at 0.07-0.35x real time on 2 cores (idle to busy, measured), so a lecture needs
        more than the 300 s a document gets. A header that cannot be read gets no extra time (the
        probe in extract refuses it at once), and the duration limit caps the budget.
        """
        try:
            info = probe(Path(source.path))
        except SourceError:
            return 0.0
        max_duration = float(read_options(MediaOptions, source.options).max_duration_s)
        return min(info.duration or 0.0, max_duration) * TIME_PER_AUDIO_SECOND + 60.0

    def extract(self, source: SourceFile) -> Document:
        started = time.monotonic()
        path = Path(source.path)
        max_duration = float(read_options(MediaOptions, source.options).max_duration_s)
        info = probe(path)
        if info.duration is not None and info.duration > max_duration:
            limit = format_duration(max_duration)
            raise SourceError(f"{format_duration(info.duration)} long, over the {limit} limit for one recording")
        title = info.title or path.stem
        metadata: dict[str, Any] = {"audio_codec": info.codec}
        if info.duration is not None:
            metadata["duration"] = round(info.duration, 3)
        for key in ("artist", "author", "copyright", "license"):
            if info.tags.get(key):
                metadata[{"artist": "author", "copyright": "licence", "license": "licence"}.get(key, key)] = info.tags[
                    key
                ]

        captions = sidecar_captions(path) if source.uri.startswith("file:") else None
        if captions is not None:
            segments = read_caption_file(captions, source.limits.max_chars, source.limits.max_bytes)
            metadata.update(transcript_origin="captions", captions_file=captions.name)
        else:
            segments, extra = self._transcribe(source, path, info, max_duration, started)
            metadata.update(extra)
        doc = Document(
            uri=source.uri,
            kind=self.kind,
            title=title,
            sections=group_segments(segments, title),
            metadata=metadata,
        )
        if not doc.sections:
            doc.empty_reason = "no speech recognised" if captions is None else f"{captions.name} has no cues"
        return doc

    def _transcribe(
        self, source: SourceFile, path: Path, info: Probe, max_duration: float, started: float
    ) -> tuple[list[Segment], dict[str, Any]]:
        model = choose_model(source.options)
        # The engine hashed the file already; hash it here only when called on its own.
        cached_at = cache_path(source.content_hash or _sha256_file(path), model)
        transcript = load_cached(cached_at)
        if transcript is None:
            source.progress("decoding audio")
            audio = decode_audio(path, max_duration, info.duration)
            duration = len(audio) / SAMPLE_RATE
            timeout = source.limits.timeout_s
            source.progress("transcribing", 0.0)
            transcript = transcribe(
                audio,
                duration,
                model,
                finish_by=started + timeout if timeout > 0 else None,
                progress=source.progress,
            )
            save_cached(cached_at, transcript, cached_at.name.split("-", 1)[0])
        chars = sum(len(s.text) for s in transcript.segments)
        if chars > source.limits.max_chars:
            raise SourceError(f"too much text (over {source.limits.max_chars:,} characters of transcript)")
        extra = {
            "transcript_origin": transcript.origin,
            "transcript_cached": transcript.cached,
        }
        if transcript.language:
            extra["language"] = transcript.language
        return transcript.segments, extra


@hookimpl
def register_connectors(register):
    register(MediaConnector)
    register(CaptionsConnector)


@hookimpl
def register_fetchers(register):
    from .ytdlp import YtDlpFetcher

    register(YtDlpFetcher)
