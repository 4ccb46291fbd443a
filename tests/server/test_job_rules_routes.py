"""The jobs API's rules reach the server's `/v1/fine_tuning/jobs` and the studio's job form:
the same suffix and metadata limits, and the data validated for the model before a job is
queued (an upload is checked without a model; a job is checked for its model).
"""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from tiny import save_family_model
from tunelab.providers.local import jobs as local
from tunelab.registry import Store
from tunelab.server.app import ServerConfig, create_app


@pytest.fixture(scope="module")
def llama3_model(tmp_path_factory):
    return save_family_model("llama3", tmp_path_factory.mktemp("llama3") / "tiny-llama3")


def client(*models) -> TestClient:
    app = create_app(ServerConfig(start_worker=False, models=tuple(map(str, models))))
    return TestClient(app, base_url="http://localhost")


def chat_file(path, answer: str = "Paris"):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"{answer} {i}"},
            ]
        }
        for i in range(12)
    ]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


def upload(c: TestClient, path) -> dict:
    sent = c.post(
        "/v1/files", files={"file": (path.name, path.read_bytes())}, data={"purpose": "fine-tune"}
    )
    assert sent.status_code == 200, sent.text
    return sent.json()


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"suffix": "s" * 65}, "invalid_suffix"),
        ({"suffix": "a:b"}, "invalid_suffix"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "invalid_metadata"),
        ({"metadata": {"k": "v" * 513}}, "invalid_metadata"),
    ],
)
def test_the_server_applies_the_apis_limits(llama3_model, tmp_path, extra, code):
    with client(llama3_model) as c:
        file = upload(c, chat_file(tmp_path / "train.jsonl"))
        sent = c.post(
            "/v1/fine_tuning/jobs",
            json={"model": str(llama3_model), "training_file": file["id"], **extra},
        )
        assert sent.status_code == 400 and sent.json()["error"]["code"] == code
        with Store() as store:
            assert store.list_jobs() == []


def test_the_server_validates_the_data_for_the_model_before_queueing(llama3_model, tmp_path):
    # `<|eot_id|>` is Llama 3's own control token: harmless text for the upload (checked
    # without a model), an error for a job on a Llama 3 tokenizer.
    with client(llama3_model) as c:
        file = upload(c, chat_file(tmp_path / "train.jsonl", answer="Paris<|eot_id|>"))
        assert file["status"] == "processed"
        sent = c.post(
            "/v1/fine_tuning/jobs", json={"model": str(llama3_model), "training_file": file["id"]}
        )
        error = sent.json()["error"]
        assert sent.status_code == 400 and error["code"] == "invalid_training_data"
        assert file["id"] in error["message"] and str(tmp_path) not in error["message"]
        with Store() as store:
            assert store.list_jobs() == []
        fine = upload(c, chat_file(tmp_path / "fine.jsonl"))
        made = c.post(
            "/v1/fine_tuning/jobs",
            json={"model": str(llama3_model), "training_file": fine["id"], "suffix": "ok"},
        )
        assert made.status_code == 200 and made.json()["status"] == "queued", made.text


def test_the_studio_form_shows_the_apis_refusal(llama3_model, tmp_path):
    with client(llama3_model) as c:
        with Store() as store:
            file = local.register_file(store, chat_file(tmp_path / "train.jsonl"), None)
        refused = c.post(
            "/jobs",
            data={"training_file": file.id, "model": str(llama3_model), "suffix": "my model"},
        )
        assert refused.status_code == 400 and "invalid_suffix" in refused.text
        with Store() as store:
            assert store.list_jobs() == []
