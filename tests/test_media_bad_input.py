"""Bad recordings and video URLs: each gets a clear status and reason in bounded time, and the run goes on
(a good recording in the same run is ingested).

Real files made with ffmpeg, real yt-dlp against servers on 127.0.0.1, the real `kb` command.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_media import ffmpeg, serve, speak_clip  # noqa: F401  (serve is a fixture)

from tests.helpers import TEST_PLUGINS, children_cpu_s, run_kb

EMBEDDER = "test/hash-embedder"

# A yt-dlp extractor plugin (yt-dlp loads `yt_dlp_plugins.extractor` packages found on sys.path) for
# a site whose video is private: it fails exactly as yt-dlp's YouTube extractor does for one.
PRIVATE_PLUGIN = """
from yt_dlp.extractor.common import InfoExtractor
from yt_dlp.utils import ExtractorError


class KbTestPrivateIE(InfoExtractor):
    _VALID_URL = r"https?://127\\.0\\.0\\.1:\\d+/private/(?P<id>\\w+)"

    def _real_extract(self, url):
        video_id = self._match_id(url)
        self._download_webpage(url, video_id)
        raise ExtractorError(
            "Private video. Sign in if you've been granted access to this video. Use --cookies-from-browser or "
            "--cookies for the authentication.", expected=True, video_id=video_id)
"""


def kb_ingest(tmp_path: Path, *targets: str, extra_env: dict | None = None, args: tuple = ()) -> tuple[dict, float]:
    env = {**TEST_PLUGINS, "XDG_CACHE_HOME": str(tmp_path / "cache"), **(extra_env or {})}
    started = children_cpu_s()
    # The subprocess's timeout is the hang guard; what the run cost is its CPU time (not the wall
    # clock, which a busy machine stretches).
    done = run_kb(
        "ingest", str(tmp_path / "kb.db"), *targets, "--embedder", EMBEDDER, "--json", *args, env_extra=env, timeout=240
    )
    cpu_s = children_cpu_s() - started
    assert done.returncode == 1, done.stderr  # some sources failed; the command still finished
    reports = {}
    for report in json.loads(done.stdout)["sources"]:
        reports[report["uri"].rsplit("/", 1)[-1]] = report
    return reports, cpu_s


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_bad_recordings_each_get_a_reason_and_the_run_goes_on(tmp_path, serve):  # noqa: F811
    course = tmp_path / "course"
    course.mkdir()
    good = speak_clip("Baseflow keeps rivers running in dry weather.", course / "good.wav")
    # Corrupt: bytes that are no media format at all.
    (course / "corrupt.mp3").write_bytes(bytes(range(256)) * 40)
    # Truncated, as an interrupted download leaves it: an MP4 whose index (moov, written last) is missing,
    # and a "fast start" MP4 (index first) that stops a few seconds into its 20.
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=16000:duration=20",
        "-c:a",
        "aac",
        str(tmp_path / "full.mp4"),
    )
    data = (tmp_path / "full.mp4").read_bytes()
    (course / "truncated.mp4").write_bytes(data[: len(data) // 2])
    ffmpeg("-i", str(tmp_path / "full.mp4"), "-c", "copy", "-movflags", "+faststart", str(tmp_path / "fast.mp4"))
    data = (tmp_path / "fast.mp4").read_bytes()
    (course / "truncated-faststart.mp4").write_bytes(data[: len(data) // 4])
    # A 24-hour recording: two seconds of Opus whose timestamps are stretched 43,200 times, so the
    # container says 24 h exactly as a real day-long file's would (the limit reads only that).
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=8000:duration=2", "-c:a", "libopus", "-b:a", "6k",
           str(tmp_path / "short.mkv"))  # fmt: skip
    ffmpeg("-itsscale", "43200", "-i", str(tmp_path / "short.mkv"), "-c", "copy", str(course / "all-day.mkv"))
    # A video without a sound track.
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48:r=5", "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(course / "silent-film.mp4"))  # fmt: skip

    # URLs: nothing listening on a port, and a site whose video is private (the plugin above).
    plugins = tmp_path / "plugins" / "yt_dlp_plugins" / "extractor"
    plugins.mkdir(parents=True)
    (plugins / "kbtest_private.py").write_text(PRIVATE_PLUGIN, encoding="utf-8")
    site = tmp_path / "site"
    (site / "private").mkdir(parents=True)
    (site / "private" / "abc123").write_text("<html><title>members</title></html>", encoding="utf-8")
    server = serve(site)
    unreachable = f"http://127.0.0.1:{closed_port()}/lecture.mp4"
    private = f"{server.url}/private/abc123"

    reports, cpu_s = kb_ingest(
        tmp_path, str(course), unreachable, private,
        args=("--allow-private",),
        extra_env={"PYTHONPATH": str(tmp_path / "plugins") + ":" + str(Path(__file__).parent)},
    )  # fmt: skip

    assert reports["good.wav"]["status"] == "ok", reports["good.wav"]
    expected = {
        "corrupt.mp3": "not a readable audio or video file: corrupt or truncated",
        "truncated.mp4": "not a readable audio or video file: corrupt or truncated",
        "truncated-faststart.mp4": "truncated or damaged: the audio stops at",
        "all-day.mkv": "24 h 00 min long, over the 4 h 00 min limit for one recording",
        "silent-film.mp4": "no audio track (it has only video): nothing to transcribe",
        "lecture.mp4": "could not connect: connection refused",
        "abc123": "private video: only accounts the uploader invited can watch it",
    }
    for name, reason in expected.items():
        report = reports[name]
        assert report["status"] == "error" and reason in report["reason"], report
    assert "/private/abc123" in server.requests  # the private video's page really was asked for
    assert len(reports) == 8
    assert cpu_s < 60  # every bad file refused from its header or at once, never decoded for long
    assert good.exists()


@pytest.mark.slow
def test_a_server_that_never_answers_is_bounded_by_the_time_limit(tmp_path):
    """A download stalls: the per-source --timeout ends it with a reason, and the next source is read."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted: list[socket.socket] = []

    def accept_and_stay_silent():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    course = tmp_path / "course"
    course.mkdir()
    speak_clip("Rain falls on the hills.", course / "talk.wav")
    (course / "talk.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.500\nRain falls on the hills.\n", encoding="utf-8")
    stalled = f"http://127.0.0.1:{listener.getsockname()[1]}/lecture.mp4"
    try:
        reports, cpu_s = kb_ingest(tmp_path, stalled, str(course), args=("--allow-private", "--timeout", "4"))
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    report = reports["lecture.mp4"]
    assert report["status"] == "error", report
    assert report["reason"] == "yt-dlp took longer than 4 s to read (the per-source time limit)"
    assert reports["talk.wav"]["status"] == "ok"
    assert cpu_s < 60  # waiting on the stalled server costs no CPU; the time limit ended it


