"""`tunelab serve --max-adapters N`: the flag reaches the server's limits, and the local
provider's model cache holds at most N adapters per base."""

from __future__ import annotations

import uvicorn
from fastapi.testclient import TestClient

from tunelab.cli import main
from tunelab.providers.local.provider import LocalProvider
from tunelab.server import app as server_app
from tunelab.server.app import ServerConfig, create_app


def test_the_flag_reaches_the_server_config(monkeypatch):
    configs: list[ServerConfig] = []
    real_create_app = server_app.create_app

    def recording(config: ServerConfig):
        configs.append(config)
        return real_create_app(config)

    monkeypatch.setattr(server_app, "create_app", recording)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    assert main(["serve", "--port", "0", "--no-worker", "--max-adapters", "3"]) == 0
    assert main(["serve", "--port", "0", "--no-worker"]) == 0
    assert [config.max_adapters for config in configs] == [3, None]


def test_a_bad_count_is_refused(capsys):
    assert main(["serve", "--port", "0", "--max-adapters", "0"]) != 0
    assert "--max-adapters" in capsys.readouterr().err


def test_the_local_model_cache_holds_the_servers_limit():
    config = ServerConfig(allowed_hosts=("testserver",), start_worker=False, max_adapters=2)
    with TestClient(create_app(config)) as client:
        limits = client.app.state.inference.limits
        assert limits.max_adapters == 2
        provider = LocalProvider()
        provider.start_serving(limits)
        try:
            assert provider.model_cache.max_adapters == 2
        finally:
            provider.stop_serving()


def test_without_the_flag_adapters_are_bounded_by_memory_only():
    with TestClient(create_app(ServerConfig(start_worker=False))) as client:
        assert client.app.state.inference.limits.max_adapters is None
