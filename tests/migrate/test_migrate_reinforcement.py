"""A reinforcement fine-tune on OpenAI carried by `migrate openai`: inventory keeps its grader,
plan carries it with the hyperparameters this machine's trainer takes, and run creates a local
reinforcement job that grades with it (recorded exchanges of OpenAI's shapes)."""

from __future__ import annotations

import json
from datetime import date

import orjson
import pytest

from migrate.conftest import finished_job
from tunelab.migrate.inventory import take_inventory
from tunelab.migrate.plan import Targets, make_plan, run_plan
from tunelab.providers import jobs as jobs_api
from tunelab.providers.local.jobs import GRADER_KEY

TODAY = date(2026, 12, 1)
ITEMS = [("Capital of Peru?", "Lima"), ("Capital of Chile?", "Santiago")]
EXACT = {
    "type": "string_check",
    "name": "exact",
    "operation": "eq",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
}
SIMILAR = {
    "type": "text_similarity",
    "name": "close",
    "evaluation_metric": "fuzzy_match",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
}
MULTI = {
    "type": "multi",
    "name": "both",
    "graders": {"exact": EXACT, "close": SIMILAR},
    "calculate_output": "0.5 * exact + 0.5 * close",
}
OPENAI_ONLY = {"compute_multiplier": 2.0, "eval_interval": 5, "reasoning_effort": "low"}


def reinforcement_job(grader: dict) -> dict:
    trained = {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 0.5}
    section = {"hyperparameters": {**trained, **OPENAI_ONLY}, "grader": grader}
    return finished_job("reinforcement", section)


@pytest.fixture
def account(openai_account):
    body = b"".join(
        orjson.dumps({"messages": [{"role": "user", "content": q}], "answer": a}) + b"\n"
        for q, a in ITEMS
    )
    return lambda job: openai_account(job, body)


@pytest.mark.parametrize("grader", [EXACT, MULTI], ids=["string_check", "multi"])
def test_a_reinforcement_fine_tune_becomes_a_local_job_with_its_grader(account, grader):
    account(reinforcement_job(grader))
    [listed] = take_inventory(today=TODAY).jobs
    assert listed["grader"] == grader
    [row] = make_plan(Targets("local"), today=TODAY)["models"]
    assert not row["problems"] and row["grader"] == grader
    assert row["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 1,
        "learning_rate_multiplier": 0.5,
        "training_method": "reinforcement",
    }
    assert row["not_carried"] == sorted(OPENAI_ONLY)
    assert row["analysis"]["n_examples"] == len(ITEMS)
    assert orjson.dumps(row)  # the plan stays JSON
    [outcome] = run_plan({"models": [row]}, today=TODAY, start_worker=False)
    job = jobs_api.get_job(outcome["job"]["id"])
    assert job.provider == "local" and job.status == "queued"
    assert job.hyperparameters["training_method"] == "reinforcement"
    assert json.loads(job.metadata[GRADER_KEY]) == grader


def test_a_reinforcement_fine_tune_is_not_run_on_a_target_that_cannot_train_it(account):
    account(reinforcement_job(EXACT))
    take_inventory(today=TODAY)
    [row] = make_plan(Targets("together"), today=TODAY)["models"]
    assert row["problems"] and "reinforcement" in row["problems"][0]
    [outcome] = run_plan({"models": [row]}, today=TODAY, start_worker=False)
    assert outcome["skipped"] and outcome["job"] is None
