"""Chat completion request fields beyond the messages, through the unmodified `openai` SDK:
`logprobs`/`top_logprobs` (whole and streamed), `logit_bias`, `n`, `stop` across token
boundaries, and the refusal by name of every field tunelab does not honour."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from tiny import save_tiny_model
from tunelab.engine.generate import generate
from tunelab.engine.models import load_base
from tunelab.providers import registry
from tunelab.providers.provider import Provider
from tunelab.registry import Store
from tunelab.server.app import ServerConfig, create_app
from tunelab.server.chat_fields import IGNORED, NEUTRAL, REFUSED
from tunelab.server.routes_inference import ChatCompletionRequest
from tunelab.types import Answer, Usage

MESSAGES = [{"role": "user", "content": "Who wrote Hamlet?"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny"))


@pytest.fixture
def client():
    config = ServerConfig(allowed_hosts=("testserver",), start_worker=False, allow_any_model=True)
    with TestClient(create_app(config)) as running:
        yield running


def sdk(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key="x", http_client=client, max_retries=0
    )


def engine_answer(model_dir: str, **settings) -> Answer:
    model, tokenizer, _ = load_base(model_dir)
    return generate(model, tokenizer, [MESSAGES], **settings)[0]


def test_logprobs_are_the_engines_in_openais_shape(client, model_dir):
    answer = sdk(client).chat.completions.create(
        model=model_dir, messages=MESSAGES, max_tokens=8, logprobs=True, top_logprobs=3
    )
    expected = engine_answer(model_dir, max_new_tokens=8, logprobs=3)

    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens == 8
    for got, want in zip(content, expected.logprobs, strict=True):
        assert (got.token, got.bytes) == (want.token, list(want.bytes))
        assert got.logprob == pytest.approx(want.logprob, abs=1e-5)
        assert [t.token for t in got.top_logprobs] == [t.token for t in want.top_logprobs]
    plain = sdk(client).chat.completions.create(model=model_dir, messages=MESSAGES, max_tokens=8)
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == answer.choices[0].message.content


def test_streamed_chunks_carry_the_same_logprobs(client, model_dir):
    fields = dict(model=model_dir, messages=MESSAGES, max_tokens=8, logprobs=True, top_logprobs=2)
    whole = sdk(client).chat.completions.create(**fields)
    chunks = list(sdk(client).chat.completions.create(**fields, stream=True))

    streamed = [
        t
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content
    ]
    assert [(t.token, t.bytes) for t in streamed] == [
        (t.token, t.bytes) for t in whole.choices[0].logprobs.content
    ]
    assert [t.logprob for t in streamed] == pytest.approx(
        [t.logprob for t in whole.choices[0].logprobs.content], abs=1e-5
    )


def test_n_sampled_choices_each_with_their_logprobs(client, model_dir):
    answer = sdk(client).chat.completions.create(
        model=model_dir, messages=MESSAGES, max_tokens=6, n=3, temperature=1.0, logprobs=True
    )
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert len({c.message.content for c in answer.choices}) > 1
    assert all(len(c.logprobs.content) == 6 for c in answer.choices)
    assert all(c.logprobs.content[0].top_logprobs == [] for c in answer.choices)


def test_logit_bias_bans_and_forces_tokens(client, model_dir):
    api = sdk(client).chat.completions
    plain = api.create(model=model_dir, messages=MESSAGES, max_tokens=6, logprobs=True)
    first = plain.choices[0].logprobs.content[0]
    _, tokenizer, _ = load_base(model_dir)
    first_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(first.token)[0])
    cow = tokenizer.convert_tokens_to_ids("Ġcow")

    banned = api.create(
        model=model_dir,
        messages=MESSAGES,
        max_tokens=6,
        logit_bias={str(first_id): -100},
        logprobs=True,
    )
    forced = api.create(
        model=model_dir, messages=MESSAGES, max_tokens=3, logit_bias={str(cow): 100}
    )

    assert banned.choices[0].logprobs.content[0].token != first.token
    assert forced.choices[0].message.content == " cow" * 3


def test_a_stop_string_across_tokens_is_cut_exactly_streamed_or_not(client, model_dir):
    full = engine_answer(model_dir, max_new_tokens=16, logprobs=0)
    tokens = [t.token for t in full.logprobs]
    # the last character of one token and the first of the next
    at = next(
        i
        for i in range(3, 15)
        if tokens[i][-1:].isprintable()
        and tokens[i + 1][:1].isprintable()
        and tokens[i]
        and tokens[i + 1]
    )
    stop = tokens[at][-1] + tokens[at + 1][0]
    expected = full.text[: full.text.index(stop)]
    fields = dict(model=model_dir, messages=MESSAGES, max_tokens=16, stop=[stop])

    whole = sdk(client).chat.completions.create(**fields)
    chunks = list(sdk(client).chat.completions.create(**fields, stream=True))

    assert whole.choices[0].message.content == expected
    assert whole.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"frobnicate": 1}, "frobnicate", "unsupported_parameter"),
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        ({"tool_choice": "required"}, "tool_choice", None),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
            None,
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format", None),
        ({"presence_penalty": 0.5}, "presence_penalty", "unsupported_parameter"),
        ({"top_logprobs": 2}, "top_logprobs", None),
        ({"logit_bias": {"x": 1}}, "logit_bias", "invalid_request"),
        ({"logit_bias": {"3": 101}}, "logit_bias", "invalid_request"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_request"),
    ],
)
def test_fields_tunelab_does_not_honour_are_refused_by_name(client, model_dir, extra, param, code):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(client).chat.completions.create(
            model=model_dir, messages=MESSAGES, max_tokens=2, extra_body=extra
        )
    error = caught.value.body
    assert error["param"].startswith(param) and error["code"] == code
    assert param in error["message"]


def test_ignored_and_neutral_fields_are_accepted(client, model_dir):
    answer = sdk(client).chat.completions.create(
        model=model_dir,
        messages=MESSAGES,
        max_tokens=2,
        user="someone",
        metadata={"team": "search"},
        store=False,
        response_format={"type": "text"},
        presence_penalty=0,
        frequency_penalty=0,
        extra_body={"tools": None},
    )
    assert answer.usage.completion_tokens == 2


def test_a_provider_without_logprobs_refuses_them_by_name(client, monkeypatch):
    class TextOnly(Provider):
        name = "textonly"

        def chat(self, model, messages, **settings):
            return Answer("Bonjour", "stop", Usage(3, 1), model=model)

    monkeypatch.setattr(registry, "get_provider", lambda name, **endpoint: TextOnly())
    with Store() as store:
        store.put_model("ft:llama:together:abc", provider="together", kind="fine-tuned")
    api = sdk(client).chat.completions
    tools = [{"type": "function", "function": {"name": "f"}}]
    json_format = {"type": "json_object"}
    for fields in (
        {"logprobs": True},
        {"logit_bias": {"5": 10}},
        {"response_format": json_format},
        {"tools": tools},
    ):
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                api.create(
                    model="ft:llama:together:abc", messages=MESSAGES, stream=stream, **fields
                )
            assert caught.value.body["code"] == "unsupported_parameter"
            assert caught.value.body["param"] == next(iter(fields))
    assert (
        api.create(model="ft:llama:together:abc", messages=MESSAGES).choices[0].message.content
        == "Bonjour"
    )


def test_the_readme_says_what_becomes_of_every_field():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("Chat completion request fields") :]
    names = {*IGNORED, *NEUTRAL, *REFUSED, *ChatCompletionRequest.model_fields}
    assert not [name for name in names if f"`{name}`" not in table]
