"""Video URLs through yt-dlp's Python API: YouTube and the other sites it knows, playlists, and
direct media links (its generic extractor).

Captions first: when a video has subtitles (uploaded, then automatic; English, then the video's own
language) only they are downloaded, never the media. Otherwise the smallest sensible audio-only
format is downloaded into a private temporary folder as "ID.EXT" and handed to the media connector.
Every call is bounded: socket timeout, few retries, a maximum file size, a maximum duration, a
playlist length limit and, around each video, the engine's per-source deadline. No post-processor
or --exec hook ever runs; yt-dlp reads no configuration file through its API.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from kb import FetchContext, Fetched, SourceError, SourceTimeout, deadline, option, read_options

from ._timed import MAX_MEDIA_BYTES, MEDIA_SUFFIXES, DurationOptions, format_duration
from .safe_http import FetchError, NetworkOptions, address_problem, resolve

# Streaming manifests are media too: yt-dlp reads their formats and subtitle tracks.
DIRECT_SUFFIXES = MEDIA_SUFFIXES + (".m3u8", ".mpd")
SOCKET_TIMEOUT_S = 30.0
RESOLVE_TIMEOUT_S = 10.0
CAPTION_FORMATS = ("vtt", "srt")
# Audio only when the site offers it (a tenth of a video's size), at a modest bitrate: speech models
# hear 16 kHz mono anyway. Never a format that needs merging (that would run ffmpeg).
FORMAT = "bestaudio[abr<=?160]/bestaudio/best[height<=?480]/best/worst"


@dataclass(frozen=True)
class YtDlpOptions(NetworkOptions, DurationOptions):
    """The yt-dlp fetcher's options: the web fetcher's address rule, the recording limit, playlists' length."""

    max_playlist_items: int = option(
        50, "Most videos read from one playlist URL.", minimum=1, flag="--max-playlist-items"
    )


class YtDlpFetcher:
    """Video pages, playlists and direct media URLs (asked before the plain web-page fetcher)."""

    name = "yt-dlp"
    priority = 10
    options = YtDlpOptions

    @classmethod
    def claims(cls, url: str) -> bool:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            return False
        if PurePosixPath(parsed.path).suffix.lower() in DIRECT_SUFFIXES:
            return True
        return _site_extractor(url) is not None

    def fetch(self, url: str, context: FetchContext) -> Iterator[Fetched]:
        refused = refuse_private(url, context.options)
        if refused:
            yield Fetched(uri=url, error=refused)
            return
        workdir = Path(tempfile.mkdtemp(prefix="kb-ytdlp-"))
        try:
            session = _Session(workdir, context)
            try:
                info = session.extract(url)
            except SourceError as exc:
                yield Fetched(uri=url, error=str(exc))
                return
            if info.get("_type") in ("playlist", "multi_video"):
                yield from self._playlist(session, url, info, context)
            else:
                yield from session.videos(url, info)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _playlist(self, session: _Session, url: str, info: dict, context: FetchContext) -> Iterator[Fetched]:
        limit = int(read_options(YtDlpOptions, context.options).max_playlist_items)
        entries = [e for e in (info.get("entries") or []) if e]
        if not entries:
            yield Fetched(uri=url, error="the playlist is empty")
            return
        for entry in entries[:limit]:
            entry_url = entry.get("webpage_url") or entry.get("url")
            if not entry_url:
                continue
            refused = refuse_private(entry_url, context.options)
            if refused:
                yield Fetched(uri=entry_url, error=refused)
                continue
            try:
                entry_info = session.extract(entry_url)
            except SourceError as exc:
                yield Fetched(uri=entry_url, error=str(exc))
                continue
            yield from session.videos(entry_url, entry_info)


