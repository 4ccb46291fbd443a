"""The openai provider against hand-built HTTP exchanges in OpenAI's documented shapes.

openai-python 3.x sends through httpx2, which respx does not patch; the `api` fixture routes
httpx2's transport through the same respx router, so the provider's own client (built from
the environment) is what the tests exercise, and no request can reach the network.
"""

from __future__ import annotations

import json
import logging
import traceback
from datetime import date
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tunelab.errors import TunelabError
from tunelab.providers.base import REQUEST_ID_KEY, JobRequest
from tunelab.providers.hosted.openai import OpenAIProvider
from tunelab.providers.hosted.retry import RetryPolicy
from tunelab.providers.provider import PLACEHOLDER_KEY

OPENAI = "https://api.openai.com/v1"
LOCAL = "http://127.0.0.1:8765/v1"
KEY = "sk-test-0123456789abcdef"
PLANTED = "sk-planted-DO-NOT-LEAK-7f3a9c2e51"


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def provider(monkeypatch, tmp_path, sleeps):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return OpenAIProvider(policy=RetryPolicy(sleep=sleeps.append), today=lambda: date(2026, 6, 1))


def job_body(**overrides) -> dict:
    body = {
        "object": "fine_tuning.job",
        "id": "ftjob-abc123",
        "model": "gpt-4o-mini-2024-07-18",
        "created_at": 1721764800,
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": "org-123",
        "result_files": [],
        "status": "validating_files",
        "validation_file": None,
        "training_file": "file-train",
        "hyperparameters": {"n_epochs": "auto", "batch_size": "auto"},
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.8}
            },
        },
        "trained_tokens": None,
        "integrations": [],
        "seed": 42,
        "estimated_finish": None,
        "metadata": None,
        "error": None,
    }
    return {**body, **overrides}


def file_body(status: str, details: str | None = None) -> dict:
    return {
        "object": "file",
        "id": "file-abc123",
        "bytes": 120000,
        "created_at": 1677610602,
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "status": status,
        "status_details": details,
    }


def error_body(message: str, type_="invalid_request_error", code=None, param=None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def page(items: list[dict], has_more: bool = False) -> dict:
    return {"object": "list", "data": items, "has_more": has_more}


def request_for(**overrides) -> JobRequest:
    fields = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-train"}
    return JobRequest(**{**fields, **overrides})


# Files


def test_upload_waits_until_the_file_is_processed(api, provider, sleeps, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": []}\n')
    upload = api.post(f"{OPENAI}/files").respond(200, json=file_body("uploaded"))
    api.get(f"{OPENAI}/files/file-abc123").mock(
        side_effect=[
            httpx.Response(200, json=file_body("uploaded")),
            httpx.Response(200, json=file_body("processed")),
        ]
    )
    remote = provider.upload_file(data)
    assert (remote.id, remote.status, remote.bytes) == ("file-abc123", "processed", 120000)
    sent = upload.calls.last.request
    assert b'name="purpose"\r\n\r\nfine-tune' in sent.content
    assert b'filename="train.jsonl"' in sent.content
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sleeps == [0.5, 1.0]


def test_upload_ending_in_error_status_says_why(api, provider, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("not json\n")
    api.post(f"{OPENAI}/files").respond(200, json=file_body("uploaded"))
    api.get(f"{OPENAI}/files/file-abc123").respond(
        200, json=file_body("error", "Invalid file format: line 1 is not JSON")
    )
    with pytest.raises(TunelabError) as caught:
        provider.upload_file(data)
    assert caught.value.code == "openai_file_rejected"
    assert "line 1 is not JSON" in caught.value.message
    assert "tunelab validate" in caught.value.hint


def test_upload_gives_up_after_about_two_minutes(api, provider, sleeps, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    api.post(f"{OPENAI}/files").respond(200, json=file_body("uploaded"))
    api.get(f"{OPENAI}/files/file-abc123").respond(200, json=file_body("uploaded"))
    with pytest.raises(TunelabError) as caught:
        provider.upload_file(data)
    assert caught.value.code == "openai_file_not_ready"
    assert 120 <= sum(sleeps) < 140


def test_upload_of_a_missing_file_makes_no_request(api, provider, tmp_path):
    with pytest.raises(TunelabError) as caught:
        provider.upload_file(tmp_path / "absent.jsonl")
    assert caught.value.code == "file_not_found"
    assert api.calls.call_count == 0


# Creating jobs


def test_create_sends_method_hyperparameters_and_metadata(api, provider):
    created = api.post(f"{OPENAI}/fine_tuning/jobs").respond(
        200, json=job_body(metadata={REQUEST_ID_KEY: "req-1"}, validation_file="file-valid")
    )
    request = request_for(
        validation_file="file-valid",
        hyperparameters={"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 0.5},
        suffix="support-bot",
        seed=7,
        metadata={REQUEST_ID_KEY: "req-1"},
    )
    state = provider.create_job(request)
    assert json.loads(created.calls.last.request.content) == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-train",
        "validation_file": "file-valid",
        "suffix": "support-bot",
        "seed": 7,
        "metadata": {REQUEST_ID_KEY: "req-1"},
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 3,
                    "batch_size": "auto",
                    "learning_rate_multiplier": 0.5,
                }
            },
        },
    }
    assert (state.id, state.status, state.raw_status) == (
        "ftjob-abc123",
        "validating_files",
        "validating_files",
    )
    assert state.hyperparameters == {
        "n_epochs": 3,
        "batch_size": 8,
        "learning_rate_multiplier": 1.8,
    }
    assert state.metadata == {REQUEST_ID_KEY: "req-1"}


def test_dpo_create_takes_beta(api, provider):
    dpo = {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}}
    created = api.post(f"{OPENAI}/fine_tuning/jobs").respond(200, json=job_body(method=dpo))
    state = provider.create_job(
        request_for(method="dpo", hyperparameters={"beta": 0.2, "n_epochs": 2})
    )
    assert json.loads(created.calls.last.request.content)["method"] == dpo
    # Resolved settings are TrainConfig's names: the method and its beta as tunelab calls them.
    assert state.hyperparameters == {"dpo_beta": 0.2, "n_epochs": 2, "training_method": "dpo"}


