"""What the server refuses, and that every refusal is OpenAI's error envelope.

In-process through the TestClient (fast), except the chunked upload, which needs a real
socket and a real server process so that the bytes on disk can be watched while they arrive.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from server.conftest import Server
from tiny import write_chat_jsonl
from tunelab.registry import Store
from tunelab.server.app import ServerConfig, create_app

EVIL = "https://evil.example"


def assert_envelope(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def upload(client, **headers) -> httpx.Response:
    files = {"file": ("train.jsonl", b'{"messages": []}\n', "application/jsonl")}
    return client.post("/v1/files", files=files, data={"purpose": "fine-tune"}, headers=headers)


def local_job() -> str:
    with Store() as store:
        return store.create_job(provider="local", model="m", status="queued").id


CROSS_SITE = [
    {"Origin": EVIL},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "same-site"},
]


@pytest.mark.parametrize("headers", CROSS_SITE)
def test_a_cross_site_upload_is_refused_and_stores_nothing(client, headers):
    assert_envelope(upload(client, **headers), 403, "cross_site_request")
    assert client.get("/v1/files").json()["data"] == []


def test_a_cross_site_cancel_is_refused_and_the_job_goes_on(client):
    job_id = local_job()
    response = client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers={"Origin": EVIL})
    assert_envelope(response, 403, "cross_site_request")
    assert client.get(f"/v1/fine_tuning/jobs/{job_id}").json()["status"] == "queued"


def test_same_origin_and_non_browser_requests_pass(client):
    assert upload(
        client, Origin="http://testserver", **{"Sec-Fetch-Site": "same-origin"}
    ).is_success
    assert upload(client).is_success  # the SDK and curl send neither header
    job_id = local_job()
    response = client.post(
        f"/v1/fine_tuning/jobs/{job_id}/cancel", headers={"Origin": "http://localhost:8000"}
    )
    assert response.json()["status"] == "cancelled"


def test_reading_is_not_refused_cross_site(client):
    assert client.get("/v1/files", headers={"Origin": EVIL}).status_code == 200


def test_a_json_route_takes_only_json(client):
    body = '{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    for kind in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": kind} if kind else {}
        response = client.post("/v1/chat/completions", content=body, headers=headers)
        assert_envelope(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/v1/nowhere", 404),
        ("DELETE", "/v1/files", 405),
        ("PUT", "/v1/chat/completions", 405),
        ("OPTIONS", "/v1/chat/completions", 405),
    ],
)
def test_unmatched_routes_and_methods_answer_in_the_envelope(client, method, path, status):
    assert_envelope(client.request(method, path), status)


def test_a_body_that_does_not_fit_the_schema_is_400_in_the_envelope(client):
    response = client.post("/v1/chat/completions", json={"model": "m"})
    error = assert_envelope(response, 400, "missing_required_parameter")
    assert error["param"] == "messages"
    assert_envelope(
        client.post(
            "/v1/chat/completions",
            content="{not json",
            headers={"Content-Type": "application/json"},
        ),
        400,
    )


def test_a_multipart_body_without_a_boundary_is_400_in_the_envelope(client):
    response = client.post(
        "/v1/files", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}
    )
    assert_envelope(response, 400)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("seed", [2**80, -(2**70)])
def test_an_out_of_range_seed_is_a_400_naming_it(client, seed, stream):
    sdk = openai.OpenAI(
        base_url="http://testserver/v1", api_key="x", http_client=client, max_retries=0
    )
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="smollm2-135m-instruct",
            seed=seed,
            stream=stream,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert caught.value.body["param"] == "seed"


def test_an_out_of_range_job_seed_or_max_tokens_is_a_400(client):
    response = client.post(
        "/v1/fine_tuning/jobs", json={"model": "m", "training_file": "f", "seed": 2**80}
    )
    assert assert_envelope(response, 400)["param"] == "seed"
    response = client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2**80},
    )
    assert assert_envelope(response, 400)["param"] == "max_tokens"


# -- a chunked upload past the limit, on a real server ---------------------------------------

CHUNK = 64 * 1024


def bytes_on_disk(pid: int, *directories: Path) -> int:
    """Bytes in files under `directories`, those already unlinked but held open by process
    `pid` included (an upload spool is an anonymous temporary file)."""
    named = sum(
        entry.stat().st_size
        for directory in directories
        if directory.exists()
        for entry in directory.rglob("*")
        if entry.is_file()
    )
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if target.endswith(" (deleted)") and target.startswith(tuple(map(str, directories))):
                held += os.stat(fd).st_size
        except OSError:
            continue  # closed meanwhile
    return named + held


def test_a_chunked_upload_is_stopped_at_the_limit(tmp_path):
    """No Content-Length: the server counts bytes as they arrive and stops at 1 MB, so what
    lands on disk (its upload spool in TMPDIR, its staging files) never passes the limit
    by more than one chunk, however much the client goes on sending."""
    spool = tmp_path / "tmp"
    spool.mkdir()
    os.environ["TMPDIR"] = str(spool)  # the server process inherits it; undone below
    try:
        server = Server(tmp_path / "home", "--max-upload-mb", "1")
    finally:
        del os.environ["TMPDIR"]
    watched = (spool, tmp_path / "home" / "files")
    peak, sent = 0, 0
    line = write_chat_jsonl(tmp_path / "one.jsonl").read_bytes().splitlines()[0] + b"\n"

    def body():
        nonlocal peak, sent
        boundary = b"--tunelabtest\r\n"
        yield (
            boundary
            + b'Content-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
            + boundary
            + b'Content-Disposition: form-data; name="file"; '
            b'filename="big.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        )
        block = line * (CHUNK // len(line))
        while sent < 64 * (1 << 20):
            peak = max(peak, bytes_on_disk(server.process.pid, *watched))
            sent += len(block)
            yield block

    try:
        with httpx.Client(timeout=120) as http:
            try:
                response = http.post(
                    f"{server.url}/files",
                    content=body(),
                    headers={"Content-Type": "multipart/form-data; boundary=tunelabtest"},
                )
            except httpx.TransportError:
                response = None  # the server closed the connection after refusing: allowed
            if response is not None:
                assert_envelope(response, 413, "file_too_large")
            assert http.get(f"{server.url}/files").json()["data"] == []
            peak = max(peak, bytes_on_disk(server.process.pid, *watched))
    finally:
        server.stop()
    assert peak <= (1 << 20) + 64 * 1024 + CHUNK


def test_the_studio_shares_the_cross_site_guard(client):
    """The web UI's form posts pass through the same guard as the API."""
    files = {"file": ("train.jsonl", b'{"messages": []}\n', "application/jsonl")}
    refused = client.post("/data/upload", files=files, headers={"Origin": EVIL})
    assert_envelope(refused, 403, "cross_site_request")
    assert (
        client.post("/evals/tasks/x/cancel", headers={"Sec-Fetch-Site": "cross-site"}).status_code
        == 403
    )


