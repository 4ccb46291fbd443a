"""What was CLI-only, in the studio in a real browser: generating conversations from an
ideas file (TREC's questions answered by the bundled model), a judge run that failed listed
with its error, and a TSV source previewed as a table.
"""

from __future__ import annotations

import re
import sqlite3
from itertools import islice

import orjson

from studio_browser import browser_page, require_browser, screenshot_dir, shoot, upload_source
from tunelab.data.sources.records import iter_records
from tunelab.providers.local import jobs as local
from tunelab.registry import Store
from tunelab.samples import sample_path

BUNDLED = "smollm2-135m-instruct"
MINUTE = 60_000
N_IDEAS = 3


def trec_ideas(path):
    """The first TREC sample questions as an ideas file, one idea per line."""
    questions = [r["text"] for _, r in islice(iter_records(sample_path("trec")), N_IDEAS)]
    path.write_text("\n".join(questions) + "\n")
    return questions


def test_conversations_are_generated_from_an_ideas_file(smollm2_home, start_server, tmp_path):
    require_browser()
    questions = trec_ideas(tmp_path / "trec_ideas.txt")
    server = start_server(smollm2_home)
    shots = screenshot_dir(tmp_path)
    with browser_page(server.url.removesuffix("/v1")) as page:
        page.goto("/data")
        page.locator("#generate-link").click()
        page.set_input_files("input[name=ideas]", str(tmp_path / "trec_ideas.txt"))
        page.select_option("#generate-model", BUNDLED)
        page.fill("input[name=template]", "Answer in one sentence: {idea}")
        page.fill("input[name=max_tokens]", "32")
        shoot(page, shots, "generate-conversations")
        page.locator("#start-generate").click()
        page.wait_for_url(re.compile(r"/data/sources/"), timeout=10 * MINUTE)
        assert page.locator("#detected-kind").inner_text() == "conversations"
        shoot(page, shots, "generated-conversations")
        name = page.locator("h1").inner_text()
        page.goto("/data")
        assert page.locator("table a", has_text=name).count() == 1
        assert page.console_errors == []
    database = next((smollm2_home / "studio" / "sources").glob(f"*/{name}"))
    with sqlite3.connect(database) as db:
        ideas = [row[0] for row in db.execute("SELECT idea FROM conversations ORDER BY id")]
        answers = db.execute("SELECT count(*) FROM messages WHERE role = 'assistant'").fetchone()
    assert ideas == questions and answers[0] == N_IDEAS


def test_a_judge_run_that_failed_is_listed_with_its_error(start_server, isolated_home, tmp_path):
    require_browser()
    prompts = tmp_path / "prompts_val.jsonl"  # prompts only: nothing for the judge to read
    prompts.write_bytes(orjson.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + b"\n")
    with Store() as store:
        local.register_file(store, prompts, None)
    server = start_server(isolated_home)
    shots = screenshot_dir(tmp_path)
    with browser_page(server.url.removesuffix("/v1")) as page:
        page.goto("/evals/new")
        page.select_option("select[name=kind]", "judge")
        page.select_option("select[name=model]", BUNDLED)
        page.select_option("select[name=judge_model]", BUNDLED)
        page.locator("#start-eval").click()
        page.wait_for_selector("#eval-status.failed")
        page.goto("/evals")
        row = page.locator("#runs-table tbody tr")
        assert row.count() == 1
        assert row.locator(".badge").inner_text() == "failed"
        error = row.locator(".run-error").inner_text()
        assert error == "prompts_val.jsonl has no example with an assistant answer."
        shoot(page, shots, "evaluations-failed")


def test_a_tsv_source_is_previewed_as_a_table(start_server, isolated_home, tmp_path):
    require_browser()
    server = start_server(isolated_home)
    shots = screenshot_dir(tmp_path)
    with browser_page(server.url.removesuffix("/v1")) as page:
        upload_source(page, sample_path("trec"))
        table = page.locator("#preview-table")
        headers = table.locator("thead th").all_text_contents()
        assert headers == ["text", "label", "fine_label"]
        first = table.locator("tbody tr").first.locator("td").all_inner_texts()
        assert first == ["Name 11 famous martyrs .", "HUM", "ind"]
        assert table.locator("tbody tr").count() == 8
        assert page.locator("pre#preview").count() == 0
        shoot(page, shots, "data-source")
        assert page.console_errors == []
