"""`MODEL@URL` against a real `tunelab serve`: chat, evaluation, and another server in front.

The remote server answers greedily, as the engine does here: the same question gets the same
answer whether the model is asked directly or through the URL.
"""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from conftest import Server
from tunelab.cli import main
from tunelab.server.app import ServerConfig, create_app

pytestmark = pytest.mark.slow  # real server processes, as in test_openai_sdk.py
TSV = "text\tlabel\nWho wrote Hamlet?\tHUM\nWhere is Lima?\tLOC\nHow many legs?\tNUM\n"


@pytest.fixture(scope="module")
def remote(tmp_path_factory, tiny_model):
    running = Server(tmp_path_factory.mktemp("remote-home"), "--model", str(tiny_model))
    yield running
    running.stop()


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_chat_through_the_url_answers_as_the_model_does_here(remote, tiny_model, capsys):
    here = cli(capsys, "chat", str(tiny_model), "Where is Lima?", "--max-tokens", "5")
    there = cli(capsys, "chat", f"{tiny_model}@{remote.url}", "Where is Lima?", "--max-tokens", "5")
    assert here[0] == there[0] == 0, there[2]
    assert there[1] == here[1] and there[1].strip()


def test_evaluation_through_the_url(remote, tiny_model, tmp_path, capsys):
    table = tmp_path / "q.tsv"
    table.write_text(TSV)
    name = f"{tiny_model}@{remote.url}"
    code, out, err = cli(
        capsys, "eval", "classify", "--data", str(table), "--model", name, "--json"
    )
    assert code == 0, err
    assert orjson.loads(out)["models"][name]["n"] == 3


def test_a_server_in_front_answers_for_the_url_it_was_given(remote, tiny_model):
    name = f"{tiny_model}@{remote.url}"
    app = create_app(
        ServerConfig(allowed_hosts=("testserver",), start_worker=False, models=(name,))
    )
    with TestClient(app) as client:
        body = {
            "model": name,
            "messages": [{"role": "user", "content": "Where is Lima?"}],
            "max_tokens": 5,
        }
        front = client.post("/v1/chat/completions", json=body)
    assert front.status_code == 200, front.text
    direct = remote.post_chat(str(tiny_model), body)
    assert front.json()["choices"][0]["message"] == direct["choices"][0]["message"]
