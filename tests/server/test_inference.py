"""`/v1/chat/completions` and `/v1/models` on tiny random models, through the app's own
TestClient and through the official `openai` SDK wired to it (the SDK accepts an httpx client,
which the TestClient is). No network; the registry lives in the test's TUNELAB_HOME."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from fastapi.testclient import TestClient

from server.conftest import sdk
from tiny import QUESTIONS, save_tiny_model
from tunelab.engine.generate import DecodeSession, KVBatch, encode_chat, generate
from tunelab.engine.models import load_base
from tunelab.engine.score import score_answers
from tunelab.providers import registry
from tunelab.providers.local import model_cache
from tunelab.providers.provider import Provider
from tunelab.registry import Store
from tunelab.server.app import ServerConfig, create_app
from tunelab.types import Answer, Usage

FT_NAME = "ft:team/tiny:local:demo:abc123"  # ids hold ':' and '/'


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return [save_tiny_model(root / f"tiny-{seed}", seed=seed) for seed in range(3)]


@pytest.fixture
def model_dir(model_dirs):
    return model_dirs[0]


@pytest.fixture
def serve():
    """Start the app (lifespan included) with a ServerConfig; returns its TestClient."""
    clients = []

    def start(**config) -> TestClient:
        config.setdefault("allow_any_model", True)  # these tests name model directories
        app = create_app(ServerConfig(allowed_hosts=("testserver",), start_worker=False, **config))
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(serve):
    return serve()


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def engine_answers(model_dir, conversations, max_tokens):
    """What the engine alone answers, greedily and one conversation at a time."""
    model, tokenizer, _ = load_base(model_dir)
    return [generate(model, tokenizer, [c], max_new_tokens=max_tokens)[0] for c in conversations]


def chat(client, model, messages, **fields):
    return client.post(
        "/v1/chat/completions", json={"model": model, "messages": messages, **fields}
    )


# Where the server calls the engine: loading in the model cache, adding rows to the queue's
# decode session.
ENGINE_CALLS = {"load_base": model_cache, "add": DecodeSession}


def count_calls(monkeypatch, name: str, before=None) -> list:
    """Record each call of the engine's `name` by the server (its arguments), running `before`
    first."""
    module = ENGINE_CALLS[name]
    original, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if before is not None:
            before(len(calls))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_completion_shape_usage_and_length(client, model_dir):
    messages = ask(QUESTIONS[0][0])
    response = chat(client, str(model_dir), messages, max_tokens=3, temperature=0)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == str(model_dir) and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "length"
    _, tokenizer, _ = load_base(model_dir)
    assert body["usage"] == {
        "prompt_tokens": len(encode_chat(tokenizer, messages)),
        "completion_tokens": 3,
        "total_tokens": len(encode_chat(tokenizer, messages)) + 3,
    }


def test_sdk_greedy_answer_is_the_engines(client, model_dir):
    messages = [{"role": "system", "content": "Be brief."}, *ask(QUESTIONS[1][0])]
    answer = sdk(client).chat.completions.create(
        model=str(model_dir), messages=messages, max_tokens=12, temperature=0
    )
    [expected] = engine_answers(model_dir, [messages], 12)
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].finish_reason == expected.finish_reason
    assert answer.usage.completion_tokens == expected.completion_tokens


def test_stream_is_server_sent_chunks_of_the_same_answer(client, model_dir):
    fields = dict(max_tokens=10, temperature=0)
    plain = chat(client, str(model_dir), ask("Who wrote Hamlet?"), **fields).json()
    body = {
        "model": str(model_dir),
        "messages": ask("Who wrote Hamlet?"),
        "stream": True,
        "stream_options": {"include_usage": True},
        **fields,
    }
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


def test_sdk_stream_concatenates_to_the_plain_answer_greedy_by_default(client, model_dir):
    api = sdk(client)
    settings = dict(model=str(model_dir), messages=ask("What do bees make?"), max_tokens=10)
    plain = api.chat.completions.create(**settings).choices[0].message.content
    chunks = list(api.chat.completions.create(**settings, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain
    assert plain == engine_answers(model_dir, [settings["messages"]], 10)[0].text
    assert chunks[-1].choices[0].finish_reason is not None


def test_concurrent_requests_decode_in_one_batch(serve, model_dir, monkeypatch):
    client = serve()
    service = client.app.state.inference
    questions = [q for q, _ in QUESTIONS[:6]]

    def hold_first_request(call: int) -> None:
        if call == 1:  # the others arrive while the worker is busy: they must join it
            wait_until(lambda: service.pending == len(questions))

    loads = count_calls(monkeypatch, "load_base")
    adds = count_calls(monkeypatch, "add", before=hold_first_request)
    widths, real_step = [], DecodeSession.step
    monkeypatch.setattr(
        DecodeSession, "step", lambda self: widths.append(self.rows) or real_step(self)
    )
    prefills, real_start = [], KVBatch.start
    monkeypatch.setattr(
        KVBatch,
        "start",
        lambda self, prompts, prefix=None: (
            prefills.append(len(prompts)) or real_start(self, prompts, prefix)
        ),
    )
    with ThreadPoolExecutor(len(questions)) as pool:
        responses = list(
            pool.map(
                lambda q: chat(client, str(model_dir), ask(q), max_tokens=8, temperature=0),
                questions,
            )
        )
    assert [r.status_code for r in responses] == [200] * len(questions)
    assert len(loads) == 1  # loaded once for all six
    assert max(widths) == len(questions)  # all six decoded in one batch
    assert sum(len(call[1]) for call in adds) == len(questions)  # each conversation once
    # Those that waited while the first one was added were prefilled in one forward pass.
    assert sum(prefills) == len(questions) and len(prefills) <= 2
    expected = engine_answers(model_dir, [ask(q) for q in questions], 8)
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [
        e.text for e in expected
    ]


def test_streamed_and_whole_requests_joining_at_different_times_answer_as_alone(
    client, model_dir, monkeypatch
):
    """Greedy answers do not depend on batch mates: requests arrive one after another while
    others decode, streamed and not, beside a sampled one with other settings."""
    questions = [q for q, _ in QUESTIONS[:6]]
    api = sdk(client)
    widths, real_step = [], DecodeSession.step
    monkeypatch.setattr(
        DecodeSession, "step", lambda self: widths.append(self.rows) or real_step(self)
    )

    def answer(index: int) -> str:
        time.sleep(0.01 * index)  # each arrives while the earlier ones decode
        settings = dict(model=str(model_dir), messages=ask(questions[index]), max_tokens=12)
        if index % 2:
            chunks = api.chat.completions.create(**settings, stream=True, temperature=0)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return api.chat.completions.create(**settings, temperature=0).choices[0].message.content

    def sampled() -> None:
        settings = dict(model=str(model_dir), messages=ask("Hi"), max_tokens=200)
        api.chat.completions.create(**settings, temperature=1.3, top_p=0.7, seed=3)

    with ThreadPoolExecutor(len(questions) + 1) as pool:
        mate = pool.submit(sampled)
        texts = list(pool.map(answer, range(len(questions))))
        mate.result()
    expected = engine_answers(model_dir, [ask(q) for q in questions], 12)
    assert texts == [e.text for e in expected]
    assert max(widths) > 2  # they did decode together


def test_busy_server_answers_429_with_retry_after(serve, model_dir, monkeypatch):
    client = serve(max_pending_requests=1)
    release = threading.Event()
    count_calls(monkeypatch, "add", before=lambda _: release.wait(10))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(chat, client, str(model_dir), ask("Hi"), max_tokens=2)
        wait_until(lambda: client.app.state.inference.pending == 1)
        busy = chat(client, str(model_dir), ask("Hi"), max_tokens=2)
        with pytest.raises(openai.RateLimitError):
            sdk(client).chat.completions.create(model=str(model_dir), messages=ask("Hi"))
        release.set()
        assert first.result().status_code == 200
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "server_busy"
    assert busy.json()["error"]["type"] == "rate_limit_error"


def test_unknown_model_is_404_in_openais_envelope(client):
    response = chat(client, "no-such-model", ask("Hi"))
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["type"] == "not_found_error"
    with pytest.raises(openai.NotFoundError):
        sdk(client).chat.completions.create(model="ft:nothing:here", messages=ask("Hi"))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": -1}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages[0].role"),
        ({"n": 0}, "n"),
        ({"stop": [""]}, "stop"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_invalid_request_is_400(client, model_dir, fields, param):
    body = {"model": str(model_dir), "messages": ask("Hi"), **fields}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith(param)


def test_prompt_over_the_context_is_400_streamed_or_not(client, model_dir):
    messages = ask("What is two plus two? " * 60)  # the tiny model's context is 256 tokens
    plain = chat(client, str(model_dir), messages, max_tokens=2)
    streamed = chat(client, str(model_dir), messages, max_tokens=2, stream=True)
    for response in (plain, streamed):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "prompt_too_long"


def test_n_choices_differ_when_sampling_and_repeat_with_a_seed(client, model_dir):
    fields = dict(max_tokens=6, temperature=1.0, n=3, seed=7)
    first = chat(client, str(model_dir), ask("Hi"), **fields).json()
    again = chat(client, str(model_dir), ask("Hi"), **fields).json()
    texts = [c["message"]["content"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert len(set(texts)) > 1
    assert [c["message"]["content"] for c in again["choices"]] == texts
    assert first["usage"]["completion_tokens"] == 18


def test_models_list_retrieve_and_delete(client, model_dir):
    with Store() as store:
        store.put_model(
            FT_NAME,
            provider="local",
            kind="fine-tuned",
            path=str(model_dir),
            base_model="smollm2-135m-instruct",
        )
    api = sdk(client)
    listed = {model.id: model for model in api.models.list()}
    assert {FT_NAME, "smollm2-135m-instruct"} <= set(listed)
    assert "gpt-4o-mini-2024-07-18" not in listed  # hosted base models are not served here
    assert api.models.retrieve(FT_NAME).owned_by == "local"
    assert client.get("/v1/models/SmolLM2-135M-Instruct").json()["id"] == "smollm2-135m-instruct"

    chat(client, FT_NAME, ask("Hi"), max_tokens=2)
    service = client.app.state.inference
    assert str(model_dir.resolve()) in service.loaded_models()
    assert api.models.delete(FT_NAME).deleted is True
    assert str(model_dir.resolve()) not in service.loaded_models()
    with pytest.raises(openai.NotFoundError):
        api.models.retrieve(FT_NAME)
    assert client.delete(f"/v1/models/{FT_NAME}").status_code == 404
    assert chat(client, FT_NAME, ask("Hi")).status_code == 404
    with pytest.raises(openai.PermissionDeniedError, match="base model"):
        api.models.delete("smollm2-135m-instruct")


def test_cache_evicts_the_least_recently_used_model(serve, model_dirs, monkeypatch):
    one_model = model_cache.model_bytes(load_base(model_dirs[0])[0])
    assert model_cache.estimated_bytes(load_base(model_dirs[0])[2]) == one_model
    client = serve(model_memory_bytes=int(2.5 * one_model))  # room for two
    service = client.app.state.inference
    loads = count_calls(monkeypatch, "load_base")
    a, b, c = (str(d) for d in model_dirs)
    for name in (a, b, a, c):
        assert chat(client, name, ask("Hi"), max_tokens=1).status_code == 200
    assert service.loaded_models() == [str(model_dirs[0].resolve()), str(model_dirs[2].resolve())]
    assert chat(client, b, ask("Hi"), max_tokens=1).status_code == 200
    assert [call[0] for call in loads] == [a, b, c, b]  # a stayed cached; b was loaded again


def test_hosted_model_answers_through_its_provider(client, monkeypatch):
    asked = []

    class FakeProvider(Provider):
        name = "fake"

        def chat(self, model, messages, **settings):
            asked.append((model, messages, settings))
            return Answer("Bonjour", "stop", Usage(11, 2), model=model)

    monkeypatch.setattr(registry, "get_provider", lambda name, **endpoint: FakeProvider())
    with Store() as store:
        store.put_model("ft:llama:together:abc", provider="together", kind="fine-tuned")
    api = sdk(client)
    answer = api.chat.completions.create(model="ft:llama:together:abc", messages=ask("Hi"))
    assert answer.choices[0].message.content == "Bonjour"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 2)
    assert asked[0][2]["temperature"] is None  # the provider's own default, as the client sent
    chunks = list(
        api.chat.completions.create(
            model="ft:llama:together:abc", messages=ask("Hi"), stream=True, max_tokens=5
        )
    )
    assert [c.choices[0].delta.content for c in chunks] == ["", "Bonjour", None]
    assert asked[1][2]["max_tokens"] == 5


LABELS = ["NUM", "NUMBER", "LOC", "HUM"]  # multi-token labels, two sharing a prefix


def test_labels_answer_with_the_label_the_engine_scores_highest(client, model_dir):
    messages = ask(QUESTIONS[2][0])
    answer = sdk(client).chat.completions.create(
        model=str(model_dir), messages=messages, extra_body={"labels": LABELS}
    )
    model, tokenizer, _ = load_base(model_dir)
    expected = [f"<category>{label}</category>" for label in LABELS]
    [scores] = score_answers(model, tokenizer, [messages], expected)
    best = max(range(len(LABELS)), key=lambda i: scores[i].logprob)
    [choice] = answer.choices
    assert choice.message.content == expected[best] and choice.finish_reason == "stop"
    listed = choice.model_extra["label_scores"]
    assert [row["label"] for row in listed] == LABELS
    for row, score in zip(listed, scores, strict=True):
        assert row["logprob"] == pytest.approx(score.logprob, abs=1e-4)
    assert answer.usage.prompt_tokens == len(encode_chat(tokenizer, messages))
    bare = chat(client, str(model_dir), messages, labels=LABELS, bare_label=True).json()
    assert bare["choices"][0]["message"]["content"] in LABELS


def test_labels_are_refused_where_they_cannot_be_scored(client, model_dir, monkeypatch):
    cases = [
        ({"labels": LABELS, "stream": True}, "labels"),
        ({"labels": LABELS, "n": 2}, "labels"),
        ({"labels": ["A", "A"]}, "labels"),
        ({"labels": []}, "labels"),
    ]
    for fields, param in cases:
        response = chat(client, str(model_dir), ask("Hi"), **fields)
        assert response.status_code == 400, fields
        assert param in json.dumps(response.json()["error"])
    monkeypatch.setattr(registry, "get_provider", lambda name, **endpoint: Provider())
    with Store() as store:
        store.put_model("ft:llama:together:abc", provider="together", kind="fine-tuned")
    hosted = chat(client, "ft:llama:together:abc", ask("Hi"), labels=LABELS)
    assert hosted.status_code == 400 and hosted.json()["error"]["code"] == "no_logprobs"


def test_clients_name_only_the_models_the_operator_serves(serve, model_dirs, tmp_path):
    """No path, Hub id or URL from a client reaches the disk, the Hub or another host."""
    client = serve(allow_any_model=False, models=(str(model_dirs[0]),))
    loads = []
    inference_load = model_cache.load_base
    model_cache.load_base = lambda *a, **k: loads.append(a) or inference_load(*a, **k)
    try:
        refused = {
            name: chat(client, name, ask("Hi"), max_tokens=1)
            for name in (
                str(model_dirs[1]),
                "/etc",
                "/no/such/dir",
                "org/some-hub-model",
                "m@http://127.0.0.1:9/v1",
            )
        }
        listed = chat(client, str(model_dirs[0]), ask("Hi"), max_tokens=1)
    finally:
        model_cache.load_base = inference_load
    assert listed.status_code == 200
    bodies = {name: answer.json()["error"] for name, answer in refused.items()}
    assert {answer.status_code for answer in refused.values()} == {404}
    assert {error["code"] for error in bodies.values()} == {"model_not_found"}
    # The same words whether the path exists, is a model, or is nothing at all.
    assert {error["message"].replace(name, "X") for name, error in bodies.items()} == {
        "The model 'X' does not exist or you do not have access to it."
    }
    assert [call[0] for call in loads] == [str(model_dirs[0])]
    job = client.post("/v1/fine_tuning/jobs", json={"model": "/etc", "training_file": "file-x"})
    assert job.status_code == 404 and job.json()["error"]["code"] == "model_not_found"
