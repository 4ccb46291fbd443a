"""A DPO fine-tune on OpenAI carried by `migrate openai`: inventory, plan and run keep its
method and beta (recorded exchanges of OpenAI's shapes)."""

from __future__ import annotations

from datetime import date

import pytest

from migrate.conftest import finished_job
from tunelab.data.preference import preference_pair
from tunelab.migrate.inventory import take_inventory
from tunelab.migrate.plan import Targets, make_plan, run_plan
from tunelab.providers import jobs as jobs_api

TODAY = date(2026, 12, 1)
PAIRS = [("Capital of Peru?", "Lima.", "Cusco."), ("Capital of Chile?", "Santiago.", "Lima.")]


@pytest.fixture
def account(openai_account):
    body = b"".join(
        preference_pair([{"role": "user", "content": q}], good, bad).to_json_line()
        for q, good, bad in PAIRS
    )
    return lambda job: openai_account(job, body)


def dpo_job() -> dict:
    hyperparameters = {"n_epochs": 3, "batch_size": 2, "learning_rate_multiplier": 0.5}
    return finished_job("dpo", {"hyperparameters": {**hyperparameters, "beta": 0.2}})


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