def test_a_server_on_a_read_only_home_lists_answers_and_says_why_it_cannot_store(
    tmp_path, monkeypatch, tiny_model, caplog
):
    from test_read_only import read_only

    home = tmp_path / "home"
    home.mkdir()
    with Store(home / "registry.db"):
        pass
    with read_only(home) as view:
        monkeypatch.setenv("TUNELAB_HOME", str(view))
        config = ServerConfig(
            allowed_hosts=("testserver",), start_worker=False, models=(str(tiny_model),)
        )
        with TestClient(create_app(config)) as ro_client:
            assert ro_client.get("/v1/files").json()["data"] == []
            assert ro_client.get("/v1/fine_tuning/jobs").status_code == 200
            error = assert_envelope(upload(ro_client), 503, "home_read_only")
            assert str(view) in error["message"]
            # Answering computes, which registers under compute/: best effort, said once.
            question = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            for _ in range(2):
                answered = ro_client.post(
                    "/v1/chat/completions", json={**question, "model": str(tiny_model)}
                )
                assert answered.status_code == 200, answered.text
    said = [r.getMessage() for r in caplog.records if "cannot register in" in r.getMessage()]
    assert len(said) == 1 and "compute" in said[0]


def test_a_wildcard_bind_with_a_key_answers_the_machines_addresses_but_not_other_names():
    config = ServerConfig(host="0.0.0.0", api_key="s3cret-key-for-tests", start_worker=False)
    key = {"Authorization": "Bearer s3cret-key-for-tests"}
    with TestClient(create_app(config)) as wildcard:
        for host in ("192.168.1.5:8000", "10.0.0.7", "[fe80::1]:8000", "localhost:8000"):
            assert wildcard.get("/v1/models", headers={**key, "Host": host}).status_code == 200
            assert wildcard.get("/v1/models", headers={"Host": host}).status_code == 401
        # A page's own name resolved to this machine (DNS rebinding) is still refused.
        refused = wildcard.get("/v1/models", headers={**key, "Host": "evil.example:8000"})
        assert_envelope(refused, 400, "invalid_host")
        # The studio reached by address posts from its own origin: not cross-site.
        same = {**key, "Host": "192.168.1.5:8000", "Origin": "http://192.168.1.5:8000"}
        assert upload(wildcard, **same).status_code == 200
        assert_envelope(upload(wildcard, **{**same, "Origin": EVIL}), 403, "cross_site_request")
    keyless = ServerConfig(host="0.0.0.0", start_worker=False)  # only a test can build one
    with TestClient(create_app(keyless)) as open_server:
        refused = open_server.get("/v1/models", headers={"Host": "192.168.1.5:8000"})
        assert_envelope(refused, 400, "invalid_host")


def test_serve_on_a_busy_port_says_so_before_claiming_to_have_started(
    capsys, monkeypatch, tmp_path
):
    import socket

    from tunelab.cli import main

    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        capsys.readouterr()
        code = main(["serve", "--port", str(port), "--no-worker"])
    out, err = capsys.readouterr()
    assert code == 3 and "Traceback" not in out + err, err
    assert "error [port_in_use]" in err and str(port) in err
    assert "tunelab API on" not in out + err and "studio on" not in out + err