def test_engine_hyperparameters_are_refused_by_name_before_any_request(api, provider):
    request = request_for(hyperparameters={"n_epochs": 2, "lora_rank": 16, "learning_rate": 2e-4})
    with pytest.raises(TunelabError) as caught:
        provider.create_job(request)
    error = caught.value
    assert error.code == "unsupported_hyperparameter"
    assert "lora_rank" in error.message and "learning_rate" in error.message
    assert "--provider local" in error.hint and "together" in error.hint
    assert api.calls.call_count == 0


def test_a_create_whose_lost_response_made_the_job_is_not_made_twice(api, provider):
    made = job_body(status="queued", metadata={REQUEST_ID_KEY: "req-9"})
    create = api.post(f"{OPENAI}/fine_tuning/jobs").respond(
        500, json=error_body("The server had an error", "server_error")
    )
    lookup = api.get(f"{OPENAI}/fine_tuning/jobs").respond(200, json=page([made]))
    state = provider.create_job(request_for(metadata={REQUEST_ID_KEY: "req-9"}))
    assert (state.id, state.status) == ("ftjob-abc123", "queued")
    assert create.call_count == 1
    query = parse_qs(urlparse(str(lookup.calls.last.request.url)).query)
    assert query[f"metadata[{REQUEST_ID_KEY}]"] == ["req-9"]


def test_a_create_that_made_nothing_is_sent_again(api, provider):
    other = job_body(id="ftjob-other", metadata={REQUEST_ID_KEY: "someone-else"})
    create = api.post(f"{OPENAI}/fine_tuning/jobs").mock(
        side_effect=[
            httpx.Response(502, json=error_body("Bad gateway", "server_error")),
            httpx.Response(200, json=job_body(metadata={REQUEST_ID_KEY: "req-2"})),
        ]
    )
    # A server that ignores the filter: the provider still checks the id itself.
    api.get(f"{OPENAI}/fine_tuning/jobs").respond(200, json=page([other]))
    state = provider.create_job(request_for(metadata={REQUEST_ID_KEY: "req-2"}))
    assert state.id == "ftjob-abc123"
    assert create.call_count == 2


