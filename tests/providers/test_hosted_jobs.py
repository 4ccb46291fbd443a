"""Hosted jobs through the CLI and the registry: OpenAI and Together, over hand-built HTTP.

The same `tunelab jobs create` flags move a workload between providers; whatever tunelab
writes (registry, logs, output) never holds the API key.
"""

from __future__ import annotations

import logging
import re

import orjson
import pytest

from tiny import QUESTIONS, write_chat_jsonl
from tunelab.cli import main
from tunelab.data.preference import preference_pair
from tunelab.registry import Store

OPENAI = "https://api.openai.com/v1"
TOGETHER = "https://api.together.ai/v1"
PLANTED = {"OPENAI_API_KEY": "sk-PLANTED-openai-4b1d9e", "TOGETHER_API_KEY": "tgp-PLANTED-77c2a0"}
FT_OPENAI = "ft:gpt-4o-mini-2024-07-18:acme::AbC123"


@pytest.fixture
def keys(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    return PLANTED


@pytest.fixture
def train_file(tmp_path):
    return write_chat_jsonl(tmp_path / "train.jsonl")


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def openai_job(status: str, **changes) -> dict:
    body = {
        "object": "fine_tuning.job",
        "id": "ftjob-AbC123",
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1790000000,
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": "org-acme",
        "result_files": [],
        "status": status,
        "validation_file": None,
        "training_file": "file-train1",
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1.8}
            },
        },
        "trained_tokens": None,
        "seed": 7,
        "estimated_finish": None,
        "metadata": None,
        "error": None,
    }
    return {**body, **changes}


def mock_openai(api) -> dict:
    """OpenAI's side of one job's life: upload, create, then a finished job with events."""
    file = {
        "object": "file",
        "id": "file-train1",
        "bytes": 1500,
        "created_at": 1790000000,
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "status": "processed",
    }
    routes = {
        "upload": api.post(f"{OPENAI}/files").respond(200, json=file),
        "file": api.get(f"{OPENAI}/files/file-train1").respond(200, json=file),
        "create": api.post(f"{OPENAI}/fine_tuning/jobs").respond(200, json=openai_job("queued")),
        "job": api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-AbC123").respond(
            200,
            json=openai_job(
                "succeeded", finished_at=1790000900, fine_tuned_model=FT_OPENAI, trained_tokens=4200
            ),
        ),
        "events": api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-AbC123/events").respond(
            200,
            json={
                "object": "list",
                "has_more": False,
                "data": [
                    {
                        "object": "fine_tuning.job.event",
                        "id": "ftevent-2",
                        "created_at": 1790000900,
                        "level": "info",
                        "message": "The job has successfully completed",
                        "type": "message",
                    },
                    {
                        "object": "fine_tuning.job.event",
                        "id": "ftevent-1",
                        "created_at": 1790000010,
                        "level": "info",
                        "message": "Fine-tuning job started",
                        "type": "message",
                    },
                ],
            },
        ),
        "checkpoints": api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-AbC123/checkpoints").respond(
            200, json={"object": "list", "has_more": False, "data": []}
        ),
        "chat": api.post(f"{OPENAI}/chat/completions").respond(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1790001000,
                "model": FT_OPENAI,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "db.users.find({})"},
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
            },
        ),
    }
    return routes


