"""OCR with tesseract, for scanned PDF pages and images: bounded in pixels, time and threads per page.

tesseract (Debian `tesseract-ocr` + `tesseract-ocr-LANG`) is run as a command, one page at a time,
reading the image on stdin and writing text on stdout: nothing is written to disk but the page
image pdftoppm renders. OMP_THREAD_LIMIT=1 because tesseract's OpenMP threads spin-wait on a busy
machine: measured here (2 cores, one page at 3508 px), 2.5 s with one thread against 11 s with its
default threads. A page is rendered (pdftoppm, Debian `poppler-utils`) to at most MAX_SIDE pixels on
its long side (A4 at 300 dpi), which bounds memory whatever the page's declared size.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kb import SourceError, option

PAGE_TIMEOUT_S = 60.0
"""Longest one page may take (a page of text takes 2-4 s here); a page past it is skipped and named."""
MAX_SIDE = 3508
"""Long side of a rendered page, in pixels: A4 at 300 dpi, what tesseract reads best."""
MAX_IMAGE_PIXELS = 60_000_000
"""Largest image source decoded at all (a decompression bomb declares billions)."""
INSTALL_HINT = "install tesseract (apt-get install tesseract-ocr tesseract-ocr-eng) to read it by OCR"


@dataclass(frozen=True)
class OcrOptions:
    """What the PDF and image connectors read by OCR, and in which language."""

    ocr: str = option(
        "auto",
        "Read scanned pages and images with tesseract: pages without a text layer (auto), every page, or none.",
        choices=("auto", "always", "never"),
        flag="--ocr",
    )
    ocr_lang: str = option(
        "eng",
        "Tesseract language(s), e.g. deu or eng+fra (each needs its tesseract-ocr-LANG package).",
        flag="--ocr-lang",
    )


def available() -> bool:
    return shutil.which("tesseract") is not None


@functools.lru_cache(maxsize=1)
def _languages() -> frozenset[str]:
    try:
        proc = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(line.strip() for line in proc.stdout.splitlines()[1:] if line.strip())


def check_language(lang: str) -> None:
    """Refuse a language tesseract has no data for, naming the Debian package that brings it."""
    missing = [part for part in lang.split("+") if part and part not in _languages()]
    if missing:
        have = ", ".join(sorted(_languages() - {"osd"})) or "none"
        raise SourceError(
            f"tesseract has no {'+'.join(missing)} language data (installed: {have}); "
            f"apt-get install {' '.join('tesseract-ocr-' + m.lower().replace('_', '-') for m in missing)}"
        )


def ocr_image(image: bytes, lang: str, timeout: float = PAGE_TIMEOUT_S) -> str:
    """The text tesseract reads in one PNG or JPEG image."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        proc = subprocess.run(
            ["tesseract", "stdin", "stdout", "-l", lang, "--psm", "3"],
            input=image,
            capture_output=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"OCR took longer than {timeout:g} s") from exc
    except OSError as exc:
        raise SourceError(f"tesseract could not run ({exc.strerror or exc}); {INSTALL_HINT}") from exc
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SourceError(f"tesseract failed ({detail[-1] if detail else proc.returncode})")
    return proc.stdout.decode("utf-8", "replace")


def ocr_pdf_pages(
    data: bytes,
    path: Path | None,
    pages: Iterable[int],
    lang: str,
    progress: Callable[..., None],
) -> tuple[dict[int, str], dict[int, str]]:
    """Render each page (1-based) and read it: ({page: text}, {page: why it was not read})."""
    if shutil.which("pdftoppm") is None:
        raise SourceError("rendering scanned pages needs pdftoppm (apt-get install poppler-utils)")
    pages = list(pages)
    texts: dict[int, str] = {}
    failures: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="kb-ocr-") as tmp:
        if path is None or not Path(path).is_file():
            path = Path(tmp) / "source.pdf"
            path.write_bytes(data)
        for done, page in enumerate(pages):
            progress(f"OCR page {page} ({done + 1} of {len(pages)})", done / len(pages))
            out = Path(tmp) / f"page{page}"
            try:
                subprocess.run(
                    ["pdftoppm", "-f", str(page), "-l", str(page), "-scale-to", str(MAX_SIDE), "-png", "-singlefile"]
                    + [str(path), str(out)],
                    capture_output=True,
                    timeout=PAGE_TIMEOUT_S,
                    check=True,
                )
                image = out.with_suffix(".png").read_bytes()
                out.with_suffix(".png").unlink()
                texts[page] = ocr_image(image, lang)
            except subprocess.TimeoutExpired:
                failures[page] = f"rendering took longer than {PAGE_TIMEOUT_S:g} s"
            except (subprocess.CalledProcessError, OSError) as exc:
                failures[page] = f"could not be rendered ({type(exc).__name__})"
            except SourceError as exc:
                failures[page] = str(exc)
    return texts, failures


def page_ranges(pages: Iterable[int]) -> str:
    """[1, 2, 3, 7] -> "1-3, 7"."""
    out: list[str] = []
    run: list[int] = []
    for page in sorted(pages):
        if run and page == run[-1] + 1:
            run.append(page)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [page]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)