def test_create_refused_after_the_platform_closed(api, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    api.post(f"{OPENAI}/fine_tuning/jobs").respond(
        400, json=error_body("Model gpt-4o-mini-2024-07-18 is not available", param="model")
    )
    provider = OpenAIProvider(today=lambda: date(2027, 1, 6))
    with pytest.raises(TunelabError) as caught:
        provider.create_job(request_for())
    error = caught.value
    assert error.code == "openai_fine_tuning_closed"
    assert "2027-01-06" in error.message
    assert "--provider local" in error.hint and "--provider together" in error.hint


def test_create_refused_because_fine_tuning_is_unavailable(api, provider):
    api.post(f"{OPENAI}/fine_tuning/jobs").respond(
        403, json=error_body("Fine-tuning is no longer available for your organization.")
    )
    with pytest.raises(TunelabError) as caught:
        provider.create_job(request_for())
    assert caught.value.code == "openai_fine_tuning_closed"
    assert "no longer available" in caught.value.message


def test_an_ordinary_refusal_before_the_closing_date_stays_a_rejection(api, provider):
    create = api.post(f"{OPENAI}/fine_tuning/jobs").respond(
        400, json=error_body("Invalid file: training_file has 3 examples, needs 10")
    )
    with pytest.raises(TunelabError) as caught:
        provider.create_job(request_for())
    assert caught.value.code == "provider_rejected"
    assert "needs 10" in caught.value.message
    assert create.call_count == 1


# Retries


def test_429_is_retried_after_the_wait_the_server_asked_for(api, provider, sleeps):
    route = api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123").mock(
        side_effect=[
            httpx.Response(
                429,
                headers={"retry-after": "3"},
                json=error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
            ),
            httpx.Response(200, json=job_body(status="running")),
        ]
    )
    assert provider.retrieve_job("ftjob-abc123").status == "running"
    assert route.call_count == 2
    assert sleeps == [3.0]


def test_500_is_retried(api, provider, sleeps):
    route = api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123").mock(
        side_effect=[
            httpx.Response(500, json=error_body("The server had an error", "server_error")),
            httpx.Response(200, json=job_body()),
        ]
    )
    assert provider.retrieve_job("ftjob-abc123").id == "ftjob-abc123"
    assert route.call_count == 2 and len(sleeps) == 1


def test_500_every_time_ends_as_unavailable(api, provider, sleeps):
    route = api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123").respond(
        503, json=error_body("Service unavailable", "server_error")
    )
    with pytest.raises(TunelabError) as caught:
        provider.retrieve_job("ftjob-abc123")
    assert caught.value.code == "provider_unavailable"
    assert route.call_count == 5 and len(sleeps) == 4


def test_400_is_not_retried(api, provider, sleeps):
    route = api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123").respond(
        400, json=error_body("Invalid job id", param="fine_tuning_job_id")
    )
    with pytest.raises(TunelabError) as caught:
        provider.retrieve_job("ftjob-abc123")
    assert caught.value.code == "provider_rejected"
    assert "Invalid job id" in caught.value.message
    assert route.call_count == 1 and sleeps == []


def test_404_is_not_found(api, provider):
    api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-gone").respond(
        404, json=error_body("No such fine-tuning job: ftjob-gone")
    )
    with pytest.raises(TunelabError) as caught:
        provider.retrieve_job("ftjob-gone")
    assert caught.value.code == "provider_not_found"


def test_connection_error_is_retried(api, provider, sleeps):
    route = api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123").mock(
        side_effect=[httpx.ConnectError("connection refused"), httpx.Response(200, json=job_body())]
    )
    assert provider.retrieve_job("ftjob-abc123").id == "ftjob-abc123"
    assert route.call_count == 2 and len(sleeps) == 1


# Reading jobs


def test_a_failed_job_carries_its_error(api, provider):
    failed = job_body(
        status="failed",
        finished_at=1721768400,
        trained_tokens=5120,
        error={
            "code": "invalid_training_file",
            "message": "The job failed due to an invalid training file.",
            "param": "training_file",
        },
    )
    api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123").respond(200, json=failed)
    state = provider.retrieve_job("ftjob-abc123")
    assert (state.status, state.error_code) == ("failed", "invalid_training_file")
    assert state.error_message == "The job failed due to an invalid training file."
    assert (state.finished_at, state.trained_tokens) == (1721768400, 5120)