def test_an_openai_job_is_recorded_synced_and_its_model_chats(api, keys, train_file, capsys):
    routes = mock_openai(api)
    code, out, err = cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "openai",
        "--model",
        "gpt-4o-mini",
        "--train",
        str(train_file),
        "--n-epochs",
        "2",
        "--seed",
        "7",
        "--json",
    )
    assert code == 0, err
    created = orjson.loads(out)
    assert created["status"] == "queued" and created["tunelab"]["provider"] == "openai"
    assert created["tunelab"]["provider_job_id"] == "ftjob-AbC123"
    sent = orjson.loads(routes["create"].calls.last.request.content)
    assert sent["method"]["supervised"]["hyperparameters"] == {"n_epochs": 2}
    assert sent["seed"] == 7 and sent["metadata"]["tunelab_request_id"].startswith("req-")

    code, out, _ = cli(capsys, "jobs", "wait", created["id"], "--json")
    done = orjson.loads(out)
    assert code == 0 and done["status"] == "succeeded" and done["fine_tuned_model"] == FT_OPENAI
    code, out, _ = cli(capsys, "jobs", "events", "ftjob-AbC123")  # the provider's id works too
    assert out.index("Fine-tuning job started") < out.index("successfully completed")
    code, out, _ = cli(capsys, "models", "list", "--fine-tuned", "--json")
    assert [(m["id"], m["provider"]) for m in orjson.loads(out)["data"]] == [(FT_OPENAI, "openai")]
    code, out, _ = cli(capsys, "chat", FT_OPENAI, "all users")
    assert code == 0 and out.strip() == "db.users.find({})"
    assert orjson.loads(routes["chat"].calls.last.request.content)["model"] == FT_OPENAI
    # The same file is not uploaded twice: a second job reuses the registry's record.
    routes["create"].respond(200, json=openai_job("queued", id="ftjob-Second"))
    cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "openai",
        "--model",
        "gpt-4o-mini",
        "--train",
        str(train_file),
        "--json",
    )
    assert routes["upload"].call_count == 1


def test_a_failed_openai_job_makes_jobs_wait_exit_1_with_the_reason(api, keys, train_file, capsys):
    routes = mock_openai(api)
    routes["job"].respond(
        200,
        json=openai_job(
            "failed",
            finished_at=1790000100,
            error={
                "code": "invalid_training_file",
                "param": "training_file",
                "message": "The file has 3 examples with too many tokens.",
            },
        ),
    )
    code, out, _ = cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "openai",
        "--model",
        "gpt-4o-mini",
        "--train",
        str(train_file),
        "--json",
    )
    job_id = orjson.loads(out)["id"]
    code, out, _ = cli(capsys, "jobs", "wait", job_id)
    assert code == 1
    assert "failed" in out and "too many tokens" in out


