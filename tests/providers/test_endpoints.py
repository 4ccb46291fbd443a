"""Named endpoints, `tunelab providers`, and keys that go only where they belong.

A small HTTP server on loopback stands in for a stranger's host (an OpenAI-compatible
endpoint the user pointed tunelab at) and records the headers it receives.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import orjson
import pytest

from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.providers.registry import get_provider

PLANTED = {
    "OPENAI_API_KEY": "sk-PLANTED-openai-9f8e7d",
    "TOGETHER_API_KEY": "tgp-PLANTED-together-6c5b4a",
    "ANTHROPIC_API_KEY": "sk-ant-PLANTED-3a2b1c",
}
MINE = "mine-PLANTED-endpoint-0d9c8b"


class Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []

    def do_GET(self) -> None:
        self._record()
        self._send(
            {
                "object": "list",
                "data": [{"id": "served-model", "object": "model", "created": 0, "owned_by": "me"}],
            }
        )

    def do_POST(self) -> None:
        self._record()
        self.rfile.read(int(self.headers.get("content-length", 0)))
        answer = {"role": "assistant", "content": "pong"}
        usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        self._send(
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop", "message": answer}],
                "usage": usage,
            }
        )

    def _record(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()})

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass  # quiet tests


@pytest.fixture
def stranger():
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def keys(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MY_ENDPOINT_KEY", MINE)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def keys_received() -> str:
    return " ".join(h.get("authorization", "") + h.get("x-api-key", "") for h in Recorder.seen)


def test_no_key_reaches_a_host_it_was_not_named_for(stranger, keys, capsys):
    code, out, err = cli(capsys, "chat", f"m@{stranger}", "ping")
    assert code == 0, err
    assert out == "pong\n"
    assert get_provider("openai", base_url=stranger).chat("m", [{"role": "user", "content": "x"}])
    assert get_provider("together", base_url=stranger).chat("m", [{"role": "user", "content": "x"}])
    with pytest.raises(TunelabError):  # the stand-in does not speak Anthropic's API
        get_provider("anthropic", base_url=stranger).chat("m", [{"role": "user", "content": "x"}])
    assert cli(capsys, "providers", "add", "bare", stranger)[0] == 0
    assert cli(capsys, "chat", "bare/m", "ping")[0] == 0
    assert len(Recorder.seen) == 5
    received = keys_received()
    assert not any(key in received for key in (*PLANTED.values(), MINE))


def test_a_key_named_for_an_endpoint_goes_to_it_alone(stranger, keys, capsys):
    assert cli(capsys, "providers", "add", "mine", stranger, "--key-env", "MY_ENDPOINT_KEY")[0] == 0
    code, _out, err = cli(capsys, "chat", "mine/m", "ping")
    assert code == 0, err
    assert [h["authorization"] for h in Recorder.seen] == [f"Bearer {MINE}"]
    assert not any(key in keys_received() for key in PLANTED.values())


def test_endpoints_are_listed_checked_and_removed(stranger, keys, capsys, isolated_home):
    assert cli(capsys, "providers", "add", "vllm", stranger, "--key-env", "MY_ENDPOINT_KEY")[0] == 0
    code, out, _ = cli(capsys, "providers", "list", "--json")
    listed = orjson.loads(out)
    assert {"name": "vllm", "base_url": stranger, "key_variable": "MY_ENDPOINT_KEY"} in listed[
        "endpoints"
    ]
    anthropic = next(p for p in listed["providers"] if p["name"] == "anthropic")
    assert anthropic["capabilities"] == ["chat"] and anthropic["key_set"] is True
    assert MINE not in (isolated_home / "endpoints.json").read_text()

    code, out, err = cli(capsys, "providers", "check", "vllm")
    assert code == 0, err
    assert out.startswith("✓ vllm") and "served-model answered" in out

    assert cli(capsys, "providers", "remove", "vllm")[0] == 0
    assert orjson.loads(cli(capsys, "providers", "list", "--json")[1])["endpoints"] == []


def test_an_unreachable_endpoint_is_one_clear_line(keys, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    cli(capsys, "providers", "add", "dead", dead)
    code, out, err = cli(capsys, "providers", "check", "dead", "--model", "m")
    assert code == 1 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith(f"✗ dead ({dead}): provider_unreachable")


def test_a_key_is_never_taken_for_a_variable_name(keys, capsys):
    code, _, err = cli(
        capsys, "providers", "add", "x", "http://127.0.0.1:1/v1", "--key-env", "sk-live-123"
    )
    assert code == 2 and "invalid_key_variable" in err and "sk-live-123" not in err
    code, _, err = cli(capsys, "providers", "add", "openai", "http://127.0.0.1:1/v1")
    assert code == 2 and "endpoint_name_taken" in err


def test_a_password_in_a_url_is_never_printed(keys, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = "PLANTED-url-password-5e4d"
    url = f"http://bob:{secret}@127.0.0.1:{port}/v1"
    shown = f"http://bob:***@127.0.0.1:{port}/v1"
    code, out, err = cli(capsys, "providers", "add", "locked", url)
    assert code == 0 and shown in out
    listed = orjson.loads(cli(capsys, "providers", "list", "--json")[1])
    assert {"name": "locked", "base_url": shown, "key_variable": None} in listed["endpoints"]
    printed = [out, err, cli(capsys, "providers", "list")[1]]
    printed += cli(capsys, "providers", "check", "locked", "--model", "m")[1:]
    printed += cli(capsys, "chat", f"m@{url}", "hi")[1:]
    assert all(secret not in text for text in printed)
    assert f"({shown})" in printed[4]  # the check's line names the endpoint, password hidden
