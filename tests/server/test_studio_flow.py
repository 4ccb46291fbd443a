"""The whole seed-004 flow in a real browser, on the bundled model: upload the TREC sample,
format it, see the findings and the analysis, train a local job for a few steps and watch it
succeed with its loss chart, chat with the fine-tuned model beside its base (two turns,
saved as a chat example), run a classification evaluation of both and open its report.
Screenshots go to a temporary directory (the README's come from there: docs/screenshots/).
"""

from __future__ import annotations

import re
import zipfile

import pytest

from studio_browser import browser_page, require_browser, screenshot_dir, shoot
from tunelab.samples import sample_path

pytestmark = pytest.mark.slow
MINUTE = 60_000  # Playwright counts milliseconds
TRAIN_STEPS = 3


@pytest.fixture
def shots(tmp_path):
    return screenshot_dir(tmp_path)


def test_seed_004_flow_in_a_browser(smollm2_home, start_server, shots):
    require_browser()
    server = start_server(smollm2_home)
    base = server.url.removesuffix("/v1")
    with browser_page(base) as page:
        dataset_url = _data_steps(page, shots)
        job_url = _job_steps(page, shots, dataset_url)
        _chat_steps(page, shots, job_url)
        _eval_steps(page, shots, job_url)
        page.goto("/models")
        assert page.locator("#tuned-models").get_by_text("ft:smollm2-135m-instruct").count() == 1
        shoot(page, shots, "models")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download").click()
        names = zipfile.ZipFile(download.value.path()).namelist()
        assert "adapter_model.safetensors" in names and "tokenizer_config.json" in names
        assert page.console_errors == []  # no CSP violation, no script error


def _data_steps(page, shots) -> str:
    page.goto("/")
    page.set_input_files("input[name=file]", str(sample_path("trec")))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/data/sources/"))
    assert page.locator("#detected-kind").inner_text() == "classification"
    preview = page.locator("#preview-table").inner_text()  # a TSV source shows as a table
    assert "What holidays are celebrated in Ireland ?" in preview
    shoot(page, shots, "data-source")
    page.locator("#run-format").click()
    page.wait_for_url(re.compile(r"/data/datasets/"))
    assert int(page.locator("#n-train").inner_text()) > 400
    assert page.locator("#findings-summary").inner_text().startswith("0 errors")
    analysis = page.locator("#analysis")
    assert analysis.get_by_text("Cost comparison").is_visible()  # billed cost per provider
    costs = analysis.locator("xpath=.//h2[.='Cost comparison']/following-sibling::table[1]")
    assert costs.locator("tbody tr").count() > 3
    assert analysis.locator("svg rect.bar").first.is_visible()  # the tokens histogram
    shoot(page, shots, "data")
    return page.url


def _job_steps(page, shots, dataset_url) -> str:
    page.get_by_role("link", name="Create a job on this data").click()
    page.wait_for_url(re.compile(r"/jobs/new"))
    page.fill("input[name=suffix]", "trec")
    page.fill("input[name=max_steps]", str(TRAIN_STEPS))
    page.select_option("select[name=validation_file]", "")  # no validation pass: a quick job
    page.locator("#create-job").click()
    page.wait_for_url(re.compile(r"/jobs/ftjob-"))
    job_url = page.url
    # The page updates itself (server-sent events) while the worker trains; another page
    # answers meanwhile: the request does not train.
    listing = page.request.get("/jobs")
    assert listing.ok and "jobs-table" in listing.text()
    badge = page.locator("#job-status-badge")
    badge.filter(has_text=re.compile("^(succeeded|failed|cancelled)$")).wait_for(
        timeout=15 * MINUTE
    )
    assert badge.inner_text() == "succeeded", page.locator("#job-status").inner_text()
    assert page.locator("#loss-chart polyline.train").count() == 1
    assert int(page.locator("#loss-chart").get_attribute("data-points")) == TRAIN_STEPS
    assert page.locator("#fine-tuned-model").inner_text().startswith("ft:smollm2-135m-instruct:")
    shoot(page, shots, "job")
    page.goto("/jobs")
    shoot(page, shots, "jobs")
    page.goto(job_url)
    return job_url


def _chat_steps(page, shots, job_url) -> None:
    page.locator("#chat-with-model").click()
    page.wait_for_url(re.compile(r"/chat\?"))
    assert page.locator("#model").input_value().startswith("ft:smollm2-135m-instruct:")
    assert page.locator("#compare").input_value() == "smollm2-135m-instruct"
    page.fill("#prompt", "What is the capital of Peru ?")
    page.fill("input[name=max_tokens]", "24")
    page.locator("#send").click()
    ends = page.locator(".answer-end")
    ends.nth(1).filter(has_text="tokens").wait_for(timeout=5 * MINUTE)
    ends.nth(0).filter(has_text="tokens").wait_for(timeout=5 * MINUTE)
    answers = page.locator(".model-answer")
    assert answers.count() == 2
    assert all(answers.nth(i).inner_text().strip() for i in range(2))
    # A second turn of the conversation, saved as a chat example for training data.
    page.fill("#prompt", "And of Chile ?")
    page.locator("#send").click()
    second = page.locator(".turn").nth(1).locator(".answer-end")
    for i in (1, 0):
        second.nth(i).filter(has_text="tokens").wait_for(timeout=5 * MINUTE)
    page.fill("#save-dataset", "capitals")
    page.locator("#save-conversation").click()
    assert page.locator("#saved").inner_text().startswith("Saved 4 messages")
    shoot(page, shots, "chat")
    page.goto(job_url)


def _eval_steps(page, shots, job_url) -> None:
    page.locator("#evaluate-model").click()
    page.wait_for_url(re.compile(r"/evals/new"))
    val_file = page.locator("select[name=file] option", has_text="trec_sample_val.jsonl")
    page.select_option("select[name=file]", val_file.first.get_attribute("value"))
    page.fill("input[name=limit]", "12")
    page.locator("#start-eval").click()
    page.wait_for_url(re.compile(r"/evals/evalrun-"), timeout=10 * MINUTE)
    rows = page.locator("#run-metrics tbody tr")
    assert rows.count() == 2
    assert "accuracy" in page.locator("#run-metrics thead").inner_text().lower()
    report = page.locator("#eval-report")
    assert report.locator("table.heat").count() == 2  # a confusion matrix per model
    run_url = page.url
    shoot(page, shots, "evaluation")
    page.locator("#eval-answers summary").click()
    assert page.locator("#answers-table tbody tr").count() == 12
    page.locator("#wrong-only").click()
    page.wait_for_url(re.compile(r"wrong=1"))
    assert page.locator("#answers-table tbody tr:not(.wrong-row)").count() == 0
    shoot(page, shots, "evaluation-answers")
    page.goto(run_url)
    page.goto("/evals")
    shoot(page, shots, "evaluations")
