"""The whole move off OpenAI, against a real `tunelab serve` standing in for OpenAI.

The server (its own TUNELAB_HOME) holds the "account": a succeeded fine-tuning job with
training and validation files. The client (the test's TUNELAB_HOME) runs
`tunelab migrate openai` inventory (twice), plan, an interrupted distillation that resumes,
run to a local target (the tiny model, trained by a real worker) and compare.
"""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import openai
import orjson
import pytest
from test_openai_sdk import FAST, wait_for

from jobtools import wait_until
from tiny import QUESTIONS, write_chat_jsonl
from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.migrate.distil import distil, distilled_paths, read_answers
from tunelab.providers import jobs as jobs_api

pytestmark = pytest.mark.slow  # a server process, two trainings of the tiny model
TODAY = "2026-12-20"


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def account(server, tiny_model, tmp_path_factory):
    """A succeeded fine-tune on the server: what the OpenAI account holds."""
    data = tmp_path_factory.mktemp("account")
    train = write_chat_jsonl(data / "train.jsonl", QUESTIONS[:8])
    val = write_chat_jsonl(data / "val.jsonl", QUESTIONS[8:])
    sdk = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    files = [sdk.files.create(file=path.open("rb"), purpose="fine-tune") for path in (train, val)]
    job = sdk.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=files[0].id,
        validation_file=files[1].id,
        suffix="tickets",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, **FAST}}},
    )
    done = wait_for(sdk, job.id, timeout=300)
    assert done.status == "succeeded", done.error
    return done


def test_the_whole_migration_against_a_tunelab_server(
    server, account, tiny_model, capsys, monkeypatch
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # loopback servers need no key
    ft = account.fine_tuned_model
    code, out, err = cli(
        capsys,
        "migrate",
        "openai",
        "inventory",
        "--base-url",
        server.url,
        "--today",
        TODAY,
        "--json",
    )
    assert code == 0, err
    assert "17 days until OpenAI takes no new fine-tuning jobs" in err
    found = orjson.loads(out)
    assert (found["new_jobs"], found["new_files"]) == (1, 2)
    [row] = [j for j in found["jobs"] if j["openai_job_id"] == account.id]
    assert row["fine_tuned_model"] == ft and row["checkpoints"]
    code, out, err = cli(
        capsys,
        "migrate",
        "openai",
        "inventory",
        "--base-url",
        server.url,
        "--today",
        TODAY,
        "--json",
    )
    assert (orjson.loads(out)["new_jobs"], orjson.loads(out)["new_files"]) == (0, 0), err

    code, out, err = cli(
        capsys, "migrate", "openai", "plan", "--target", str(tiny_model), "--today", TODAY, "--json"
    )
    assert code == 0, err
    [planned] = orjson.loads(out)["models"]
    assert planned["target"] == {"model": str(tiny_model), "provider": "local"}
    assert planned["analysis"]["n_examples"] == 8 and planned["analysis"]["n_epochs"] == 1

    # Distillation interrupted after its first batch, then resumed by the CLI.
    chats_before = chat_requests(server)
    cancel = threading.Event()
    with pytest.raises(TunelabError):
        distil(
            [ft],
            today=date(2026, 12, 20),
            progress=lambda *_: cancel.set(),
            cancel=cancel,
            batch_size=3,
            concurrency=1,
        )
    paths = distilled_paths(ft)
    assert len(paths.answers.read_bytes().splitlines()) == 3
    code, out, err = cli(
        capsys,
        "migrate",
        "openai",
        "run",
        "--target",
        str(tiny_model),
        "--distil",
        "--yes",
        "--set",
        "batch_size=4",
        "--set",
        "lora_rank=4",
        "--set",
        "precision=fp32",
        "--today",
        TODAY,
        "--json",
    )
    assert code == 0, err
    lines = paths.answers.read_bytes().splitlines()
    assert len(lines) == len(read_answers(paths.answers)) == len(QUESTIONS)  # none asked twice
    assert len(paths.train.read_bytes().splitlines()) == 8
    [outcome] = orjson.loads(out)
    new = jobs_api.wait_job(outcome["job"]["id"], timeout=600)
    assert new.status == "succeeded", new.error_message
    assert new.metadata["tunelab_distilled_file"] == str(paths.train)
    # The server saw each prompt once (its access log is written as each answer goes out).
    wait_until(lambda: chat_requests(server) - chats_before >= len(QUESTIONS))
    assert chat_requests(server) - chats_before == len(QUESTIONS)

    def compare(*flags: str) -> dict:
        argv = ("migrate", "openai", "compare", ft, "--task", "classify", "--json", *flags)
        code, out, err = cli(capsys, *argv)
        assert code == 0, err
        result = orjson.loads(out)
        assert result["models_evaluated"] == [ft, new.fine_tuned_model]
        assert set(result["models"]) == {ft, new.fine_tuned_model}
        return result

    # The old model asked again through the server, then its distilled answers (which cover
    # the validation file) before and after the shutdown.
    asked = compare("--fresh", "--today", TODAY)
    assert asked["options"]["old_answers"] == {"from": "asked", "on": TODAY}
    before = compare("--today", TODAY)
    assert before["options"]["old_answers"]["because"] == "covered"
    after = compare("--today", "2027-01-20")
    old = after["options"]["old_answers"]
    assert (old["from"], old["because"]) == ("distilled", "models_stopped")
    assert (
        old["n_items"] == after["data"]["n_items"] == len(QUESTIONS) - 8 and not old["n_left_out"]
    )
    assert "stopped answering on 2027-01-14" in after["options"]["notes"][0]
    recorded = {r["key"]: r["answer"] for r in read_answers(paths.answers).values()}
    for result in (before, after):
        run = orjson.loads(Path(result["json_path"]).read_bytes())
        assert sorted(row["answer"] for row in run["outputs"][ft]) == sorted(
            recorded[key] for key in validation_keys(planned["validation_file"])
        )
    code, out, _ = cli(capsys, "eval", "list", "--json")
    assert all(r["id"] in out for r in (asked, before, after))
    n_validation = len(QUESTIONS) - 8
    wait_until(lambda: chat_requests(server) - chats_before >= len(QUESTIONS) + n_validation)
    # Only --fresh asked the old model: the distilled answers stood in for it otherwise.
    assert chat_requests(server) - chats_before == len(QUESTIONS) + n_validation


def chat_requests(server) -> int:
    """How many chat completions the server has answered (from its access log)."""
    return server.output().count('"POST /v1/chat/completions HTTP/1.1" 200')


def validation_keys(path: str) -> list[str]:
    from tunelab.evals.items import load_items
    from tunelab.migrate.distil import prompt_key

    return [prompt_key(item.messages) for item in load_items(Path(path), "chat").items]