def test_an_openai_refusal_records_a_failed_job_and_suggests_local(api, keys, train_file, capsys):
    mock_openai(api)["create"].respond(
        403,
        json={
            "error": {
                "message": "Fine-tuning is no longer available for this organization.",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
    )
    code, _, err = cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "openai",
        "--model",
        "gpt-4o-mini",
        "--train",
        str(train_file),
    )
    assert code == 1 and "openai_fine_tuning_closed" in err and "--provider local" in err
    code, out, _ = cli(capsys, "jobs", "list", "--json")
    [job] = orjson.loads(out)["data"]
    assert job["status"] == "failed" and job["error"]["code"] == "openai_fine_tuning_closed"


def together_job(status: str, **changes) -> dict:
    body = {
        "id": "ft-5e1f2a",
        "status": status,
        "created_at": "2026-11-01T12:00:00.000Z",
        "updated_at": "2026-11-01T13:00:00.000Z",
        "model": "Qwen/Qwen3-8B",
        "model_output_name": "acme/Qwen3-8B-capitals-5e1f2a",
        "training_file": "file-t1",
        "validation_file": "",
        "suffix": "capitals",
        "n_epochs": 2,
        "n_checkpoints": 1,
        "batch_size": 8,
        "learning_rate": 1e-4,
        "token_count": 3000,
        "events": [],
        "training_type": {
            "type": "Lora",
            "lora_r": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "lora_trainable_modules": "all-linear",
        },
        "training_method": {"method": "sft", "train_on_inputs": "auto"},
    }
    return {**body, **changes}


def test_a_together_job_takes_the_same_flags_and_lands_in_the_registry(
    api, keys, train_file, capsys
):
    file = {
        "id": "file-t1",
        "object": "file",
        "created_at": 1790000000,
        "filename": "train.jsonl",
        "bytes": 1500,
        "purpose": "fine-tune",
        "FileType": "jsonl",
        "Processed": True,
        "LineCount": 12,
    }
    # Together's upload: a redirect to storage, the bytes, then preprocessing.
    api.post(f"{TOGETHER}/files").respond(
        302,
        headers={
            "Location": "https://storage.example.com/up/file-t1?sig=1",
            "X-Together-File-Id": "file-t1",
        },
    )
    api.put("https://storage.example.com/up/file-t1").respond(200)
    api.post(f"{TOGETHER}/files/file-t1/preprocess").respond(
        200, json={**file, "processing_status": "COMPLETED"}
    )
    api.get(url__regex=rf"{TOGETHER}/fine-tunes/models/limits.*").respond(
        200, json=_together_limits()
    )
    api.post(f"{TOGETHER}/fine-tunes/estimate-price").respond(
        200,
        json={
            "estimation_available": True,
            "allowed_to_proceed": True,
            "estimated_total_price": 1.2,
            "user_limit": 100.0,
        },
    )
    create = api.post(f"{TOGETHER}/fine-tunes").respond(200, json=together_job("pending"))
    api.get(f"{TOGETHER}/fine-tunes/ft-5e1f2a").respond(
        200, json=together_job("completed", model_output_name="acme/Qwen3-8B-capitals-5e1f2a")
    )
    api.get(f"{TOGETHER}/fine-tunes/ft-5e1f2a/events").respond(200, json={"data": []})
    api.get(
        url__regex=rf"{TOGETHER}/fine-tunes/ft-5e1f2a/(checkpoints|list-checkpoints).*"
    ).respond(200, json={"data": []})
    code, out, err = cli(
        capsys,
        "jobs",
        "create",
        "--provider",
        "together",
        "--model",
        "qwen3-8b",
        "--train",
        str(train_file),
        "--n-epochs",
        "2",
        "--lora-rank",
        "8",
        "--learning-rate",
        "0.0001",
        "--suffix",
        "capitals",
        "--json",
    )
    assert code == 0, err
    sent = orjson.loads(create.calls.last.request.content)
    assert sent["n_epochs"] == 2 and sent["suffix"] == "capitals"
    assert sent["training_type"]["lora_r"] == 8
    job = orjson.loads(out)
    code, out, _ = cli(capsys, "jobs", "show", job["id"], "--json")
    shown = orjson.loads(out)
    assert shown["status"] == "succeeded"
    assert shown["fine_tuned_model"] == "acme/Qwen3-8B-capitals-5e1f2a"


def _together_limits() -> dict:
    return {
        "model_name": "Qwen/Qwen3-8B",
        "max_num_epochs": 20,
        "max_num_checkpoints": 10,
        "max_num_evals": 100,
        "max_learning_rate": 1.0,
        "min_learning_rate": 0.0,
        "lora_training": {
            "max_batch_size": 32,
            "min_batch_size": 8,
            "max_rank": 64,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        },
        "full_training": {"max_batch_size": 24, "min_batch_size": 8},
        "supports_full_training": True,
    }


def test_no_key_reaches_the_registry_the_logs_or_the_output(
    api, keys, train_file, capsys, caplog, isolated_home
):
    caplog.set_level(logging.DEBUG)
    routes = mock_openai(api)
    printed = []
    for argv in (
        [
            "jobs",
            "create",
            "--provider",
            "openai",
            "--model",
            "gpt-4o-mini",
            "--train",
            str(train_file),
            "--json",
        ],
        ["jobs", "list", "--json"],
        ["jobs", "wait", "ftjob-AbC123", "--json"],
        ["jobs", "events", "ftjob-AbC123", "--json"],
        ["chat", FT_OPENAI, "hello"],
    ):
        printed.append(cli(capsys, *argv))
    routes["job"].respond(
        401,
        json={
            "error": {
                "message": f"Incorrect API key provided: {keys['OPENAI_API_KEY']}",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
    )
    with Store() as store:  # force a re-sync that fails with the key echoed back
        store.update_job(store.get_job("ftjob-AbC123").id, status="running")
    printed.append(cli(capsys, "jobs", "show", "ftjob-AbC123"))
    assert printed[-1][0] == 1 and "provider_auth_failed" in printed[-1][2]

    written = b"".join(p.read_bytes() for p in isolated_home.rglob("*") if p.is_file())
    assert written, "the registry should exist"
    texts = [
        written.decode("utf-8", "replace"),
        caplog.text,
        *(out + err for _, out, err in printed),
    ]
    for key in keys.values():
        for text in texts:
            assert key not in text
            assert not re.search(re.escape(key[:12]) + r"\w", text)


FT_ELSEWHERE = "ft:gpt-4o-mini-2024-07-18:org:elsewhere:xyz789"


def test_an_ft_model_of_the_users_own_account_chats_with_no_record(api, keys, capsys):
    routes = mock_openai(api)
    code, out, err = cli(capsys, "chat", FT_ELSEWHERE, "all users")
    assert code == 0, err
    assert out.strip() == "db.users.find({})"
    sent = routes["chat"].calls.last.request
    assert orjson.loads(sent.content)["model"] == FT_ELSEWHERE
    assert sent.headers["authorization"] == f"Bearer {keys['OPENAI_API_KEY']}"
    with Store() as store:
        assert store.find_model(FT_ELSEWHERE) is None


def test_a_server_serves_an_ft_model_its_operator_lists(api, keys):
    import asyncio

    from tunelab.server.app import ServerConfig
    from tunelab.server.errors import ApiError
    from tunelab.server.inference import ChatOptions, InferenceService
    from tunelab.server.model_access import check_served

    mock_openai(api)
    config = ServerConfig(models=(FT_ELSEWHERE,))
    check_served(FT_ELSEWHERE, config)
    with pytest.raises(ApiError):  # not listed, not in the registry: not served
        check_served(FT_OPENAI, config)

    async def ask() -> str:
        service = InferenceService(memory_budget_bytes=1)
        try:
            answer = await service.complete(
                FT_ELSEWHERE, [{"role": "user", "content": "all users"}], ChatOptions()
            )
        finally:
            service.close()
        return answer.choices[0].text

    assert asyncio.run(ask()) == "db.users.find({})"


def test_a_job_started_elsewhere_is_imported_and_tracked(api, keys, capsys):
    routes = mock_openai(api)
    metrics = {
        "object": "fine_tuning.job.event",
        "id": "ftevent-3",
        "created_at": 1790000500,
        "level": "info",
        "message": "Step 10/20: training loss=0.42",
        "type": "metrics",
        "data": {"step": 10, "train_loss": 0.42, "total_steps": 20},
    }
    events = orjson.loads(routes["events"].return_value.content)
    events["data"].insert(1, metrics)
    routes["events"].respond(200, json=events)

    code, out, err = cli(capsys, "jobs", "import", "--provider", "openai", "ftjob-AbC123", "--json")
    assert code == 0, err
    job = orjson.loads(out)
    assert (job["status"], job["fine_tuned_model"]) == ("succeeded", FT_OPENAI)
    assert job["tunelab"]["provider_job_id"] == "ftjob-AbC123" and not routes["create"].called
    code, out, _ = cli(capsys, "jobs", "events", "ftjob-AbC123")
    assert "training loss=0.42" in out and "successfully completed" in out
    from tunelab.providers.jobs import list_metrics

    assert list_metrics(job["id"]) == [{"step": 10, "train_loss": 0.42, "total_steps": 20}]
    code, out, _ = cli(capsys, "models", "list", "--fine-tuned", "--json")
    assert [m["id"] for m in orjson.loads(out)["data"]] == [FT_OPENAI]
    # Importing again finds the record instead of making a second one.
    assert cli(capsys, "jobs", "import", "--provider", "openai", "ftjob-AbC123")[0] == 0
    with Store() as store:
        assert len(store.list_jobs()) == 1


def test_a_finished_imported_job_is_not_fetched_again(api, keys, capsys):
    """An imported failed job has no model: listing it must not ask OpenAI every time (after
    the shutdown OpenAI cannot answer); importing it again asks on purpose."""
    routes = mock_openai(api)
    failed = openai_job(
        "failed",
        finished_at=1790000900,
        error={"code": "invalid_training_file", "message": "bad line 3", "param": "training_file"},
    )
    routes["job"].respond(200, json=failed)
    assert cli(capsys, "jobs", "import", "--provider", "openai", "ftjob-AbC123")[0] == 0
    asked = routes["job"].call_count, routes["events"].call_count
    routes["job"].respond(503, json={"error": {"message": "shut down"}})  # were it asked
    for argv in (
        ["jobs", "list"],
        ["jobs", "list", "--json"],
        ["jobs", "show", "ftjob-AbC123"],
        ["jobs", "events", "ftjob-AbC123"],
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 0, err
    assert "failed" in cli(capsys, "jobs", "show", "ftjob-AbC123")[1]
    assert (routes["job"].call_count, routes["events"].call_count) == asked
    routes["job"].respond(200, json=failed)
    assert cli(capsys, "jobs", "import", "--provider", "openai", "ftjob-AbC123")[0] == 0
    assert routes["job"].call_count == asked[0] + 1


def write_pairs(path):
    pairs = [
        preference_pair([{"role": "user", "content": q}], a, "I do not know.", source_line=i)
        for i, (q, a) in enumerate(QUESTIONS, 1)
    ]
    path.write_bytes(b"".join(pair.to_json_line() for pair in pairs))
    return path


def test_a_dpo_job_reaches_openai_as_its_dpo_method_with_beta(api, keys, tmp_path, capsys):
    routes = mock_openai(api)
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    argv = ["jobs", "create", "--provider", "openai", "--model", "gpt-4o-mini"]
    flags = ["--train", str(pairs), "--training-method", "dpo", "--dpo-beta", "0.2", "--json"]
    code, out, err = cli(capsys, *argv, *flags, "--n-epochs", "2")
    assert code == 0, err
    sent = orjson.loads(routes["create"].calls.last.request.content)
    assert sent["method"] == {
        "type": "dpo",
        "dpo": {"hyperparameters": {"n_epochs": 2, "beta": 0.2}},
    }
    shown = orjson.loads(out)
    assert (
        shown["method"]["type"] == "dpo"
        and shown["method"]["dpo"]["hyperparameters"]["beta"] == 0.2
    )


def test_chat_data_for_a_dpo_job_is_refused_before_any_upload(api, keys, train_file, capsys):
    routes = mock_openai(api)
    argv = ["jobs", "create", "--provider", "openai", "--model", "gpt-4o-mini"]
    code, _, err = cli(capsys, *argv, "--train", str(train_file), "--training-method", "dpo")
    assert code != 0 and "invalid_training_data" in err
    assert routes["upload"].call_count == 0


def test_a_reinforcement_job_reaches_openai_with_its_grader(api, keys, tmp_path, capsys):
    routes = mock_openai(api)
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            orjson.dumps({"messages": [{"role": "user", "content": q}], "answer": a}).decode()
            + "\n"
            for q, a in QUESTIONS
        )
    )
    grader = {
        "type": "string_check",
        "name": "exact",
        "input": "{{ sample.output_text }}",
        "reference": "{{ item.answer }}",
        "operation": "eq",
    }
    grader_file = tmp_path / "grader.json"
    grader_file.write_bytes(orjson.dumps(grader))
    argv = ["jobs", "create", "--provider", "openai", "--model", "o4-mini", "--train", str(items)]
    method = ["--training-method", "reinforcement", "--n-epochs", "2"]
    code, _, err = cli(capsys, *argv, *method, "--grader", str(grader_file), "--json")
    assert code == 0, err
    sent = orjson.loads(routes["create"].calls.last.request.content)
    assert sent["method"] == {
        "type": "reinforcement",
        "reinforcement": {"hyperparameters": {"n_epochs": 2}, "grader": grader},
    }
    code, _, err = cli(capsys, *argv, *method)
    assert code == 2 and "grader_missing" in err