def test_a_running_job_maps_progress_and_legacy_hyperparameters(api, provider):
    running = job_body(
        status="running",
        estimated_finish=1721770000,
        method=None,
        hyperparameters={"n_epochs": 4, "batch_size": 2, "learning_rate_multiplier": 2.0},
    )
    api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123").respond(200, json=running)
    state = provider.retrieve_job("ftjob-abc123")
    assert (state.status, state.estimated_finish, state.error_code) == (
        "running",
        1721770000,
        None,
    )
    assert state.hyperparameters == {
        "n_epochs": 4,
        "batch_size": 2,
        "learning_rate_multiplier": 2.0,
    }


def test_list_jobs_newest_first(api, provider):
    older = job_body(id="ftjob-old", created_at=100, status="succeeded", fine_tuned_model="ft:x")
    newer = job_body(id="ftjob-new", created_at=200)
    route = api.get(f"{OPENAI}/fine_tuning/jobs").respond(200, json=page([older, newer]))
    states = provider.list_jobs(limit=5)
    assert [s.id for s in states] == ["ftjob-new", "ftjob-old"]
    assert states[1].fine_tuned_model == "ft:x"
    assert route.calls.last.request.url.params["limit"] == "5"


def test_events_come_oldest_first_across_pages(api, provider):
    def event(n: int) -> dict:
        return {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{n}",
            "created_at": 1000 + n,
            "level": "info",
            "message": f"Step {n}/5: training loss=0.{n}",
            "type": "metrics",
            "data": {"step": n, "train_loss": n / 10},
        }

    route = api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123/events").mock(
        side_effect=[
            httpx.Response(200, json=page([event(5), event(4), event(3)], has_more=True)),
            httpx.Response(200, json=page([event(2), event(1)], has_more=False)),
        ]
    )
    events = provider.list_events("ftjob-abc123")
    assert [e.id for e in events] == [f"ftevent-{n}" for n in range(1, 6)]
    assert events[0].data == {"step": 1, "train_loss": 0.1} and events[0].type == "metrics"
    assert route.calls[1].request.url.params["after"] == "ftevent-3"


def test_events_stop_at_the_limit_keeping_the_newest(api, provider):
    def event(n: int) -> dict:
        return {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{n}",
            "created_at": n,
            "level": "warn",
            "message": "m",
        }

    route = api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123/events").respond(
        200, json=page([event(9), event(8)], has_more=True)
    )
    events = provider.list_events("ftjob-abc123", limit=2)
    assert [e.id for e in events] == ["ftevent-8", "ftevent-9"]
    assert events[0].level == "warn" and events[0].type == "message"
    assert route.call_count == 1 and route.calls.last.request.url.params["limit"] == "2"


def test_checkpoints(api, provider):
    def checkpoint(step: int) -> dict:
        return {
            "object": "fine_tuning.job.checkpoint",
            "id": f"ftckpt-{step}",
            "created_at": 1721764867 + step,
            "fine_tuned_model_checkpoint": f"ft:gpt-4o-mini:org:bot:abc:ckpt-step-{step}",
            "fine_tuning_job_id": "ftjob-abc123",
            "metrics": {"step": step, "train_loss": 0.5, "valid_loss": None},
            "step_number": step,
        }

    api.get(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123/checkpoints").respond(
        200, json=page([checkpoint(200), checkpoint(100)])
    )
    checkpoints = provider.list_checkpoints("ftjob-abc123")
    assert [c.step for c in checkpoints] == [100, 200]
    assert checkpoints[0].fine_tuned_model_checkpoint.endswith("ckpt-step-100")
    assert checkpoints[0].metrics == {"step": 100, "train_loss": 0.5}


@pytest.mark.parametrize(
    ("operation", "status"),
    [("cancel", "cancelled"), ("pause", "paused"), ("resume", "running")],
)
def test_cancel_pause_resume(api, provider, operation, status):
    route = api.post(f"{OPENAI}/fine_tuning/jobs/ftjob-abc123/{operation}").respond(
        200, json=job_body(status=status)
    )
    state = getattr(provider, f"{operation}_job")("ftjob-abc123")
    assert (state.status, state.raw_status) == (status, status)
    assert route.call_count == 1


