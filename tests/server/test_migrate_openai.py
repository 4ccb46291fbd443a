"""The whole move off OpenAI, against a real `tunelab serve` standing in for OpenAI.

The server (its own TUNELAB_HOME) holds the "account": a succeeded fine-tuning job with
training and validation files. The client (the test's TUNELAB_HOME) runs
`tunelab migrate openai` inventory (twice), plan, an interrupted distillation that resumes,
run to a local target (the tiny model, trained by a real worker) and compare.
"""

from __future__ import annotations

import threading
from datetime import date

import openai
import orjson
import pytest
from test_openai_sdk import FAST, wait_for

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

    code, out, err = cli(
        capsys, "migrate", "openai", "compare", ft, "--task", "classify", "--today", TODAY, "--json"
    )
    assert code == 0, err
    result = orjson.loads(out)
    assert result["models_evaluated"] == [ft, new.fine_tuned_model]
    assert set(result["models"]) == {ft, new.fine_tuned_model}
    code, out, _ = cli(capsys, "eval", "list", "--json")
    assert result["id"] in out
