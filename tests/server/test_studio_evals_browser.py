"""The studio's dataset and evaluation pages in a real browser, on the TREC sample and the
bundled model: the findings shown once, an evaluation's answers collapsed, paged and
filtered to the wrong ones, and the list of runs inside the window with the files' names.
"""

from __future__ import annotations

import re

from studio_browser import browser_page, require_browser, screenshot_dir, shoot, upload_source
from tunelab.samples import sample_path

BUNDLED = "smollm2-135m-instruct"
MINUTE = 60_000
ITEMS = 45  # more than two pages of answers


def test_dataset_and_evaluation_pages_stay_readable(smollm2_home, start_server, tmp_path):
    require_browser()
    server = start_server(smollm2_home)
    shots = screenshot_dir(tmp_path)
    with browser_page(server.url.removesuffix("/v1")) as page:
        upload_source(page, sample_path("trec"))
        page.locator("#run-format").click()
        page.wait_for_url(re.compile(r"/data/datasets/"))
        assert page.locator("h2", has_text="Validation findings").count() == 1
        _evaluate(page)
        _answers_steps(page)
        shoot(page, shots, "evaluation-answers")
        page.goto("/evals")
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        data = page.locator("#runs-table tbody tr td").nth(5)
        assert data.inner_text() == "trec_sample_val.jsonl"
        assert page.console_errors == []


def _evaluate(page) -> None:
    page.goto("/evals/new")
    val_file = page.locator("select[name=file] option", has_text="trec_sample_val.jsonl")
    page.select_option("select[name=file]", val_file.first.get_attribute("value"))
    page.select_option("select[name=model]", BUNDLED)
    page.fill("input[name=limit]", str(ITEMS))
    page.locator("#start-eval").click()
    page.wait_for_url(re.compile(r"/evals/evalrun-"), timeout=10 * MINUTE)


def _answers_steps(page) -> None:
    answers = page.locator("#eval-answers")
    assert answers.get_attribute("open") is None  # collapsed: the page stays short
    assert not page.locator("#answers-table").is_visible()
    assert page.evaluate("document.documentElement.scrollHeight") < 4000
    answers.locator("summary").click()
    rows = page.locator("#answers-table tbody tr")
    assert rows.count() == 20
    page.locator("#next-answers").click()
    page.wait_for_url(re.compile(r"answers=2"))
    assert page.locator("#answers-table tbody tr td.num").first.inner_text() == "21"
    page.locator("#wrong-only").click()
    page.wait_for_url(re.compile(r"wrong=1"))
    assert page.locator("#answers-table tbody tr").count() > 0
    assert page.locator("#answers-table tbody tr:not(.wrong-row)").count() == 0
    assert page.locator("#answers-table b.right").count() == 0  # one model: only its ✗ left
