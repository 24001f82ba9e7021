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
    opening: str = ""
    """The reply's fixed start, e.g. '{"sentences": [': llama.cpp is given it with the prompt (read
    in one batch) instead of generating it a token at a time, and `continuation` constrains the rest.
    Servers get the whole `gbnf` and `schema`. Either way the reply's text includes the opening."""
    continuation: str = ""
    """The GBNF of what follows `opening`."""


class LLM:
    """Base class of LLM backends."""

    backend = "base"
    name = "unknown"
    judges = True
    """Whether the model can judge evidence (pick exact quotes, say when they do not suffice)."""

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

    def yes_probability(self, messages: Messages) -> float | None:
        """P("Yes") against P("No") as the reply's first word, from the model's own token
        probabilities; None when the backend cannot tell (the caller then uses the model's word)."""
        return None


GGUF_MAGIC = b"GGUF"


def physical_cores() -> int:
    """CPU cores this process may use, counting hyper-threads once: llama.cpp's matrix work runs no
    faster on a core's second thread and two threads contending for one core slow each other."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in allowed:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
        except OSError:
            siblings = str(cpu)
        cores.add(siblings)
    return max(1, len(cores))


class LlamaCppLLM(LLM):
    """A GGUF model run in process by llama-cpp-python."""

    backend = "llama-cpp"

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        prompt_lookup: int | None = None,
    ):
        from .models import resolve

        path, builtin = resolve(str(model_path) if model_path else None)
        self.path = path
        self.name = builtin.name if builtin else path.name
        # A model you chose yourself is trusted to judge evidence; a built-in one says whether it can.
        self.judges = builtin.judges if builtin else True
        self.n_ctx = n_ctx
        self.n_threads = n_threads or physical_cores()
        _check_gguf(path)
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMError("llama-cpp-python is not installed; pip install llama-cpp-python.") from exc
        _silence_llama_log()
        options: dict[str, Any] = {}
        self.prompt_lookup = prompt_lookup
        if prompt_lookup:
            # Answers copy spans of the evidence: drafting the next tokens from the prompt's own
            # n-grams lets one batched step confirm several of them.
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            options["draft_model"] = LlamaPromptLookupDecoding(num_pred_tokens=prompt_lookup)
        try:
            self.llama = Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=self.n_threads, seed=seed, verbose=False, **options
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LLMError(f"Could not load {path} ({exc}).") from exc
        # A base model's GGUF carries no chat template; llama-cpp would then fall back to Llama 2's
        # [INST] format, which such a model only imitates. Plain text with a cue line works better.
        self.chat = bool(self.llama.metadata.get("tokenizer.chat_template"))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.name,
            "file": self.path.name,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
        }

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

    def yes_probability(self, messages: Messages) -> float | None:
        """Read the next-token distribution after the chat prompt, reusing the evaluated prefix.

        One forward pass over the few tokens that differ from what llama.cpp already holds (the
        verdict question appended to the judge's conversation), no sampling: a calibrated number
        where a generated "true"/"false" is only the argmax of it.
        """
        import numpy as np

        llama = self.llama
        tokens = llama.tokenize(self.render(messages).encode("utf-8"), special=True)  # as create_completion does
        if len(tokens) >= self.n_ctx:
            raise LLMError("The model could not take this prompt (longer than its context).")
        held = llama.input_ids[: llama.n_tokens].tolist()
        same = 0
        for a, b in zip(held, tokens):
            if a != b:
                break
            same += 1
        same = min(same, len(tokens) - 1)  # at least one token is evaluated, so the logits are fresh
        llama.n_tokens = same
        llama.eval(tokens[same:])
        logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),))
        yes, no = self._answer_tokens()
        top = float(logits.max())
        weight = np.exp(logits.astype(np.float64) - top)
        p_yes, p_no = float(weight[yes].sum()), float(weight[no].sum())
        return p_yes / (p_yes + p_no) if p_yes + p_no > 0 else None

    def _answer_tokens(self) -> tuple[list[int], list[int]]:
        if not hasattr(self, "_yes_no"):
            first = {
                w: self.llama.tokenize(w.encode(), add_bos=False, special=False)[0] for w in ("Yes", "yes", "No", "no")
            }
            self._yes_no = ([first["Yes"], first["yes"]], [first["No"], first["no"]])
        return self._yes_no

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

        opening = constraint.opening if constraint and constraint.continuation else ""
        gbnf = (constraint.continuation if opening else constraint.gbnf) if constraint else None
        grammar = LlamaGrammar.from_string(gbnf, verbose=False) if gbnf else None
        prefix += opening
        if opening:
            yield opening
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

    def yes_probability(self, messages: Messages) -> float | None:
        """From the server's `top_logprobs` for one token, when it gives them (OpenAI and vLLM do;
        llama.cpp's server only with --logits_all); otherwise None, asked only once."""
        if getattr(self, "_no_logprobs", False):
            return None
        body = {"model": self.name, "messages": messages, "max_tokens": 1, "temperature": 0.0}
        body |= {"logprobs": True, "top_logprobs": 10}
        try:
            with urllib.request.urlopen(self._request(body), timeout=min(self.timeout, 30)) as response:
                choice = json.loads(response.read())["choices"][0]
            top = choice["logprobs"]["content"][0]["top_logprobs"]
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError, KeyError, IndexError, TypeError):
            self._no_logprobs = True
            return None
        import math

        weights = {"yes": 0.0, "no": 0.0}
        for entry in top:
            word = str(entry.get("token", "")).strip().lower()
            if word in weights:
                weights[word] += math.exp(float(entry["logprob"]))
        total = weights["yes"] + weights["no"]
        return weights["yes"] / total if total > 0 else None

    def _request(self, body: dict[str, Any]) -> urllib.request.Request:
        return urllib.request.Request(
            self.endpoint,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "text/event-stream" if body.get("stream") else "application/json",
                **({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            },
        )

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
        request = self._request(body)
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


def load_llm(
    model_path: str | None = None,
    llm_url: str | None = None,
    llm_model: str | None = None,
    n_ctx: int | None = None,
    threads: int | None = None,
    llm_timeout: float | None = None,
) -> LLM:
    """The LLM `kb ask`'s options name: an OpenAI-compatible server, else a GGUF run in process
    (a built-in model by name, a file by path, or the default model when none is given). What is
    not given takes its default from `kb.options.LLMOptions`, where each is declared once."""
    from .options import LLMOptions
    from .plugins import get_llm

    n_ctx = LLMOptions.n_ctx if n_ctx is None else n_ctx
    llm_timeout = LLMOptions.llm_timeout if llm_timeout is None else llm_timeout

    if llm_url:
        return get_llm("openai-compatible", url=llm_url, model=llm_model, timeout=llm_timeout)
    return get_llm("llama-cpp", model_path=model_path, n_ctx=n_ctx, n_threads=threads)
