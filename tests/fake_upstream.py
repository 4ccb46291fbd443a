"""A hosted provider on loopback: OpenAI's chat completions and Anthropic's messages, streamed.

A real HTTP server (tests of `tunelab serve` need one: the server runs in another process).
The model a request names says how the upstream behaves:
- `gated`: the first delta, then a wait until the test opens `gate` (or 120 s), then the rest.
  Whether the test opened it in time is in `released`: a relay that buffered the answer
  cannot show the client the first delta before the upstream finishes, so it reads False;
- `breaks`: a delta, then an error event whose message quotes the credentials it got;
- `drops`: a delta, then the connection closes in the middle of the body;
- `refuses`: 401 before any delta, quoting the credentials;
- `whole`, or a request not streamed: the whole answer at once, as JSON: "Hello, world", or
  what `reply(model, messages)` returns when the upstream was given one (a judge, say).
  With `hold=(model, n)`, the n-th request for that model sets `holding` and waits for
  `gate` before it is answered: a test acts (presses Ctrl-C) while that request is open.
Every request's headers are kept in `headers`.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DELTAS = ("Hello", ", ", "world")
USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
GATE_SECONDS = 120  # room for a busy machine; the test opens the gate long before


class Upstream:
    def __init__(
        self,
        reply: Callable[[str, list[dict]], str] | None = None,
        hold: tuple[str, int] | None = None,
    ) -> None:
        self.gate = threading.Event()
        self.released: list[bool] = []
        self.headers: list[dict] = []
        self.reply, self.hold = reply, hold
        self.holding = threading.Event()
        self.requests: Counter[str] = Counter()  # per model
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.upstream = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def credentials(self) -> str:
        return " ".join(h.get("authorization", "") + h.get("x-api-key", "") for h in self.headers)

    def whole_text(self, model: str, messages: list[dict]) -> str:
        with self._lock:
            self.requests[model] += 1
            held = self.hold == (model, self.requests[model])
        if held:
            self.holding.set()
            self.released.append(self.gate.wait(GATE_SECONDS))
        return self.reply(model, messages) if self.reply else "".join(DELTAS)

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        upstream: Upstream = self.server.upstream
        headers = {k.lower(): v for k, v in self.headers.items()}
        upstream.headers.append(headers)
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        behaviour = body["model"].rsplit("-", 1)[-1]
        credentials = headers.get("authorization", "") + headers.get("x-api-key", "")
        speaks = _Anthropic() if self.path.endswith("/messages") else _OpenAI(body["model"])
        if behaviour == "refuses":
            return self._send_json(401, speaks.error(f"bad credentials: {credentials}"))
        if not body.get("stream") or behaviour == "whole":
            text = upstream.whole_text(body["model"], body["messages"])
            return self._send_json(200, speaks.whole(text))
        self._stream(upstream, speaks, behaviour, credentials)

    def _stream(self, upstream: Upstream, speaks, behaviour: str, credentials: str) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        if behaviour == "drops":
            self.send_header("content-length", "100000")  # it ends short of that
        else:
            self.send_header("connection", "close")  # the body ends where the connection does
        self.end_headers()
        self._events(speaks.start())
        self._events(speaks.delta(DELTAS[0]))
        if behaviour == "breaks":
            self._events(speaks.error(f"the model crashed; credentials were {credentials}"))
        elif behaviour == "gated":
            upstream.released.append(upstream.gate.wait(GATE_SECONDS))
        if behaviour in ("breaks", "drops"):
            self.close_connection = True
            return
        for text in DELTAS[1:]:
            self._events(speaks.delta(text))
        self._events(speaks.end())
        self.close_connection = True

    def _events(self, events: list[tuple[str | None, object]]) -> None:
        for name, data in events:
            line = f"event: {name}\n" if name else ""
            payload = data if isinstance(data, str) else json.dumps(data)
            self.wfile.write(f"{line}data: {payload}\n\n".encode())
        self.wfile.flush()

    def _send_json(self, status: int, body) -> None:
        data = json.dumps(body[0][1] if isinstance(body, list) else body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass  # quiet tests


class _OpenAI:
    """`chat.completion.chunk` events, as OpenAI and compatible servers send them."""

    def __init__(self, model: str) -> None:
        self.model = model

    def _chunk(self, choices: list, usage: dict | None = None) -> dict:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }

    def start(self) -> list:
        delta = {"role": "assistant", "content": ""}
        return [(None, self._chunk([{"index": 0, "delta": delta, "finish_reason": None}]))]

    def delta(self, text: str) -> list:
        delta = {"content": text}
        return [(None, self._chunk([{"index": 0, "delta": delta, "finish_reason": None}]))]

    def end(self) -> list:
        return [
            (None, self._chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}])),
            (None, self._chunk([], USAGE)),
            (None, "[DONE]"),
        ]

    def error(self, message: str) -> list:
        return [(None, {"error": {"message": message, "type": "server_error", "code": None}})]

    def whole(self, text: str) -> dict:
        message = {"role": "assistant", "content": text}
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "usage": USAGE,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }


class _Anthropic:
    """Messages API events, as Anthropic sends them."""

    def start(self) -> list:
        usage = {"input_tokens": USAGE["prompt_tokens"], "output_tokens": 1}
        message = {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        block = {"type": "text", "text": ""}
        return [
            ("message_start", {"type": "message_start", "message": message}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            ),
        ]

    def delta(self, text: str) -> list:
        delta = {"type": "text_delta", "text": text}
        return [
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        ]

    def end(self) -> list:
        usage = {"output_tokens": USAGE["completion_tokens"]}
        delta = {"stop_reason": "end_turn", "stop_sequence": None}
        return [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "usage": usage, "delta": delta}),
            ("message_stop", {"type": "message_stop"}),
        ]

    def error(self, message: str) -> list:
        return [("error", {"type": "error", "error": {"type": "api_error", "message": message}})]

    def whole(self, text: str) -> dict:
        usage = {
            "input_tokens": USAGE["prompt_tokens"],
            "output_tokens": USAGE["completion_tokens"],
        }
        return {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }


def paris_judge(messages: list[dict]) -> str:
    """A judge's reply that prefers answers naming Paris: 9 against 3 on every trait, or the
    answer that names it as the winner (a tie when both or neither do)."""
    user = messages[-1]["content"]
    blocks = dict(re.findall(r'<data-\w+ name="([^"]+)">\n(.*?)\n</data-\w+>', user, re.DOTALL))
    if "first answer" in blocks:
        first, second = "Paris" in blocks["first answer"], "Paris" in blocks["second answer"]
        winner = "tie" if first == second else ("first" if first else "second")
        return f"Compared. {json.dumps({'winner': winner, 'reason': 'names the city'})}"
    score = 9 if "Paris" in blocks["answer"] else 3
    traits = re.findall(r"^- (\w+):", user, re.MULTILINE)
    return json.dumps({"scores": {t: score for t in traits}, "reason": "checked"})