class _Session:
    """One URL's yt-dlp calls: shared options, a private folder, errors turned into reasons."""

    def __init__(self, workdir: Path, context: FetchContext):
        self.workdir = workdir
        self.context = context
        self.max_duration = float(read_options(YtDlpOptions, context.options).max_duration_s)
        self.max_bytes = MAX_MEDIA_BYTES

    def params(self, **extra: Any) -> dict[str, Any]:
        logger = _Collector()
        params = {
            "logger": logger,
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "color": {"stdout": "never", "stderr": "never"},
            # File names come from the video id only, restricted to ASCII letters, digits, - and _.
            "outtmpl": {"default": "%(id)s.%(ext)s"},
            "restrictfilenames": True,
            "windowsfilenames": True,
            "paths": {"home": str(self.workdir), "temp": str(self.workdir)},
            "socket_timeout": SOCKET_TIMEOUT_S,
            "retries": 2,
            "fragment_retries": 2,
            "extractor_retries": 1,
            "file_access_retries": 1,
            "max_filesize": self.max_bytes,
            "match_filter": self._match_filter,
            "noplaylist": True,  # watch?v=X&list=Y is the video X; a playlist URL is still a playlist
            "extract_flat": "in_playlist",
            "playlistend": int(read_options(YtDlpOptions, self.context.options).max_playlist_items),
            "format": FORMAT,
            "postprocessors": [],
            "cachedir": False,
            "overwrites": True,
            "updatetime": False,
            "consoletitle": False,
        }
        params.update(extra)
        return params

    def _match_filter(self, info: dict, *, incomplete: bool = False) -> str | None:
        """yt-dlp asks this before each download: a reason to skip, or None."""
        duration = info.get("duration")
        if duration and duration > self.max_duration:
            return self._too_long(duration)
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
            return "a live stream, not a recording"
        return None

    def _too_long(self, duration: float) -> str:
        return (
            f"{format_duration(duration)} long, over the {format_duration(self.max_duration)} limit for one recording"
        )

    def call(self, action: Any, **extra: Any) -> Any:
        """Run one yt-dlp action under the per-source deadline; its errors become one reason."""
        import yt_dlp
        from yt_dlp.utils import DownloadError, YoutubeDLError

        params = self.params(**extra)
        try:
            with deadline(self.context.limits.timeout_s), yt_dlp.YoutubeDL(params) as ydl:
                return action(ydl)
        except SourceTimeout as exc:
            raise SourceError(f"yt-dlp {exc}") from exc
        except DownloadError as exc:
            raise SourceError(explain(params["logger"].first_error() or str(exc))) from exc
        except YoutubeDLError as exc:
            raise SourceError(explain(str(exc))) from exc
        except OSError as exc:
            raise SourceError(f"download failed ({exc.strerror or exc})") from exc

    def extract(self, url: str) -> dict:
        """The video's (or playlist's) information, nothing downloaded."""
        info = self.call(lambda ydl: ydl.extract_info(url, download=False))
        if not info:
            raise SourceError("yt-dlp found no video at this URL")
        return info

    def videos(self, url: str, info: dict) -> Iterator[Fetched]:
        """One video: its captions if it has any, else its audio."""
        uri = info.get("webpage_url") or url
        duration = info.get("duration")
        reason = self._match_filter(info)
        if reason:
            yield Fetched(uri=uri, error=reason)
            return
        metadata = _video_metadata(info)
        # The generic extractor's title is the file name: the recording's own title tag is better.
        title = info.get("title") if info.get("extractor_key") != "Generic" else None
        video_id = _safe_id(info.get("id") or "video")
        previous = self.context.previous(uri)
        if (
            previous
            and info.get("extractor_key") not in (None, "Generic")
            and previous.get("video_id") == info.get("id")
            and previous.get("extractor") == info.get("extractor_key")
        ):
            # A site's video id names fixed content: what was ingested from it is current.
            yield Fetched(uri=uri, name=f"{video_id}.mp4", not_modified=True)
            return
        captions = _pick_captions(info)
        try:
            if captions:
                lang, kind = captions
                path = self._download_captions(info, lang, kind)
                metadata.update(transcript_origin="captions", captions=kind, language=lang.removesuffix("-orig"))
                name = f"{video_id}.{lang}{path.suffix}"
            else:
                path = self._download_media(info)
                suffix = path.suffix.lower() if path.suffix.lower() in MEDIA_SUFFIXES else ".mkv"
                name = f"{video_id}{suffix}"
        except SourceError as exc:
            yield Fetched(uri=uri, error=str(exc))
            return
        if duration:
            metadata["duration"] = duration
        try:
            yield Fetched(uri=uri, name=name, path=path, title=title, metadata=metadata)
        finally:
            path.unlink(missing_ok=True)  # the engine has read it; a playlist must not fill the disk

    def _download_captions(self, info: dict, lang: str, kind: str) -> Path:
        result = self.call(
            lambda ydl: ydl.process_ie_result(dict(info), download=True),
            skip_download=True,
            writesubtitles=kind == "uploaded",
            writeautomaticsub=kind == "automatic",
            subtitleslangs=[re.escape(lang)],
            subtitlesformat="/".join(CAPTION_FORMATS),
        )
        track = ((result or {}).get("requested_subtitles") or {}).get(lang) or {}
        filepath = track.get("filepath")
        if not filepath or not Path(filepath).is_file():
            raise SourceError(f"the {lang} captions could not be downloaded")
        return Path(filepath)

    def _download_media(self, info: dict) -> Path:
        result = self.call(lambda ydl: ydl.process_ie_result(dict(info), download=True))
        downloads = (result or {}).get("requested_downloads") or []
        filepath = downloads[0].get("filepath") if downloads else None
        if not filepath or not Path(filepath).is_file():
            raise SourceError("yt-dlp downloaded nothing (no format it could fetch)")
        return Path(filepath)


