"""The hosted-provider tests' respx router (`api`), and one OpenAI account with one finished
fine-tune (`openai_account`), for the migration's recorded exchanges."""

from __future__ import annotations

import httpx
import pytest

from providers.conftest import api  # noqa: F401

OPENAI = "https://api.openai.com/v1"
JOB_ID = "ftjob-d"
TRAINING_FILE = "file-pairs"
FT = "ft:gpt-4o-mini-2024-07-18:acme:prefs:DDD444"


def finished_job(method_type: str, section: dict) -> dict:
    """OpenAI's succeeded `fine_tuning.job` of method `method_type` (`section`: its settings)."""
    return {
        "object": "fine_tuning.job",
        "id": JOB_ID,
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 5,
        "finished_at": 50,
        "fine_tuned_model": FT,
        "organization_id": "org-1",
        "result_files": [],
        "status": "succeeded",
        "training_file": TRAINING_FILE,
        "validation_file": None,
        "hyperparameters": {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.5},
        "method": {"type": method_type, method_type: section},
        "trained_tokens": 300,
        "seed": 1,
        "estimated_finish": None,
        "metadata": None,
        "error": None,
        "integrations": [],
    }


@pytest.fixture
def openai_account(api, monkeypatch, tmp_path):  # noqa: F811 (the fixture above)
    """`mock(job, body)`: OpenAI lists `job` (id `JOB_ID`), with no events or checkpoints,
    and serves `body` as its training file `TRAINING_FILE`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-migrate-dpo-0123456789")
    listing = {"object": "list", "has_more": False}

    def mock(job: dict, body: bytes) -> None:
        api.get(f"{OPENAI}/fine_tuning/jobs").respond(200, json={**listing, "data": [job]})
        api.get(f"{OPENAI}/fine_tuning/jobs/{JOB_ID}").respond(200, json=job)
        for tail in ("events", "checkpoints"):
            api.get(f"{OPENAI}/fine_tuning/jobs/{JOB_ID}/{tail}").respond(
                200, json={**listing, "data": []}
            )
        file = {
            "object": "file",
            "id": TRAINING_FILE,
            "bytes": len(body),
            "created_at": 1,
            "filename": "train.jsonl",
            "purpose": "fine-tune",
            "status": "processed",
        }
        api.get(f"{OPENAI}/files/{TRAINING_FILE}").respond(200, json=file)
        api.get(f"{OPENAI}/files/{TRAINING_FILE}/content").mock(
            side_effect=lambda request: httpx.Response(200, content=body)
        )

    return mock
