"""The together provider against hand-built HTTP exchanges in Together's documented shapes.

respx stands in for https://api.together.ai; bodies follow the SDK's types (FinetuneResponse,
FinetuneEvent, FineTuningListCheckpointsResponse, FileResponse, FinetuneModelLimits, ...).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from datetime import datetime, timezone

import httpx
import pytest
import respx

from tunelab.errors import TunelabError
from tunelab.providers.base import JobRequest
from tunelab.providers.hosted.retry import RetryPolicy
from tunelab.providers.hosted.together import TogetherProvider

BASE = "https://api.together.ai"
MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference"
OUTPUT_NAME = "alice/Meta-Llama-3.1-8B-Instruct-Reference-tickets-5e1f2a"
CREATED = "2025-06-01T12:00:00.000Z"  # 1748779200
UPDATED = "2025-06-01T13:30:00.000Z"  # 1748784600
PLANTED_KEY = "tgp-PLANTED-7f3a9c1e5d2b4a60"

LIMITS = {
    "model_name": MODEL,
    "default_gradient_accumulation_steps": 1,
    "lora_training": {
        "default_rank": 64,
        "max_batch_size": 32,
        "max_batch_size_dpo": 16,
        "max_rank": 64,
        "min_batch_size": 8,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
    },
    "full_training": {"max_batch_size": 24, "max_batch_size_dpo": 8, "min_batch_size": 8},
    "max_learning_rate": 1.0,
    "min_learning_rate": 0.0,
    "max_num_checkpoints": 10,
    "max_num_epochs": 20,
    "max_num_evals": 100,
    "max_seq_length_sft": 8192,
    "max_seq_length_dpo": 8192,
    "merge_output_lora": True,
    "min_max_seq_length": 512,
    "supports_full_training": True,
    "supports_reasoning": False,
    "supports_tools": True,
    "supports_vision": False,
}
ESTIMATE = {
    "estimation_available": True,
    "allowed_to_proceed": True,
    "estimated_total_price": 2.4,
    "estimated_train_token_count": 120000,
    "estimated_eval_token_count": 0,
    "user_limit": 100.0,
}


def job_body(status: str = "pending", job_id: str = "ft-5e1f2a", **changes) -> dict:
    body = {
        "id": job_id,
        "status": status,
        "user_id": "user-1",
        "created_at": CREATED,
        "updated_at": UPDATED,
        "model": MODEL,
        "model_output_name": OUTPUT_NAME,
        "training_file": "file-train",
        "validation_file": "",
        "suffix": "tickets",
        "n_epochs": 3,
        "n_checkpoints": 1,
        "n_evals": 0,
        "batch_size": 16,
        "learning_rate": 1e-05,
        "warmup_ratio": 0.0,
        "training_type": {
            "type": "Lora",
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "lora_trainable_modules": "all-linear",
        },
        "training_method": {"method": "sft", "train_on_inputs": "auto"},
        "token_count": 120000,
        "events": [],
    }
    body.update(changes)
    return body


def event(message: str, created_at: str, type_: str = "job_start", level: str = "info", **more):
    return {
        "object": "fine-tune-event",
        "created_at": created_at,
        "message": message,
        "type": type_,
        "level": level,
        **more,
    }


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def provider(sleeps) -> TogetherProvider:
    return TogetherProvider(
        api_key="test-key-0000", policy=RetryPolicy(max_attempts=3, sleep=sleeps.append)
    )


@pytest.fixture
def api():
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def request_json(route: respx.Route, index: int = -1) -> dict:
    return json.loads(route.calls[index].request.content)


def mock_create_lookups(api) -> None:
    api.get("/v1/fine-tunes/models/limits").respond(json=LIMITS)
    api.post("/v1/fine-tunes/estimate-price").respond(json=ESTIMATE)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat().replace("+00:00", "Z")


# Files


def test_upload_checks_the_file_then_uploads_it_for_fine_tuning(provider, api, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n' * 2)
    start = api.post("/v1/files").respond(
        302,
        headers={
            "Location": "https://storage.example.com/uploads/file-abc?sig=1",
            "X-Together-File-Id": "file-abc",
        },
    )
    put = api.put("https://storage.example.com/uploads/file-abc").respond(200)
    api.post("/v1/files/file-abc/preprocess").respond(
        json={
            "id": "file-abc",
            "object": "file",
            "bytes": train.stat().st_size,
            "created_at": 1748779200,
            "filename": "train.jsonl",
            "FileType": "jsonl",
            "purpose": "fine-tune",
            "processing_status": "COMPLETED",
        }
    )

    remote = provider.upload_file(train)

    assert b"fine-tune" in start.calls[0].request.content
    assert put.calls[0].request.content == train.read_bytes()
    assert (remote.id, remote.filename, remote.purpose) == ("file-abc", "train.jsonl", "fine-tune")
    assert (remote.bytes, remote.created_at, remote.status) == (
        train.stat().st_size,
        1748779200,
        "processed",
    )


def test_upload_refuses_a_file_together_would_reject_before_any_request(provider, api, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"messages": []}\n[1, 2]\n')

    with pytest.raises(TunelabError) as caught:
        provider.upload_file(train)

    assert caught.value.code == "invalid_file"
    assert (caught.value.path, caught.value.line) == (str(train), 2)
    assert not api.calls


def test_upload_refuses_a_purpose_together_does_not_take(provider, api, tmp_path):
    with pytest.raises(TunelabError) as caught:
        provider.upload_file(tmp_path / "x.jsonl", purpose="assistants")
    assert caught.value.code == "unsupported_purpose"


# Creating jobs


def test_create_sends_lora_epochs_rate_suffix_and_checkpoints(provider, api):
    mock_create_lookups(api)
    create = api.post("/v1/fine-tunes").respond(json=job_body("pending"))
    request = JobRequest(
        model=MODEL,
        training_file="file-train",
        validation_file="file-valid",
        suffix="tickets",
        seed=7,
        hyperparameters={
            "n_epochs": 3,
            "batch_size": 16,
            "learning_rate": 2e-4,
            "n_checkpoints": 2,
            "warmup_ratio": 0.1,
            "train_on_inputs": False,
            "lora_rank": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            "lora_target_modules": ["q_proj", "v_proj"],
        },
        metadata={"tunelab_request_id": "req-1"},
    )

    state = provider.create_job(request)

    body = request_json(create)
    assert body["model"] == MODEL
    assert (body["training_file"], body["validation_file"]) == ("file-train", "file-valid")
    assert (body["n_epochs"], body["batch_size"], body["learning_rate"]) == (3, 16, 2e-4)
    assert (body["n_checkpoints"], body["warmup_ratio"], body["suffix"]) == (2, 0.1, "tickets")
    assert body["n_evals"] == 3  # a validation file is evaluated once per epoch
    assert body["random_seed"] == 7
    assert body["training_type"] == {
        "type": "Lora",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_trainable_modules": "q_proj,v_proj",
    }
    assert body["training_method"] == {"method": "sft", "train_on_inputs": False}
    assert "metadata" not in body
    assert (state.id, state.status, state.raw_status) == ("ft-5e1f2a", "queued", "pending")
    assert state.hyperparameters["lora_rank"] == 16
    assert state.hyperparameters["training_type"] == "lora"


def test_create_with_auto_values_lets_together_choose(provider, api):
    mock_create_lookups(api)
    create = api.post("/v1/fine-tunes").respond(json=job_body())
    hyperparameters = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}

    provider.create_job(JobRequest(MODEL, "file-train", hyperparameters=hyperparameters))

    body = request_json(create)
    assert body["batch_size"] == "max"
    assert body["n_epochs"] == 1  # the SDK's default
    assert body["training_type"]["lora_r"] == 64  # the model's default rank
    assert body["training_method"] == {"method": "sft", "train_on_inputs": "auto"}


def test_full_training_sends_the_full_type(provider, api):
    mock_create_lookups(api)
    create = api.post("/v1/fine-tunes").respond(json=job_body(training_type={"type": "Full"}))

    state = provider.create_job(
        JobRequest(MODEL, "file-train", hyperparameters={"training_type": "full", "batch_size": 8})
    )

    assert request_json(create)["training_type"] == {"type": "Full"}
    assert state.hyperparameters["training_type"] == "full"


def test_dpo_maps_to_togethers_dpo_method(provider, api):
    mock_create_lookups(api)
    create = api.post("/v1/fine-tunes").respond(json=job_body())

    provider.create_job(
        JobRequest(MODEL, "file-pairs", method="dpo", hyperparameters={"beta": 0.2})
    )

    method = request_json(create)["training_method"]
    assert (method["method"], method["dpo_beta"]) == ("dpo", 0.2)
    assert "train_on_inputs" not in method


@pytest.mark.parametrize(
    ("hyperparameters", "method", "named", "hint_word"),
    [
        (
            {"learning_rate_multiplier": 2.0},
            "supervised",
            "learning_rate_multiplier",
            "learning_rate",
        ),
        ({"prompt_loss_weight": 0.1}, "supervised", "prompt_loss_weight", "n_epochs"),
        ({"training_type": "full", "lora_rank": 8}, "supervised", "lora_rank", "lora"),
        ({"beta": 0.1}, "supervised", "beta", "dpo"),
        ({"training_type": "qlora"}, "supervised", "training_type", "full"),
    ],
)
def test_unsupported_hyperparameter_is_named_and_nothing_is_sent(
    provider, api, hyperparameters, method, named, hint_word
):
    request = JobRequest(MODEL, "file-train", hyperparameters=hyperparameters, method=method)
    with pytest.raises(TunelabError) as caught:
        provider.create_job(request)

    assert caught.value.code == "unsupported_hyperparameter"
    assert f"'{named}'" in caught.value.message
    assert hint_word in caught.value.hint
    assert not api.calls


def test_an_unknown_method_is_refused(provider, api):
    with pytest.raises(TunelabError) as caught:
        provider.create_job(JobRequest(MODEL, "file-train", method="reinforcement"))
    assert caught.value.code == "unsupported_method"


def test_a_value_beyond_the_models_limits_is_refused_before_creating(provider, api):
    mock_create_lookups(api)
    create = api.post("/v1/fine-tunes").respond(json=job_body())

    with pytest.raises(TunelabError) as caught:
        provider.create_job(JobRequest(MODEL, "file-train", hyperparameters={"batch_size": 64}))

    assert caught.value.code == "invalid_hyperparameter"
    assert "32" in caught.value.message
    assert not create.called


def test_create_whose_failed_post_made_the_job_finds_it_instead_of_posting_again(
    provider, api, sleeps
):
    mock_create_lookups(api)
    create = api.post("/v1/fine-tunes").respond(500, json={"error": {"message": "upstream"}})
    now = time.time()
    listing = [
        job_body("pending", job_id="ft-old", created_at=iso(now - 86400)),  # same files, older
        job_body("pending", job_id="ft-made", created_at=iso(now)),
        job_body("pending", job_id="ft-other", created_at=iso(now), training_file="file-x"),
    ]
    api.get("/v1/fine-tunes").respond(json={"data": listing})

    state = provider.create_job(JobRequest(MODEL, "file-train", suffix="tickets"))

    assert state.id == "ft-made"
    assert create.call_count == 1
    assert len(sleeps) == 1


def test_create_posts_again_when_the_failed_attempt_made_nothing(provider, api):
    mock_create_lookups(api)
    create = api.post("/v1/fine-tunes")
    create.side_effect = [httpx.Response(503), httpx.Response(200, json=job_body())]
    old = job_body("completed", job_id="ft-old", created_at=iso(time.time() - 3600))
    api.get("/v1/fine-tunes").respond(json={"data": [old]})

    state = provider.create_job(JobRequest(MODEL, "file-train", suffix="tickets"))

    assert state.id == "ft-5e1f2a"
    assert create.call_count == 2


# Retries and errors


def test_429_waits_as_long_as_retry_after_asks(provider, api, sleeps):
    route = api.get("/v1/fine-tunes/ft-5e1f2a")
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"message": "slow"}}),
        httpx.Response(200, json=job_body("running")),
    ]

    assert provider.retrieve_job("ft-5e1f2a").status == "running"
    assert sleeps == [7.0]
    assert route.call_count == 2


def test_503_is_retried(provider, api, sleeps):
    route = api.get("/v1/fine-tunes/ft-5e1f2a")
    route.side_effect = [httpx.Response(503), httpx.Response(200, json=job_body("queued"))]

    assert provider.retrieve_job("ft-5e1f2a").status == "queued"
    assert route.call_count == 2
    assert len(sleeps) == 1


def test_503_every_time_gives_up_after_the_policys_attempts(provider, api, sleeps):
    route = api.get("/v1/fine-tunes/ft-5e1f2a").respond(503)

    with pytest.raises(TunelabError) as caught:
        provider.retrieve_job("ft-5e1f2a")

    assert caught.value.code == "provider_unavailable"
    assert route.call_count == 3
    assert len(sleeps) == 2


def test_400_is_raised_at_once(provider, api, sleeps):
    body = {"error": {"message": "n_epochs must be at most 20", "type": "invalid_request_error"}}
    route = api.post("/v1/fine-tunes/ft-5e1f2a/cancel").respond(400, json=body)

    with pytest.raises(TunelabError) as caught:
        provider.cancel_job("ft-5e1f2a")

    assert caught.value.code == "provider_rejected"
    assert "n_epochs must be at most 20" in caught.value.message
    assert route.call_count == 1
    assert sleeps == []


def test_connection_error_is_retried(provider, api):
    route = api.get("/v1/fine-tunes/ft-5e1f2a")
    route.side_effect = [httpx.ConnectError("refused"), httpx.Response(200, json=job_body())]

    assert provider.retrieve_job("ft-5e1f2a").id == "ft-5e1f2a"
    assert route.call_count == 2


def test_unknown_job_is_provider_not_found(provider, api):
    api.get("/v1/fine-tunes/ft-nope").respond(404, json={"error": {"message": "no such job"}})
    with pytest.raises(TunelabError) as caught:
        provider.retrieve_job("ft-nope")
    assert caught.value.code == "provider_not_found"


# Job states


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("pending", "queued"),
        ("queued", "queued"),
        ("running", "running"),
        ("compressing", "running"),
        ("uploading", "running"),
        ("cancel_requested", "running"),
        ("cancelled", "cancelled"),
        ("completed", "succeeded"),
        ("error", "failed"),
        ("user_error", "failed"),
        ("archiving", "running"),  # a word Together may add later stays visible, not terminal
    ],
)
def test_every_together_status_maps_to_openais(provider, api, raw, status):
    api.get("/v1/fine-tunes/ft-5e1f2a").respond(json=job_body(raw))

    state = provider.retrieve_job("ft-5e1f2a")

    assert (state.status, state.raw_status) == (status, raw)
    assert state.created_at == 1748779200
    expected_finish = 1748784600 if status in ("succeeded", "failed", "cancelled") else None
    assert state.finished_at == expected_finish


def test_a_failed_job_carries_its_error_from_the_events(provider, api):
    events = [
        event("Job started", "2025-06-01T12:01:00Z"),
        event(
            "Training file has 3 examples; at least 10 are required",
            "2025-06-01T12:02:00.123456789Z",
            type_="job_error",
            level="error",
        ),
    ]
    api.get("/v1/fine-tunes/ft-5e1f2a").respond(json=job_body("user_error", events=events))

    state = provider.retrieve_job("ft-5e1f2a")

    assert state.status == "failed"
    assert state.error_code == "user_error"
    assert state.error_message == "Training file has 3 examples; at least 10 are required"
    assert state.fine_tuned_model is None


def test_a_succeeded_job_names_its_model_and_what_was_trained(provider, api):
    api.get("/v1/fine-tunes/ft-5e1f2a").respond(json=job_body("completed"))

    state = provider.retrieve_job("ft-5e1f2a")

    assert state.fine_tuned_model == OUTPUT_NAME
    assert state.trained_tokens == 120000
    assert (state.training_file, state.validation_file, state.suffix) == (
        "file-train",
        None,
        "tickets",
    )
    assert state.hyperparameters == {
        "n_epochs": 3,
        "batch_size": 16,
        "learning_rate": 1e-05,
        "n_checkpoints": 1,
        "n_evals": 0,
        "warmup_ratio": 0.0,
        "training_type": "lora",
        "lora_rank": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_target_modules": "all-linear",
        "train_on_inputs": "auto",
    }


def test_a_running_job_has_no_model_yet(provider, api):
    api.get("/v1/fine-tunes/ft-5e1f2a").respond(json=job_body("running"))
    assert provider.retrieve_job("ft-5e1f2a").fine_tuned_model is None


def test_list_jobs_is_newest_first_and_limited(provider, api):
    listing = [
        job_body(job_id="ft-a", created_at="2025-06-01T10:00:00Z"),
        job_body(job_id="ft-c", created_at="2025-06-03T10:00:00Z"),
        job_body(job_id="ft-b", created_at="2025-06-02T10:00:00Z"),
    ]
    api.get("/v1/fine-tunes").respond(json={"data": listing})

    assert [job.id for job in provider.list_jobs(limit=2)] == ["ft-c", "ft-b"]


def test_cancel_reports_a_job_still_stopping_as_running(provider, api):
    route = api.post("/v1/fine-tunes/ft-5e1f2a/cancel").respond(json=job_body("cancel_requested"))

    state = provider.cancel_job("ft-5e1f2a")

    assert route.called
    assert (state.status, state.raw_status) == ("running", "cancel_requested")


@pytest.mark.parametrize("operation", ["pause_job", "resume_job"])
def test_pause_and_resume_are_unsupported(provider, operation):
    with pytest.raises(TunelabError) as caught:
        getattr(provider, operation)("ft-5e1f2a")
    assert caught.value.code == "unsupported_operation"
    assert "together" in caught.value.message


def test_events_come_oldest_first_with_levels(provider, api):
    data = [
        event("Epoch 1 done", "2025-06-01T12:10:00Z", "epoch_complete", step=50, total_steps=150),
        event("Job started", "2025-06-01T12:00:00Z"),
        event("Loss spiked", "2025-06-01T12:20:00Z", "warning", level="warning"),
        event("Job failed", "2025-06-01T12:30:00Z", "job_error", level="error"),
    ]
    api.get("/v1/fine-tunes/ft-5e1f2a/events").respond(json={"data": data})

    events = provider.list_events("ft-5e1f2a")

    assert [e.message for e in events] == [
        "Job started",
        "Epoch 1 done",
        "Loss spiked",
        "Job failed",
    ]
    assert [e.level for e in events] == ["info", "info", "warn", "error"]
    assert events[0].created_at == 1748779200
    assert events[1].data == {"type": "epoch_complete", "step": 50, "total_steps": 150}
    latest = provider.list_events("ft-5e1f2a", limit=2)
    assert [e.message for e in latest] == ["Loss spiked", "Job failed"]
    assert [e.id for e in latest] == [events[2].id, events[3].id]


def test_checkpoints_carry_step_time_and_name(provider, api):
    data = [
        {
            "checkpoint_type": "Final",
            "created_at": "2025-06-01T13:00:00Z",
            "path": "s3://together/ft-5e1f2a/final",
            "step": 150,
            "checkpoint": "model",
            "object_name": OUTPUT_NAME,
        },
        {
            "checkpoint_type": "Intermediate (step 50)",
            "created_at": "2025-06-01T12:10:00Z",
            "path": "s3://together/ft-5e1f2a/step-50",
            "step": 50,
        },
    ]
    api.get("/v1/fine-tunes/ft-5e1f2a/checkpoints").respond(json={"data": data})

    checkpoints = provider.list_checkpoints("ft-5e1f2a")

    assert [c.step for c in checkpoints] == [50, 150]
    assert checkpoints[0].id == "ft-5e1f2a:50"
    assert checkpoints[0].fine_tuned_model_checkpoint == "s3://together/ft-5e1f2a/step-50"
    assert checkpoints[1].fine_tuned_model_checkpoint == OUTPUT_NAME
    assert checkpoints[0].created_at == 1748779200 + 600


# Chat


def test_chat_returns_the_answer_with_usage(provider, api):
    # The SDK sends chat to its inference host unless the base URL was overridden.
    route = api.post("https://api-inference.together.ai/v1/chat/completions").respond(
        json={
            "id": "chat-1",
            "object": "chat.completion",
            "created": 1748779200,
            "model": OUTPUT_NAME,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "db.tickets.find({})"},
                    "finish_reason": "eos",
                }
            ],
            "usage": {"prompt_tokens": 21, "completion_tokens": 6, "total_tokens": 27},
        }
    )
    messages = [{"role": "user", "content": "all tickets"}]

    result = provider.chat(
        OUTPUT_NAME, messages, max_tokens=64, temperature=0.0, stop=["\n"], seed=3
    )

    sent = request_json(route)
    assert sent["messages"] == messages
    assert (sent["max_tokens"], sent["temperature"], sent["stop"], sent["seed"]) == (
        64,
        0.0,
        ["\n"],
        3,
    )
    assert "top_p" not in sent
    assert (result.text, result.model, result.finish_reason) == (
        "db.tickets.find({})",
        OUTPUT_NAME,
        "stop",
    )
    assert (result.prompt_tokens, result.completion_tokens) == (21, 6)


def chat_sse(*events: dict) -> httpx.Response:
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events)
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def chat_chunk(content: str | None = None, finish: str | None = None, usage=None) -> dict:
    choices = (
        [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    )
    return {
        "id": "chat-1",
        "object": "chat.completion.chunk",
        "created": 1748779200,
        "model": OUTPUT_NAME,
        "choices": choices,
        "usage": usage,
    }


def test_chat_streams_the_answer_as_it_arrives(provider, api):
    usage = {"prompt_tokens": 21, "completion_tokens": 2, "total_tokens": 23}
    answer = chat_sse(chat_chunk("db."), chat_chunk("find()", "length"), chat_chunk(usage=usage))
    route = api.post("https://api-inference.together.ai/v1/chat/completions").mock(
        return_value=answer
    )
    stream = provider.stream_chat(OUTPUT_NAME, [{"role": "user", "content": "all"}], max_tokens=2)
    assert list(stream) == ["db.", "find()"]
    assert request_json(route)["stream"] is True
    result = stream.result
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        "db.find()",
        "length",
        21,
        2,
    )


def test_an_error_mid_stream_is_one_error_without_the_key(provider, api):
    failure = {"error": {"message": "worker lost; key test-key-0000", "type": "server_error"}}
    api.post("https://api-inference.together.ai/v1/chat/completions").mock(
        return_value=chat_sse(chat_chunk("db."), failure)
    )
    stream = provider.stream_chat(OUTPUT_NAME, [{"role": "user", "content": "all"}])
    deltas = []
    with pytest.raises(TunelabError) as raised:
        deltas.extend(stream)
    assert deltas == ["db."]
    assert raised.value.code == "provider_unavailable"
    assert "worker lost" in raised.value.message and "test-key-0000" not in raised.value.message


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "find_tickets",
            "parameters": {"type": "object", "properties": {"status": {"type": "string"}}},
        },
    }
]


def test_structured_outputs_tools_and_logit_bias_pass_through(provider, api):
    call = {
        "id": "call-7",
        "type": "function",
        "index": 0,
        "function": {"name": "find_tickets", "arguments": '{"status": "open"}'},
    }
    route = api.post("https://api-inference.together.ai/v1/chat/completions").respond(
        json={
            "id": "chat-1",
            "object": "chat.completion",
            "created": 1748779200,
            "model": OUTPUT_NAME,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
        }
    )
    schema = {"type": "json_schema", "json_schema": {"name": "q", "schema": {"type": "object"}}}
    messages = [{"role": "user", "content": "open tickets"}]

    result = provider.chat(
        OUTPUT_NAME, messages, tools=TOOLS, tool_choice="required", logit_bias={"5": -100.0}
    )
    provider.chat(OUTPUT_NAME, messages, response_format=schema)

    with_tools, with_schema = (request_json(route, n) for n in (0, 1))
    assert (with_tools["tools"], with_tools["tool_choice"]) == (TOOLS, "required")
    assert with_tools["logit_bias"] == {"5": -100.0}
    assert with_schema["response_format"] == schema
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call-7", "find_tickets", '{"status": "open"}')
    ]


def test_streamed_tool_calls_are_put_together_by_index(provider, api):
    def fragment(**call) -> dict:
        chunk = chat_chunk()
        chunk["choices"][0]["delta"] = {"role": "assistant", "tool_calls": [call]}
        chunk["choices"][0]["logprobs"] = -0.5  # Together's own shape: not OpenAI's tokens
        return chunk

    name = {"name": "find_tickets", "arguments": ""}
    api.post("https://api-inference.together.ai/v1/chat/completions").mock(
        return_value=chat_sse(
            fragment(index=0, id="call-7", type="function", function=name),
            fragment(index=0, function={"arguments": '{"status": '}),
            fragment(index=0, function={"arguments": '"open"}'}),
            chat_chunk(finish="tool_calls"),
        )
    )
    stream = provider.stream_chat(OUTPUT_NAME, [{"role": "user", "content": "all"}], tools=TOOLS)
    assert list(stream) == []
    result = stream.result
    assert (result.finish_reason, result.logprobs) == ("tool_calls", None)
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call-7", "find_tickets", '{"status": "open"}')
    ]


@pytest.mark.parametrize(
    ("setting", "value"), [("logprobs", True), ("top_logprobs", 2), ("parallel_tool_calls", False)]
)
def test_fields_together_cannot_answer_are_refused_by_name_before_any_request(
    provider, api, setting, value
):
    route = api.post("https://api-inference.together.ai/v1/chat/completions")
    for ask in (provider.chat, provider.stream_chat):
        with pytest.raises(TunelabError) as refused:
            ask(OUTPUT_NAME, [{"role": "user", "content": "all"}], tools=TOOLS, **{setting: value})
        assert refused.value.code == "unsupported_parameter"
        assert f"`{setting}`" in refused.value.message
    assert not route.called


# Downloads


@pytest.mark.parametrize(("merged", "checkpoint"), [(True, "merged"), (False, "adapter")])
def test_download_writes_the_model_to_the_destination(provider, api, tmp_path, merged, checkpoint):
    api.get("/v1/fine-tunes/ft-5e1f2a").respond(json=job_body("completed"))
    route = api.get("/v1/finetune/download").respond(content=b"zstd-archive-bytes" * 1000)
    destination = tmp_path / "models" / "tickets.tar.zst"

    assert provider.download_model("ft-5e1f2a", destination, merged=merged) == destination

    assert destination.read_bytes() == b"zstd-archive-bytes" * 1000
    params = route.calls[0].request.url.params
    assert (params["ft_id"], params["checkpoint"]) == ("ft-5e1f2a", checkpoint)
    assert list(destination.parent.iterdir()) == [destination]


def test_download_of_a_full_fine_tune_fetches_its_output(provider, api, tmp_path):
    api.get("/v1/fine-tunes/ft-5e1f2a").respond(
        json=job_body("completed", training_type={"type": "Full"})
    )
    route = api.get("/v1/finetune/download").respond(content=b"weights")

    provider.download_model("ft-5e1f2a", tmp_path / "full.tar.zst")
    assert route.calls[0].request.url.params["checkpoint"] == "model_output_path"
    with pytest.raises(TunelabError) as caught:
        provider.download_model("ft-5e1f2a", tmp_path / "adapter.tar.zst", merged=False)
    assert caught.value.code == "adapter_unavailable"


def test_a_failing_stream_leaves_no_file_at_the_destination(provider, api, tmp_path):
    api.get("/v1/fine-tunes/ft-5e1f2a").respond(json=job_body("completed"))

    def broken_stream(request):
        def chunks():
            yield b"first half of the archive"
            raise httpx.ReadError("connection reset", request=request)

        return httpx.Response(200, content=chunks())

    route = api.get("/v1/finetune/download").mock(side_effect=broken_stream)
    destination = tmp_path / "tickets.tar.zst"

    with pytest.raises(TunelabError) as caught:
        provider.download_model("ft-5e1f2a", destination)

    assert caught.value.code == "provider_unreachable"
    assert route.call_count == 3  # retried like any connection error
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_an_existing_destination(provider, api, tmp_path):
    destination = tmp_path / "tickets.tar.zst"
    destination.write_bytes(b"keep me")

    with pytest.raises(TunelabError) as caught:
        provider.download_model("ft-5e1f2a", destination)

    assert caught.value.code == "output_exists"
    assert destination.read_bytes() == b"keep me"
    assert not api.calls


def test_download_of_an_unfinished_job_is_refused(provider, api, tmp_path):
    api.get("/v1/fine-tunes/ft-5e1f2a").respond(json=job_body("running"))
    with pytest.raises(TunelabError) as caught:
        provider.download_model("ft-5e1f2a", tmp_path / "m.tar.zst")
    assert caught.value.code == "job_not_finished"


# Keys


def test_a_missing_key_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env from the working tree
    with pytest.raises(TunelabError) as caught:
        TogetherProvider()
    assert caught.value.code == "missing_api_key"
    assert "TOGETHER_API_KEY" in caught.value.message


def test_a_base_url_ending_in_v1_is_accepted():
    provider = TogetherProvider(api_key="test-key-0000", base_url="https://api.together.xyz/v1")
    with respx.mock(base_url="https://api.together.xyz") as router:
        route = router.get("/v1/fine-tunes/ft-5e1f2a").respond(json=job_body())
        provider.retrieve_job("ft-5e1f2a")
    assert route.called


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("key_from", ["environment", "argument"])
def test_a_planted_key_never_appears_in_errors_logs_or_output(
    monkeypatch, api, caplog, capsys, status, key_from
):
    caplog.set_level(logging.DEBUG)
    policy = RetryPolicy(max_attempts=2, sleep=lambda _: None)
    if key_from == "environment":
        monkeypatch.setenv("TOGETHER_API_KEY", PLANTED_KEY)
        provider = TogetherProvider(policy=policy)
    else:
        provider = TogetherProvider(api_key=PLANTED_KEY, policy=policy)
    # Some services quote the key they refused; the provider must not pass it on.
    echo = {"error": {"message": f"Invalid API key provided: {PLANTED_KEY}"}}
    route = api.get("/v1/fine-tunes/ft-5e1f2a").respond(status, json=echo)

    with pytest.raises(TunelabError) as caught:
        provider.retrieve_job("ft-5e1f2a")

    assert route.called
    assert route.calls[0].request.headers["Authorization"] == f"Bearer {PLANTED_KEY}"
    error = caught.value
    expected = "provider_auth_failed" if status == 401 else "provider_unavailable"
    assert error.code == expected
    shown = [
        str(error),
        repr(error),
        json.dumps(error.to_dict()),
        "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        caplog.text,
        repr(provider),
        *capsys.readouterr(),
    ]
    assert "Invalid API key provided" in str(error)
    assert not [text for text in shown if PLANTED_KEY in text]