class _Collector:
    """yt-dlp's logger: keeps error lines for the report instead of printing them."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        self.errors.append(message)

    def first_error(self) -> str | None:
        return self.errors[0] if self.errors else None


def _safe_id(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", str(value))[:80] or "video"


def _video_metadata(info: dict) -> dict[str, Any]:
    """What is worth keeping about a video: who made it, under what licence, where it lives."""
    metadata: dict[str, Any] = {
        "video_id": info.get("id"),
        "extractor": info.get("extractor_key"),
        "webpage_url": info.get("webpage_url"),
    }
    for key, name in (("uploader", "uploader"), ("channel", "channel"), ("license", "licence")):
        if info.get(key):
            metadata[name] = info[key]
    if info.get("upload_date"):
        metadata["upload_date"] = info["upload_date"]
    return {k: v for k, v in metadata.items() if v is not None}


def _pick_captions(info: dict) -> tuple[str, str] | None:
    """(language, "uploaded" | "automatic") of the captions to use, or None to transcribe.

    Uploaded captions first (a person wrote or checked them), then automatic ones; English first
    (the default embedder and speech model are English), then the video's own language. For
    automatic captions "LANG-orig" is the track in the spoken language, the others are machine
    translations of it.
    """
    spoken = (info.get("language") or "").split("-")[0].lower() or None
    wanted = ["en"] + ([spoken] if spoken and spoken != "en" else [])
    for kind, tracks in (("uploaded", info.get("subtitles")), ("automatic", info.get("automatic_captions"))):
        usable = {
            lang: formats
            for lang, formats in (tracks or {}).items()
            if lang != "live_chat" and any(f.get("ext") in CAPTION_FORMATS for f in formats or [])
        }
        for base in wanted:
            preferred = [f"{base}-orig", base] if kind == "automatic" else [base]
            preferred += sorted(lang for lang in usable if lang.lower().startswith(base + "-"))
            for lang in preferred:
                if lang in usable:
                    return lang, kind
    return None


# Known yt-dlp and network failures, as the sentence a teacher reads in the ingest report.
_REASONS = [
    (re.compile(r"private video", re.I), "private video: only accounts the uploader invited can watch it"),
    (re.compile(r"members[- ]only|join this channel", re.I), "members-only video: it needs a signed-in member"),
    (re.compile(r"confirm your age|age[- ]restricted|inappropriate for some users", re.I), "age-restricted video"),
    (re.compile(r"not available (?:from|in) your (?:location|country)|geo[- ]?restrict", re.I), "not available here"),
    (re.compile(r"video unavailable|has been removed|no longer available|does not exist", re.I), "video unavailable"),
    (re.compile(r"connection refused", re.I), "could not connect: connection refused"),
    (
        re.compile(r"name or service not known|getaddrinfo|nodename nor servname|name resolution", re.I),
        "host not found",
    ),
    (re.compile(r"timed? ?out", re.I), "the server did not answer in time"),
    (re.compile(r"network is unreachable|no route to host", re.I), "network unreachable"),
    (re.compile(r"larger than max-filesize|file is larger than", re.I), "file larger than the size limit"),
    (re.compile(r"unsupported url", re.I), "no video found at this URL"),
    (re.compile(r"requested format is not available|no video formats found", re.I), "no downloadable format"),
    (re.compile(r"does not pass filter \((.*)\)", re.I), None),
]
_HTTP = re.compile(r"HTTP Error (\d{3}):? ?([^;:\n]*)")


def explain(message: str) -> str:
    """One clear sentence for a yt-dlp error message ("ERROR: [youtube] ID: Private video. ...")."""
    text = re.sub(r"^(?:ERROR:\s*)?(?:\[[^\]]+\]\s*)?(?:[\w-]+:\s+)?", "", message.strip(), count=1)
    for pattern, reason in _REASONS:
        match = pattern.search(text)
        if match:
            return reason or match.group(1)
    http = _HTTP.search(text)
    if http:
        return f"the server answered HTTP {http.group(1)} {http.group(2).strip()}".strip()
    first = text.splitlines()[0] if text else "unknown error"
    return f"yt-dlp could not read it ({first[:200]})"


def _site_extractor(url: str) -> str | None:
    """The name of a yt-dlp extractor made for this URL's site, None when only the generic one fits."""
    from yt_dlp.extractor import gen_extractor_classes
    from yt_dlp.plugins import load_all_plugins

    load_all_plugins()  # extractor plugins the user installed count too (YoutubeDL() loads them the same way)
    for extractor in gen_extractor_classes():
        if extractor.ie_key() != "Generic" and extractor.suitable(url):
            return extractor.ie_key()
    return None


def refuse_private(url: str, options: dict[str, Any]) -> str | None:
    """Why a URL may not be fetched (a non-public address without --allow-private), by the web
    fetcher's address rules (IPv4 inside IPv6 included); None when it may."""
    if read_options(NetworkOptions, options).allow_private:
        return None
    host = urlparse(url).hostname
    if not host:
        return "the URL has no host"
    try:
        addresses = resolve(host, 443, RESOLVE_TIMEOUT_S)
    except FetchError as exc:
        return str(exc)
    # yt-dlp connects by itself to whichever address it picks, so every address must be public
    # (the web fetcher only needs one: it connects to the address it checked).
    for address in addresses:
        problem = address_problem(address)
        if problem:
            named = "" if host in addresses else f"{host} resolves to "
            return f"refused: {named}{problem}; pass --allow-private to read it"
    return None
