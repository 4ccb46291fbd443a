"""A real HTTP server on loopback that answers OpenAI's list routes the way a hostile or
broken server would: the same cursor forever, never a word, a body that is not JSON, an
empty body, a body without end. A real socket, so that the SDK's own transport, timeouts
and body reading are what the tests exercise.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

JOB = {
    "object": "fine_tuning.job",
    "id": "ftjob-loop",
    "model": "gpt-4o-mini-2024-07-18",
    "created_at": 1,
    "status": "succeeded",
    "training_file": "file-x",
    "fine_tuned_model": None,
    "organization_id": "org-1",
    "result_files": [],
    "hyperparameters": {"n_epochs": 1},
    "seed": 1,
}


def _same_cursor_forever(handler) -> None:
    page = {"object": "list", "data": [JOB], "has_more": True, "last_id": JOB["id"]}
    handler.send_body(json.dumps(page).encode(), "application/json")


def _never_answers(handler) -> None:
    handler.server.silent.wait(60)  # until the test ends


def _not_json(handler) -> None:
    handler.send_body(b"<html>hello</html>", "text/html")


def _broken_json(handler) -> None:
    handler.send_body(b'{"object": "list", "data": [', "application/json")


def _empty(handler) -> None:
    handler.send_body(b"", "application/json")


def _without_end(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()  # no length: the body runs until the client hangs up
    chunk = b'{"object": "list", "data": [' + b" " * (1 << 20)
    with contextlib.suppress(OSError):
        for _ in range(2000):  # 2 GB at most, should the client never stop
            handler.wfile.write(chunk)


BEHAVIOURS = {
    "same cursor forever": _same_cursor_forever,
    "never answers": _never_answers,
    "not json": _not_json,
    "broken json": _broken_json,
    "empty body": _empty,
    "body without end": _without_end,
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection, body to the close

    def do_GET(self) -> None:  # the standard library's name
        self.server.requests += 1
        BEHAVIOURS[self.server.behaviour](self)

    def send_body(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def hostile_server(behaviour: str) -> Iterator[ThreadingHTTPServer]:
    """A server behaving as `behaviour` names; its base URL is `server.url`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.behaviour, server.requests, server.silent = behaviour, 0, threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.silent.set()
        server.shutdown()
        server.server_close()
