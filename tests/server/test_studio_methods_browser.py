"""The studio's job form and job page for the training methods, in a real browser: a DPO job
with its beta, a reinforcement job whose grader is checked before anything is queued, and
the job page's method and its own curves (preference accuracy and reward margin for DPO,
the mean reward for reinforcement) drawn from the job's metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest

from studio_browser import browser_page, require_browser, screenshot_dir, shoot
from tunelab.providers.local import jobs as local
from tunelab.registry import Store

USER = {"role": "user", "content": "Which category is 'Who wrote Hamlet?'"}
GOOD = [{"role": "assistant", "content": "<category>HUM</category>"}]
BAD = [{"role": "assistant", "content": "<category>LOC</category>"}]
PAIRS = [{"input": {"messages": [USER]}, "preferred_output": GOOD, "non_preferred_output": BAD}] * 8
ITEMS = [{"messages": [USER], "reference_answer": "<category>HUM</category>"}] * 8
GRADER = {
    "type": "string_check",
    "name": "exact",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.reference_answer }}",
    "operation": "eq",
}


def _registered(tmp_path: Path, name: str, records: list[dict]) -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    with Store() as store:
        return local.register_file(store, path, None).id


@pytest.fixture
def studio(smollm2_home, start_server, tmp_path):
    require_browser()
    files = {
        "pairs": _registered(tmp_path, "hamlet_pairs.jsonl", PAIRS),
        "items": _registered(tmp_path, "hamlet_items.jsonl", ITEMS),
    }
    server = start_server(smollm2_home)
    with browser_page(server.url.removesuffix("/v1")) as page:
        yield page, files


def _new_job(page, file_id: str, method: str, name: str) -> None:
    page.goto(f"/jobs/new?training_file={file_id}")
    page.fill("input[name=name]", name)
    page.select_option("#training-method", method)
    page.uncheck("input[name=start]")  # queued: the page is about the job, not training


def _job_id(page) -> str:
    page.wait_for_url(re.compile(r"/jobs/ftjob-"))
    return page.url.rsplit("/", 1)[-1]


def test_a_dpo_job_from_the_form_shows_its_method_and_curves(studio, tmp_path):
    page, files = studio
    _new_job(page, files["pairs"], "dpo", "hamlet-dpo")
    assert page.locator("#dpo-settings").is_visible()
    assert not page.locator("#reinforcement-settings").is_visible()
    page.fill("input[name=dpo_beta]", "0.2")
    shoot(page, screenshot_dir(tmp_path), "job-form-dpo")
    page.locator("#create-job").click()
    job_id = _job_id(page)
    assert page.locator("#job-method").inner_text() == "dpo (beta 0.2)"
    assert page.locator("#preference-accuracy-chart").count() == 0  # no steps yet
    with Store() as store:
        for step in range(1, 6):
            metrics = {"step": step, "loss": 0.7 - step / 20, "preference_accuracy": step / 5}
            store.add_metric(job_id, step, {**metrics, "reward_margin": step / 10 - 0.1})
    page.reload()
    accuracy = page.locator("#preference-accuracy-chart")
    assert accuracy.get_attribute("data-points") == "5"
    assert page.locator("#reward-margin-chart").get_attribute("data-points") == "5"
    assert page.console_errors == []


def test_a_reinforcement_job_needs_a_grader_that_parses(studio):
    page, files = studio
    _new_job(page, files["items"], "reinforcement", "hamlet-rl")
    assert page.locator("#reinforcement-settings").is_visible()
    page.fill("#grader", json.dumps({"type": "string_check", "operation": "equals"}))
    page.locator("#create-job").click()
    assert "invalid grader" in page.locator(".error").inner_text()  # nothing was queued
    page.console_errors.clear()  # the refusal's page came with its 400
    _new_job(page, files["items"], "reinforcement", "hamlet-rl")
    page.fill("input[name=rl_group_size]", "2")
    page.fill("#grader", json.dumps(GRADER))
    page.locator("#create-job").click()
    job_id = _job_id(page)
    assert page.locator("#job-method").inner_text() == "reinforcement"
    assert json.loads(page.locator("#job-grader").inner_text()) == GRADER
    with Store() as store:
        assert store.get_job(job_id).hyperparameters["rl_group_size"] == 2
        for step in range(1, 4):
            store.add_metric(job_id, step, {"step": step, "loss": 0.1, "reward_mean": step / 3})
    page.reload()
    assert page.locator("#reward-mean-chart").get_attribute("data-points") == "3"
    assert page.console_errors == []