def test_download_is_not_offered(provider, tmp_path):
    with pytest.raises(TunelabError) as caught:
        provider.download_model("ftjob-abc123", tmp_path / "out")
    assert caught.value.code == "unsupported_operation"
    assert "--provider local" in caught.value.hint


# Chat


def chat_body(text: str, finish: str = "stop") -> dict:
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1677652288,
        "model": "ft:gpt-4o-mini-2024-07-18:org:bot:abc",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }


def test_chat_returns_text_and_usage(api, provider):
    route = api.post(f"{OPENAI}/chat/completions").respond(200, json=chat_body("LOC", "length"))
    result = provider.chat(
        "ft:gpt-4o-mini-2024-07-18:org:bot:abc",
        [{"role": "user", "content": "Where is Paris?"}],
        max_tokens=4,
        temperature=0.0,
        stop=["\n"],
        seed=1,
    )
    assert (result.text, result.finish_reason) == ("LOC", "length")
    assert (result.prompt_tokens, result.completion_tokens) == (12, 4)
    sent = json.loads(route.calls.last.request.content)
    assert sent["max_completion_tokens"] == 4 and "max_tokens" not in sent
    assert (sent["temperature"], sent["stop"], sent["seed"]) == (0.0, ["\n"], 1)
    assert "top_p" not in sent


def test_a_local_compatible_server_needs_no_key(api, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_BASE_URL", LOCAL)
    route = api.post(f"{LOCAL}/chat/completions").respond(200, json=chat_body("hi"))
    provider = OpenAIProvider(today=lambda: date(2027, 6, 1))
    result = provider.chat("smollm2", [{"role": "user", "content": "hello"}], max_tokens=8)
    assert result.text == "hi"
    sent = route.calls.last.request
    assert sent.headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"
    assert json.loads(sent.content)["max_tokens"] == 8


def test_a_plain_refusal_from_a_compatible_server_after_the_date_is_not_closure(
    api, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    api.post(f"{LOCAL}/fine_tuning/jobs").respond(400, json=error_body("unknown model"))
    provider = OpenAIProvider(base_url=LOCAL, today=lambda: date(2027, 6, 1))
    with pytest.raises(TunelabError) as caught:
        provider.create_job(request_for())
    assert caught.value.code == "provider_rejected"


# Keys


def test_missing_key_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(TunelabError) as caught:
        OpenAIProvider()
    assert caught.value.code == "missing_api_key"
    assert "OPENAI_API_KEY" in caught.value.message


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("key_from", ["environment", "argument"])
def test_a_planted_key_never_leaks(api, monkeypatch, tmp_path, caplog, capsys, status, key_from):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    caplog.set_level(logging.DEBUG)
    # Libraries imported by earlier tests may have quietened these loggers (trackio's
    # dependencies set httpx's to WARNING): every line they would write is read here.
    for name in ("openai", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    if key_from == "environment":
        monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
        provider = OpenAIProvider(policy=RetryPolicy(sleep=lambda _: None))
    else:
        provider = OpenAIProvider(api_key=PLANTED, policy=RetryPolicy(sleep=lambda _: None))
    # A careless server echoing the key back in its error.
    api.post(f"{OPENAI}/fine_tuning/jobs").respond(
        status, json=error_body(f"Incorrect API key provided: {PLANTED}.", code="invalid_api_key")
    )
    with pytest.raises(TunelabError) as caught:
        provider.create_job(request_for())
    error = caught.value
    assert error.code == ("provider_auth_failed" if status == 401 else "provider_unavailable")
    assert api.calls.last.request.headers["authorization"] == f"Bearer {PLANTED}"
    printed = capsys.readouterr()
    # The SDK's (and httpx's) debug logs of this request were captured; what each says
    # depends on the versions installed (a record factory installed by an import may drop
    # the URL), so the check is that they were there, not their wording.
    assert any(record.name.startswith("openai") for record in caplog.records)
    for text in (
        str(error),
        repr(error),
        json.dumps(error.to_dict()),
        "".join(traceback.format_exception(error)),
        repr(provider),
        caplog.text,
        printed.out,
        printed.err,
    ):
        assert PLANTED not in text