def test_yt_dlp_errors_read_as_one_sentence():
    """The messages yt-dlp raises (as DownloadError, the way YoutubeDL reports them) map to clear reasons."""
    from yt_dlp.utils import DownloadError, ExtractorError

    from connectors.ytdlp import explain

    def raised(message: str, extractor: str = "youtube", video: str = "dQw4w9WgXcQ") -> str:
        cause = ExtractorError(message, expected=True, video_id=video, ie=extractor)
        return str(DownloadError(f"ERROR: {cause.msg}", (type(cause), cause, None)))

    cases = {
        raised("Private video. Sign in if you've been granted access to this video. Use --cookies"): "private video",
        raised("Video unavailable. This video has been removed by the uploader"): "video unavailable",
        raised("Sign in to confirm your age. This video may be inappropriate for some users."): "age-restricted video",
        raised("Join this channel to get access to members-only content like this video"): "members-only video",
        raised("Unsupported URL: https://example.org/", "generic", "x"): "no video found at this URL",
        "ERROR: [generic] Unable to download webpage: HTTP Error 404: Not Found": "the server answered HTTP 404",
        "ERROR: [generic] Unable to download webpage: <urlopen error [Errno -2] Name or service not known>": (
            "host not found"
        ),
        "ERROR: something new went wrong": "yt-dlp could not read it (something new went wrong)",
    }
    for message, reason in cases.items():
        assert explain(message).startswith(reason), (message, explain(message))


