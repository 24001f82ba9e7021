"""A deterministic stand-in for the instruct model behind an OpenAI-compatible server on loopback,
for the `kb questions` paths whose subject is not the model (the command, its report, the table).

Asked for a study question (the reply schema names its fields), it writes one from the passage's
first full sentence: the sentence as the quote, its last words as the answer. As the answer
engine's judge it quotes the first passage's first sentence and says yes, as a faithful model would.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hostile_llm import _passages, _sentences

WRONG = ["a copper sheet on a pole", "the wind over the lake", "a line of marble columns"]


def _sentence(passages: list[str]) -> str:
    found = [s for p in passages[:1] for s in _sentences(p) if len(s.split()) >= 8 and s.endswith(".")]
    return found[0] if found else (_sentences(passages[0])[0] if passages else "Nothing.")


def question_reply(fields: list[str], instruction: str, sentence: str) -> dict:
    words = sentence.rstrip(".").split()
    answer = " ".join(words[-3:])
    if "wrong_answers" in fields:
        return {
            "question": f"Which words end this statement: {' '.join(words[:5])}?",
            "answer": answer,
            "wrong_answers": WRONG,
            "quote": sentence,
        }
    if "statement" in fields:
        false = "FALSE" in instruction
        statement = sentence if not false else sentence.rstrip(".") + " in Zanzibar only."
        return {"quote": sentence, "statement": statement}
    if "term" in fields:
        term = max((w.strip(",.;:()") for w in words), key=len)
        return {"sentence": sentence, "term": term}
    return {"question": f"What completes this statement: {' '.join(words[:5])}?", "answer": answer, "quote": sentence}


def reply(body: dict) -> str:
    messages = body.get("messages", [])
    passages = _passages(messages)
    schema = (body.get("response_format") or {}).get("schema") or {}
    fields = schema.get("required", [])
    if "sentences" in fields:  # the answer engine's judge: the first passage's first sentence
        return json.dumps({"sentences": ["1a"], "sufficient": True})
    if fields:
        return json.dumps(question_reply(fields, messages[-1]["content"], _sentence(passages)))
    first = _sentences(passages[0])[0] if passages else "The passages do not say."
    return first.rstrip(".") + " [1]."


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append(body)  # type: ignore[attr-defined]
        if body.get("logprobs"):
            top = [{"token": "Yes", "logprob": -0.01}, {"token": "No", "logprob": -6.0}]
            self._send(
                "application/json", json.dumps({"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]})
            )
            return
        text = reply(body)
        events = "".join(
            f"data: {json.dumps({'choices': [{'delta': {'content': w}}]})}\n\n" for w in re.findall(r"\S+\s*", text)
        )
        self._send("text/event-stream", events + "data: [DONE]\n\n")

    def _send(self, kind: str, text: str) -> None:
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class QuestionsLLM:
    """`with QuestionsLLM() as llm: ... llm.url`."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.requests = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> QuestionsLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
