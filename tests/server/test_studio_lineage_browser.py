"""The studio's lineage pages in a real browser: from a model, its job, data, evaluations
and exports on one page; from its training data, the jobs trained on it; from an
evaluation, the models and data it used (data and exports found by checksum).
"""

from __future__ import annotations

import re

import orjson
import pytest

from studio_browser import browser_page, require_browser, screenshot_dir, shoot
from tunelab.providers.local import jobs as local
from tunelab.registry import Store

BASE = "smollm2-135m-instruct"
TUNED = "ft:smollm2-135m-instruct:hamlet:lineage1"
CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


@pytest.fixture
def made(isolated_home, tmp_path):
    """A file, the job trained on it, its model, an evaluation of the model on a copy of the
    file's bytes (under another name), and an export whose card names the file's checksum."""
    path = tmp_path / "hamlet_train.jsonl"
    path.write_bytes(orjson.dumps(CHAT) + b"\n")
    with Store() as store:
        file = local.register_file(store, path, None)
        job = store.create_job(
            provider="local",
            model=BASE,
            status="succeeded",
            name="hamlet-sft",
            training_file=file.id,
            fine_tuned_model=TUNED,
        )
        store.put_model(TUNED, provider="local", kind="fine-tuned", base_model=BASE, job_id=job.id)
        data = {
            "path": str(tmp_path / "copy.jsonl"),
            "kind": "chat",
            "n_items": 1,
            "sha256": file.checksum,
        }
        run = store.create_eval_run("judge", models=[BASE, TUNED], data=data, options={})
        store.update_eval_run(run.id, status="succeeded")
    export = isolated_home / "studio" / "exports" / "hamlet-merged"
    export.mkdir(parents=True)
    card = f"- training data: 1 examples; checksum `{file.checksum}` (SHA-256 of the training file)"
    (export / "README.md").write_text(card)
    return isolated_home, file, job, run


def test_lineage_from_model_to_data_and_evaluation(made, start_server, tmp_path):
    require_browser()
    home, file, job, run = made
    server = start_server(home)
    with browser_page(server.url.removesuffix("/v1")) as page:
        page.goto("/models")
        page.locator("#tuned-models .lineage-link").first.click()
        page.wait_for_url(re.compile(r"/lineage/models/"))
        assert job.id in page.locator("#lineage-job").inner_text()
        assert page.locator("#lineage-model .lineage-file").first.inner_text() == file.filename
        assert run.id in page.locator("#lineage-evaluations").inner_text()
        assert "hamlet-merged" in page.locator("#lineage-exports").inner_text()
        shoot(page, screenshot_dir(tmp_path), "lineage")
        page.locator("#lineage-model .lineage-file").first.click()
        page.wait_for_url(re.compile(r"/lineage/files/"))
        assert "hamlet-sft" in page.locator("#lineage-jobs").inner_text()
        assert run.id in page.locator("#lineage-evaluations").inner_text()
        page.goto(f"/lineage/evals/{run.id}")
        models = page.locator("#lineage-eval-models").inner_text()
        assert BASE in models and TUNED in models and job.id in models
        assert file.filename in page.locator("#lineage-eval-data").inner_text()
        assert page.console_errors == []
