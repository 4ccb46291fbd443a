"""`/docs` serves the API reference offline: rendered from the schema, nothing from a CDN."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tunelab.server.app import ServerConfig, create_app


def test_docs_lists_every_route_and_loads_nothing_from_elsewhere():
    app = create_app(ServerConfig(start_worker=False))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        page = client.get("/docs")
        schema = client.get("/v1/openapi.json").json()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in schema["paths"]:
        assert f"<code>{path}</code>" in page.text, path
    assert "/v1/chat/completions" in page.text and "/v1/fine_tuning/jobs" in page.text
    # No script, stylesheet or image from another host: the page works without a network.
    assert "<script" not in page.text
    assert not re.search(r"(src|href)=['\"]https?://", page.text)
