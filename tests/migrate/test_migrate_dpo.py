"""A DPO fine-tune on OpenAI carried by `migrate openai`: inventory, plan and run keep its
method and beta (recorded exchanges of OpenAI's shapes)."""

from __future__ import annotations

from datetime import date

import httpx
import orjson
import pytest

from tunelab.data.preference import preference_pair
from tunelab.migrate.inventory import take_inventory
from tunelab.migrate.plan import Targets, make_plan, run_plan
from tunelab.providers import jobs as jobs_api

OPENAI = "https://api.openai.com/v1"
FT = "ft:gpt-4o-mini-2024-07-18:acme:prefs:DDD444"
TODAY = date(2026, 12, 1)
PAIRS = [("Capital of Peru?", "Lima.", "Cusco."), ("Capital of Chile?", "Santiago.", "Lima.")]


def dpo_job(method_type: str = "dpo") -> dict:
    hyperparameters = {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.5}
    if method_type == "dpo":
        hyperparameters["beta"] = 0.2
    section = {"hyperparameters": hyperparameters}
    if method_type == "reinforcement":
        section["grader"] = {
            "type": "string_check",
            "name": "exact",
            "operation": "eq",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
        }
    return {
        "object": "fine_tuning.job",
        "id": "ftjob-d",
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 5,
        "finished_at": 50,
        "fine_tuned_model": FT,
        "organization_id": "org-1",
        "result_files": [],
        "status": "succeeded",
        "training_file": "file-pairs",
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
def account(api, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-migrate-dpo-0123456789")
    body = b"".join(
        preference_pair([{"role": "user", "content": q}], good, bad).to_json_line()
        for q, good, bad in PAIRS
    )
    listing = {"object": "list", "has_more": False}

    def mock(job: dict) -> None:
        api.get(f"{OPENAI}/fine_tuning/jobs").respond(200, json={**listing, "data": [job]})
        api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-d").respond(200, json=job)
        for tail in ("events", "checkpoints"):
            api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-d/{tail}").respond(
                200, json={**listing, "data": []}
            )

    file = {
        "object": "file",
        "id": "file-pairs",
        "bytes": len(body),
        "created_at": 1,
        "filename": "pairs.jsonl",
        "purpose": "fine-tune",
        "status": "processed",
    }
    api.get(f"{OPENAI}/files/file-pairs").respond(200, json=file)
    api.get(f"{OPENAI}/files/file-pairs/content").mock(
        side_effect=lambda request: httpx.Response(200, content=body)
    )
    return mock


def test_a_dpo_fine_tune_is_planned_and_run_as_a_dpo_job(account):
    account(dpo_job())
    take_inventory(today=TODAY)
    [row] = make_plan(Targets("local"), today=TODAY)["models"]
    assert row["hyperparameters"]["training_method"] == "dpo"
    assert row["hyperparameters"]["dpo_beta"] == 0.2 and not row["problems"]
    assert row["analysis"]["n_examples"] == len(PAIRS)
    [outcome] = run_plan({"models": [row]}, today=TODAY, start_worker=False)
    job = jobs_api.get_job(outcome["job"]["id"])
    assert (
        job.hyperparameters["training_method"] == "dpo" and job.hyperparameters["dpo_beta"] == 0.2
    )
    [together] = make_plan(Targets("together"), today=TODAY)["models"]
    assert together["hyperparameters"] == {"n_epochs": 3, "training_method": "dpo", "dpo_beta": 0.2}


def test_a_reinforcement_fine_tune_is_listed_with_the_reason_it_is_not_run(account):
    account(dpo_job("reinforcement"))
    take_inventory(today=TODAY)
    [row] = make_plan(Targets("local"), today=TODAY)["models"]
    assert row["problems"] and "reinforcement" in row["problems"][0]
    [outcome] = run_plan({"models": [row]}, today=TODAY, start_worker=False)
    assert outcome["skipped"] and "reinforcement" in outcome["skipped"]
    assert orjson.dumps(row)  # the plan stays JSON
