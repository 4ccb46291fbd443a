"""The server under test: a real `tunelab serve` process on loopback, with its own
TUNELAB_HOME, or the app in this process behind a TestClient (and the openai SDK over it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from tiny import save_tiny_model, write_chat_jsonl
from tunelab.server.app import ServerConfig, create_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, home: Path, *flags: str) -> None:
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "TUNELAB_HOME": str(home)}
        env.pop("TUNELAB_API_KEY", None)
        home.mkdir(parents=True, exist_ok=True)
        self.log = (home / "server.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunelab", "serve", "--port", str(self.port), *flags],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s: {self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.home / "server.log").read_text(errors="replace")

    def post_chat(self, model: str, body: dict) -> dict:
        """One chat completion, straight over HTTP."""
        answer = httpx.post(
            f"{self.url}/chat/completions", json={**body, "model": model}, timeout=120
        )
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def client():
    """The app in this process as `tunelab serve` starts by default (known models only), with
    no worker; requests go to `testserver`."""
    app = create_app(ServerConfig(allowed_hosts=("testserver",), start_worker=False))
    with TestClient(app) as test_client:
        yield test_client


def sdk(client: TestClient) -> openai.OpenAI:
    """The unmodified openai SDK over a TestClient, without retries."""
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key="x", http_client=client, max_retries=0
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    running = Server(tmp_path_factory.mktemp("server-home"), "--model", str(tiny_model))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="module")
def train_path(tmp_path_factory) -> Path:
    return write_chat_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.fixture
def start_server():
    """Start `tunelab serve` processes on a given home (and flags); all stopped afterwards."""
    started = []

    def start(home: Path, *flags: str) -> Server:
        started.append(Server(home, *flags))
        return started[-1]

    yield start
    for running in started:
        running.stop()
