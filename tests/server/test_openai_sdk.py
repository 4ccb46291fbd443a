"""The unmodified `openai` SDK, sync and async, against a real `tunelab serve` on loopback.

The whole fine-tuning lifecycle (upload, create, list, events, checkpoints, cancel, wait,
chat with the `ft:` model) and the errors the SDK must raise.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from conftest import Server
from tiny import QUESTIONS
from tunelab.data.preference import preference_pair
from tunelab.registry import Store

pytestmark = pytest.mark.slow  # a server process, real workers and training
FAST = {"batch_size": 4, "learning_rate": 0.01, "precision": "fp32", "lora_rank": 4}


def client(server: Server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0)


def wait_for(sdk: openai.OpenAI, job_id: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = sdk.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.25)
    raise AssertionError(f"{job_id} still {job.status} after {timeout} s")


def test_the_whole_lifecycle_with_the_sync_sdk(server, tiny_model, train_path):
    sdk = client(server)
    uploaded = sdk.files.create(file=train_path.open("rb"), purpose="fine-tune")
    assert uploaded.status == "processed" and uploaded.bytes == train_path.stat().st_size
    assert sdk.files.retrieve(uploaded.id).filename == "train.jsonl"
    assert sdk.files.content(uploaded.id).read() == train_path.read_bytes()

    job = sdk.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=uploaded.id,
        suffix="sdk",
        seed=3,
        metadata={"team": "search"},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, **FAST}},
        },
    )
    assert job.status == "queued" and job.metadata == {"team": "search"}
    others = [
        sdk.fine_tuning.jobs.create(model=str(tiny_model), training_file=uploaded.id)
        for _ in range(2)
    ]
    for other in others:  # cancelled while queued: never trained
        assert sdk.fine_tuning.jobs.cancel(other.id).status == "cancelled"
    listed = [j.id for j in sdk.fine_tuning.jobs.list(limit=1)]
    assert listed[:3] == [others[1].id, others[0].id, job.id]
    filtered = sdk.fine_tuning.jobs.list(metadata={"team": "search"})
    assert [j.id for j in filtered.data] == [job.id]

    done = wait_for(sdk, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft:tiny-llama:local:sdk:")
    events = list(sdk.fine_tuning.jobs.list_events(job.id, limit=2))
    assert events[0].message == "The job has successfully completed"  # newest first
    assert events[-1].message.startswith("Created fine-tuning job")
    points = sdk.fine_tuning.jobs.checkpoints.list(job.id).data
    assert points and points[0].step_number == 9 and points[0].metrics.train_loss > 0

    models = [m.id for m in sdk.models.list().data]
    assert done.fine_tuned_model in models
    answer = sdk.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=5,
    )
    text = answer.choices[0].message.content
    assert answer.usage.completion_tokens > 0 and answer.model == done.fine_tuned_model
    stream = sdk.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=5,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_cancel_during_training_ends_cancelled(server, tiny_model, train_path):
    sdk = client(server)
    uploaded = sdk.files.create(file=train_path.open("rb"), purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=uploaded.id,
        hyperparameters={"n_epochs": 3000, "batch_size": 4},
    )
    deadline = time.monotonic() + 120
    while sdk.fine_tuning.jobs.retrieve(job.id).status != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    sdk.fine_tuning.jobs.cancel(job.id)
    # 3,000 epochs never finish within the wait: "cancelled" can only come from the cancel.
    done = wait_for(sdk, job.id, timeout=300)
    assert done.status == "cancelled"


def test_the_async_sdk_uploads_creates_lists_and_streams(server, tiny_model, train_path):
    async def flow() -> tuple[str, str]:
        sdk = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0)
        uploaded = await sdk.files.create(file=train_path.open("rb"), purpose="fine-tune")
        job = await sdk.fine_tuning.jobs.create(
            model=str(tiny_model), training_file=uploaded.id, hyperparameters={"n_epochs": 1}
        )
        page = await sdk.fine_tuning.jobs.list(limit=100)
        assert job.id in [j.id for j in page.data]
        await sdk.fine_tuning.jobs.cancel(job.id)
        stream = await sdk.chat.completions.create(
            model=str(tiny_model),
            messages=[{"role": "user", "content": "Who wrote Hamlet?"}],
            max_tokens=4,
            stream=True,
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        plain = await sdk.chat.completions.create(
            model=str(tiny_model),
            messages=[{"role": "user", "content": "Who wrote Hamlet?"}],
            max_tokens=4,
        )
        return "".join(parts), plain.choices[0].message.content

    streamed, plain = asyncio.run(flow())
    assert streamed == plain


def test_the_sdk_raises_the_matching_error_classes(server, tiny_model, train_path):
    sdk = client(server)
    with pytest.raises(openai.NotFoundError):
        sdk.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve("file-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(
            model="ft:nope:local::00000000", messages=[{"role": "user", "content": "hi"}]
        )
    uploaded = sdk.files.create(file=train_path.open("rb"), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.fine_tuning.jobs.create(
            model=str(tiny_model), training_file=uploaded.id, hyperparameters={"n_epochs": 0}
        )
    assert "n-epochs" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        sdk.files.create(file=train_path.open("rb"), purpose="assistants")
    job = sdk.fine_tuning.jobs.create(model=str(tiny_model), training_file=uploaded.id)
    sdk.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.ConflictError):
        sdk.fine_tuning.jobs.cancel(job.id)


def test_a_file_with_errors_is_recorded_as_error_and_cannot_train(server, tiny_model, tmp_path):
    sdk = client(server)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    uploaded = sdk.files.create(file=bad.open("rb"), purpose="fine-tune")
    assert uploaded.status == "error" and "line 2" in uploaded.status_details
    with pytest.raises(openai.BadRequestError):
        sdk.fine_tuning.jobs.create(model=str(tiny_model), training_file=uploaded.id)


def test_a_server_with_a_key_refuses_bad_keys_hosts_and_oversized_uploads(
    tmp_path_factory, train_path
):
    home = tmp_path_factory.mktemp("guarded-home")
    guarded = Server(
        home, "--api-key", "s3cret-key-for-tests", "--max-upload-mb", "0.001", "--no-worker"
    )
    try:
        with pytest.raises(openai.AuthenticationError):
            client(guarded, "wrong-key").models.list()
        assert client(guarded, "s3cret-key-for-tests").models.list().data
        assert httpx.get(f"{guarded.url}/models").status_code == 401  # no key at all
        rebinding = httpx.get(
            f"{guarded.url}/models",
            headers={"Host": "evil.example:80", "Authorization": "Bearer s3cret-key-for-tests"},
        )
        assert rebinding.status_code == 400 and rebinding.json()["error"]["code"] == "invalid_host"
        big = train_path.read_bytes() * 10  # over 1 kB
        with pytest.raises(openai.APIStatusError) as caught:
            client(guarded, "s3cret-key-for-tests").files.create(
                file=("big.jsonl", big), purpose="fine-tune"
            )
        assert caught.value.status_code == 413
        with Store(home / "registry.db") as store:
            assert store.list_files() == []
        assert not [p for p in (home / "files").glob("*")] if (home / "files").exists() else True
    finally:
        guarded.stop()
    assert "s3cret-key-for-tests" not in guarded.output()


def test_a_dpo_job_created_with_the_sdk_trains_reports_its_metrics_and_chats(
    server, tiny_model, tmp_path
):
    pairs = [
        preference_pair([{"role": "user", "content": q}], a, "I do not know.", source_line=i)
        for i, (q, a) in enumerate(QUESTIONS, 1)
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"".join(pair.to_json_line() for pair in pairs))
    sdk = client(server)
    uploaded = sdk.files.create(file=path.open("rb"), purpose="fine-tune")
    job = sdk.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=uploaded.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3, "n_epochs": 2, **FAST}}},
    )
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.3
    done = wait_for(sdk, job.id)
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo"
    events = list(sdk.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all("preference_accuracy" in m for m in metrics)
    answer = sdk.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What do bees make?"}],
        max_tokens=4,
    )
    assert answer.usage.completion_tokens > 0
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.fine_tuning.jobs.create(
            model=str(tiny_model), training_file=uploaded.id, method={"type": "supervised"}
        )
    assert refused.value.code == "invalid_training_data"


STRING_CHECK = {
    "type": "string_check",
    "name": "exact",
    "input": "{{ sample.output_text }}",
    "reference": "{{ item.answer }}",
    "operation": "ilike",
}
MULTI = {
    "type": "multi",
    "name": "both",
    "graders": {
        "exact": STRING_CHECK,
        "close": {
            "type": "text_similarity",
            "name": "close",
            "input": "{{ sample.output_text }}",
            "reference": "{{ item.answer }}",
            "evaluation_metric": "fuzzy_match",
        },
    },
    "calculate_output": "0.5 * exact + 0.5 * close",
}


@pytest.mark.parametrize("grader", [STRING_CHECK, MULTI], ids=["string_check", "multi"])
def test_a_reinforcement_job_created_with_the_sdk_trains_with_its_grader(
    server, tiny_model, tmp_path, grader
):
    items = [{"messages": [{"role": "user", "content": q}], "answer": a} for q, a in QUESTIONS]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    sdk = client(server)
    uploaded = sdk.files.create(file=path.open("rb"), purpose="fine-tune")
    settings = {**FAST, "n_epochs": 1, "rl_group_size": 2, "rl_max_answer_tokens": 4}
    job = sdk.fine_tuning.jobs.create(
        model=str(tiny_model),
        training_file=uploaded.id,
        method={
            "type": "reinforcement",
            "reinforcement": {"grader": grader, "hyperparameters": settings},
        },
    )
    assert job.method.type == "reinforcement"
    assert job.method.reinforcement.grader.type == grader["type"]
    done = wait_for(sdk, job.id, timeout=300)
    assert done.status == "succeeded", done.error
    events = list(sdk.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e.data for e in events if e.type == "metrics"]
    assert metrics and all(0 <= m["reward_mean"] <= 1 and "kl" in m for m in metrics)
    answer = sdk.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "What do bees make?"}],
        max_tokens=4,
    )
    assert answer.usage.completion_tokens > 0


def test_a_reinforcement_job_without_a_usable_grader_is_refused(server, tiny_model, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}], "answer": "x"}))
    sdk = client(server)
    uploaded = sdk.files.create(file=path.open("rb"), purpose="fine-tune")
    for section, code in (({}, "grader_missing"), ({"grader": {"type": "nope"}}, "grader_invalid")):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.fine_tuning.jobs.create(
                model=str(tiny_model),
                training_file=uploaded.id,
                method={"type": "reinforcement", "reinforcement": section},
            )
        assert refused.value.code == code