def test_urls_the_fetcher_claims():
    from connectors.ytdlp import YtDlpFetcher

    assert YtDlpFetcher.claims("https://www.youtube.com/watch?v=dQw4w9WgXcQ")
    assert YtDlpFetcher.claims("https://www.youtube.com/playlist?list=PLx0sYbCqOb8TBPRdmBHs5Iftvv9TPboYG")
    assert YtDlpFetcher.claims("https://youtu.be/dQw4w9WgXcQ")
    assert YtDlpFetcher.claims("http://127.0.0.1:8000/media/lecture.MP4")
    assert YtDlpFetcher.claims("https://cdn.example.org/course/week1.m3u8")
    assert not YtDlpFetcher.claims("https://example.org/course/")
    assert not YtDlpFetcher.claims("https://example.org/notes.pdf")
    assert not YtDlpFetcher.claims("ftp://example.org/lecture.mp4")


def test_private_addresses_are_refused_without_allow_private(tmp_path):
    from connectors.ytdlp import refuse_private

    assert "--allow-private" in refuse_private("http://127.0.0.1:9/lecture.mp4", {})
    assert "--allow-private" in refuse_private("http://[::1]:9/lecture.mp4", {})
    assert "--allow-private" in refuse_private("http://10.1.2.3/lecture.mp4", {})
    assert "--allow-private" in refuse_private("http://169.254.169.254/latest/meta-data.mp4", {})
    assert refuse_private("http://127.0.0.1:9/lecture.mp4", {"allow_private": True}) is None


def test_ffmpeg_and_espeak_are_installed():
    """The fixtures need them (Makefile: DEBS); a clear failure beats a confusing one later."""
    for command in (["ffmpeg", "-version"], ["espeak-ng", "--version"]):
        assert subprocess.run(command, capture_output=True).returncode == 0, command


def test_transcription_time_is_budgeted_and_a_slow_pace_refused_early(tmp_path):
    from connectors.media import MediaConnector
    from connectors.transcribe import check_pace
    from kb.errors import SourceError
    from kb.types import SourceFile

    clip = speak_clip("Rain falls on the hills.", tmp_path / "clip.wav")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=8000:duration=2", "-c:a", "libopus", "-b:a", "6k",
           str(tmp_path / "short.mkv"))  # fmt: skip
    ffmpeg("-itsscale", "43200", "-i", str(tmp_path / "short.mkv"), "-c", "copy", str(tmp_path / "day.mkv"))
    (tmp_path / "junk.mp3").write_bytes(b"\x00junk" * 100)

    def budget(path: Path, **options) -> float:
        return MediaConnector().time_budget(SourceFile(uri=path.as_uri(), path=path, data=b"", options=options))

    assert 60 < budget(clip) < 62  # two seconds of speech: a minute and a second
    assert budget(tmp_path / "day.mkv") == 4 * 3600 * 0.5 + 60  # capped by the duration limit
    assert budget(tmp_path / "day.mkv", max_duration_s=7200) == 3600 + 60
    assert budget(tmp_path / "junk.mp3") == 0.0  # no extra time for what cannot even be probed

    # An hour of audio transcribed at half real time cannot finish in 300 s: refused after its first minute.
    with pytest.raises(SourceError, match="would take about 30 minutes here, more than the per-source time limit"):
        check_pace(60.0, 3600.0, 30.0, time.monotonic() + 300)
    check_pace(60.0, 3600.0, 3.0, time.monotonic() + 600)  # 0.05x real time fits
    check_pace(30.0, 3600.0, 30.0, time.monotonic() + 1)  # not judged before a minute of audio


def test_max_hours_refuses_a_longer_recording_from_its_header(tmp_path):
    # The 78-second sample lecture against a 36-second limit: refused before any decoding.
    from tests.helpers import COURSE

    lecture = COURSE / "gauging-a-river-lecture.ogg"
    proc = run_kb(
        "ingest",
        str(tmp_path / "kb.db"),
        str(lecture),
        "--max-hours",
        "0.01",
        "--json",
        "--embedder",
        "test/hash-embedder",
        env_extra=TEST_PLUGINS,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)["sources"][0]
    assert report["status"] == "error" and report["reason"].endswith("over the 36 s limit for one recording"), report
    assert report["seconds"] < 5, report
