"""Chat completion request fields beyond the messages, through the unmodified `openai` SDK:
`logprobs`/`top_logprobs` (whole and streamed), `logit_bias`, `n`, `stop` across token
boundaries, and the refusal by name of every field tunelab does not honour; for hosted
models, the fields passed through to an OpenAI-compatible endpoint and refused by name where
the provider cannot answer them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anthropic
import openai
import pytest
from fastapi.testclient import TestClient

from server.conftest import sdk
from tiny import save_tiny_model
from tunelab.engine.generate import generate
from tunelab.engine.models import load_base
from tunelab.errors import TunelabError
from tunelab.providers import registry
from tunelab.providers.hosted.anthropic import AnthropicProvider
from tunelab.providers.hosted.compatible import OpenAICompatibleProvider
from tunelab.providers.provider import Provider
from tunelab.registry import Store
from tunelab.server.app import ServerConfig, create_app
from tunelab.server.chat_fields import (
    IGNORED,
    MESSAGE,
    NEUTRAL,
    REFUSED,
    STREAM_OPTIONS,
    TEXT_PART,
    UNREADABLE_PARTS,
)
from tunelab.server.chat_request import (
    ChatCompletionRequest,
    ContentPart,
    Message,
    StreamOptions,
)
from tunelab.server.ui.chat_structured import answer_fields
from tunelab.types import Answer, Usage

try:  # the transport of the `openai` SDK's own client: httpx2 from openai 3.x on
    import httpx2 as sdk_http
except ImportError:
    import httpx as sdk_http

MESSAGES = [{"role": "user", "content": "Who wrote Hamlet?"}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny"))


@pytest.fixture
def client():
    config = ServerConfig(allowed_hosts=("testserver",), start_worker=False, allow_any_model=True)
    with TestClient(create_app(config)) as running:
        yield running


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
        ({"tool_choice": "required"}, "tool_choice", "invalid_value"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
            "invalid_value",
        ),
        (
            {"response_format": {"type": "json_schema"}},
            "response_format.json_schema",
            "missing_required_parameter",
        ),
        ({"presence_penalty": 0.5}, "presence_penalty", "unsupported_parameter"),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "invalid_value"),
        ({"logit_bias": {"3": 101}}, "logit_bias", "invalid_value"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value"),
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


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
FILE = {"type": "file", "file": {"file_id": "file-1"}}
EARLIER_CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
FUNCTION_TOOL = {"type": "function", "function": {"name": "f"}}
BOOK_FORMAT = {"type": "json_schema", "json_schema": {"name": "b", "schema": {"type": "object"}}}


def user(content) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"messages": user([{"type": "text", "text": "Describe"}, IMAGE])},
            "messages[1].content[1].image_url",
        ),
        ({"messages": user([AUDIO])}, "messages[1].content[0].input_audio"),
        ({"messages": user([FILE])}, "messages[1].content[0].file"),
        ({"messages": user([{"type": "video", "video": "x"}])}, "messages[1].content[0].type"),
        (
            {"messages": user([{"type": "refusal", "refusal": "No."}])},
            "messages[1].content[0].type",
        ),
        (
            {"messages": user([{"type": "text", "text": "Hi", "lang": "en"}])},
            "messages[1].content[0].lang",
        ),
        (
            {"messages": user([{"type": "text", "text": "Hi", "refusal": "No."}])},
            "messages[1].content[0].refusal",
        ),
        ({"messages": [{"role": "user", "content": "Hi", "mood": "curious"}]}, "messages[0].mood"),
        (
            {"messages": [*MESSAGES, {"role": "assistant", "audio": {"id": "a1"}}]},
            "messages[1].audio",
        ),
        (
            {
                "messages": [
                    *MESSAGES,
                    {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
                ]
            },
            "messages[1].function_call",
        ),
        (
            {"messages": [{"role": "user", "content": "Hi", "tool_calls": [EARLIER_CALL]}]},
            "messages[0].tool_calls",
        ),
        (
            {"messages": [{"role": "user", "content": "Hi", "tool_call_id": "c1"}]},
            "messages[0].tool_call_id",
        ),
        (
            {"messages": [{"role": "user", "content": "Hi", "refusal": "No."}]},
            "messages[0].refusal",
        ),
        (
            {
                "messages": [
                    *MESSAGES,
                    {"role": "assistant", "tool_calls": [EARLIER_CALL]},
                    {"role": "tool", "tool_call_id": "c1", "content": "ok", "name": "f"},
                ]
            },
            "messages[2].name",
        ),
        (
            {
                "messages": [
                    *MESSAGES,
                    {"role": "assistant", "tool_calls": [{**EARLIER_CALL, "index": 0}]},
                ]
            },
            "messages[1].tool_calls[0].index",
        ),
        (
            {
                "messages": [
                    *MESSAGES,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                **EARLIER_CALL,
                                "function": {"name": "f", "arguments": "{}", "strict": True},
                            }
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.strict",
        ),
        (
            {"messages": [*MESSAGES, {"role": "function", "name": "f", "content": "ok"}]},
            "messages[1].role",
        ),
        (
            {
                "messages": [
                    *MESSAGES,
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c1", "type": "custom", "custom": {"name": "f", "input": "x"}}
                        ],
                    },
                ]
            },
            "messages[1].tool_calls[0].custom",
        ),
        ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].custom"),
        (
            {
                "tools": [FUNCTION_TOOL],
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "auto", "tools": [FUNCTION_TOOL]},
                },
            },
            "tool_choice.allowed_tools",
        ),
        (
            {"tools": [FUNCTION_TOOL], "tool_choice": {"type": "custom", "custom": {"name": "f"}}},
            "tool_choice.custom",
        ),
        (
            {"response_format": {"type": "json_object", "json_schema": BOOK_FORMAT["json_schema"]}},
            "response_format.json_schema",
        ),
        (
            {"tools": [{**FUNCTION_TOOL, "cache_control": {"type": "ephemeral"}}]},
            "tools[0].cache_control",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "returns": {}}}]},
            "tools[0].function.returns",
        ),
        ({"response_format": {"type": "json_object", "schema": {}}}, "response_format.schema"),
        (
            {
                "response_format": {
                    **BOOK_FORMAT,
                    "json_schema": {**BOOK_FORMAT["json_schema"], "examples": []},
                }
            },
            "response_format.json_schema.examples",
        ),
        (
            {
                "tools": [FUNCTION_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "f"}, "strict": True},
            },
            "tool_choice.strict",
        ),
        (
            {
                "tools": [FUNCTION_TOOL],
                "tool_choice": {"type": "function", "function": {"name": "f", "arguments": "{}"}},
            },
            "tool_choice.function.arguments",
        ),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
        ),
        (
            {"stream": True, "stream_options": {"include_usage": True, "chunk_size": 2}},
            "stream_options.chunk_size",
        ),
    ],
)
def test_nested_fields_tunelab_does_not_honour_are_refused_by_their_path(
    client, model_dir, fields, param
):
    request = {"model": model_dir, "messages": MESSAGES, "max_tokens": 2, **fields}
    response = client.post("/v1/chat/completions", json=request)

    error = response.json()["error"]
    assert response.status_code == 400, error
    assert (error["code"], error["param"]) == ("unsupported_parameter", param)
    assert f"`{param}`" in error["message"]


def test_nested_fields_ignored_at_null_or_neutral_are_accepted(client, model_dir):
    conversation = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}], "name": "ops"},
        {
            "role": "user",
            "name": "ada",
            "content": [
                {
                    "type": "text",
                    "text": "Who wrote Hamlet?",
                    "prompt_cache_breakpoint": {"mode": "explicit"},
                }
            ],
        },
        {
            "role": "assistant",
            "content": "Shakespeare.",
            "refusal": None,
            "audio": None,
            "function_call": None,
        },
        {"role": "user", "content": "When?", "tool_calls": None},
    ]
    answer = sdk(client).chat.completions.create(
        model=model_dir,
        messages=conversation,
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    )
    chunks = list(answer)
    assert chunks[-1].usage.completion_tokens == 2


def test_an_assistants_earlier_refusal_is_what_it_said(client, model_dir):
    def answer(assistant: dict) -> tuple[str, int]:
        conversation = [*MESSAGES, {"role": "assistant", **assistant}, *MESSAGES]
        reply = sdk(client).chat.completions.create(
            model=model_dir, messages=conversation, max_tokens=6
        )
        return reply.choices[0].message.content, reply.usage.prompt_tokens

    said = answer({"content": "I cannot say."})
    assert answer({"content": None, "refusal": "I cannot say."}) == said
    assert answer({"content": [{"type": "refusal", "refusal": "I cannot say."}]}) == said
    assert answer({"content": None})[1] < said[1]  # had it been dropped


def test_an_sdk_answer_sent_back_as_the_next_turn_is_read(client, model_dir):
    api = sdk(client).chat.completions
    first = api.create(model=model_dir, messages=MESSAGES, max_tokens=4)
    conversation = [*MESSAGES, first.choices[0].message, {"role": "user", "content": "Why?"}]
    again = api.create(model=model_dir, messages=conversation, max_tokens=2)
    assert again.usage.completion_tokens == 2
    assert again.usage.prompt_tokens > first.usage.prompt_tokens


def test_the_studios_tools_box_refuses_the_same_fields_by_their_path():
    tools = [FUNCTION_TOOL, {"type": "function", "function": {"name": "g", "returns": {}}}]
    with pytest.raises(TunelabError) as caught:
        answer_fields({"tools": json.dumps(tools)})
    assert "`tools[1].function.returns`" in caught.value.message
    assert answer_fields({"tools": json.dumps([FUNCTION_TOOL])})["tools"] == (FUNCTION_TOOL,)


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


UPSTREAM = "http://upstream.test/v1"
HOSTED = "ft:m:up:abc"
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
]
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


def upstream_token(text: str, logprob: float) -> dict:
    return {"token": text, "bytes": list(text.encode()), "logprob": logprob, "top_logprobs": []}


def upstream_answer(body: dict) -> sdk_http.Response:
    """An OpenAI-compatible endpoint that calls the tool, its tokens' logprobs included."""
    tokens = [upstream_token("Let", -0.5), upstream_token(" me", -0.25)]
    common = {"id": "up-1", "created": 1, "model": "m"}
    if not body.get("stream"):
        message = {"role": "assistant", "content": "Let me", "tool_calls": [CALL]}
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        choice["logprobs"] = {"content": tokens}
        usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
        return sdk_http.Response(
            200, json={**common, "object": "chat.completion", "choices": [choice], "usage": usage}
        )
    fragments = [{**CALL, "index": 0, "function": {"name": "get_weather", "arguments": ""}}]
    fragments.append({"index": 0, "function": {"arguments": "{}"}})
    deltas = [
        ({"content": "Let"}, [tokens[0]], None),
        ({"content": " me"}, [tokens[1]], None),
        *(({"tool_calls": [fragment]}, None, None) for fragment in fragments),
        ({}, None, "tool_calls"),
    ]
    chunks = [
        {
            **common,
            "object": "chat.completion.chunk",
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "finish_reason": finish,
                    "logprobs": {"content": content} if content else None,
                }
            ],
        }
        for delta, content, finish in deltas
    ]
    text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return sdk_http.Response(200, text=text, headers={"content-type": "text/event-stream"})


@pytest.fixture
def upstream(monkeypatch) -> list[dict]:
    """The requests an OpenAI-compatible endpoint answering `HOSTED` got."""
    received: list[dict] = []

    def handle(request):
        received.append(json.loads(request.content))
        return upstream_answer(received[-1])

    transport = sdk_http.MockTransport(handle)
    client = openai.OpenAI(
        base_url=UPSTREAM,
        api_key="x",
        max_retries=0,
        http_client=sdk_http.Client(transport=transport),
    )
    provider = OpenAICompatibleProvider(base_url=UPSTREAM, client=client)
    monkeypatch.setattr(registry, "get_provider", lambda name, **endpoint: provider)
    with Store() as store:
        store.put_model(HOSTED, provider="openai-compatible", kind="fine-tuned")
    return received


def test_an_openai_compatible_endpoint_gets_every_field_and_its_answer_comes_back(client, upstream):
    api = sdk(client).chat.completions
    fields = dict(
        logprobs=True, top_logprobs=1, logit_bias={"7": -100}, tools=TOOLS, tool_choice="required"
    )
    answer = api.create(model=HOSTED, messages=MESSAGES, **fields)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    api.create(model=HOSTED, messages=MESSAGES, response_format=schema)

    assert {name: upstream[0].get(name) for name in fields} == fields
    assert upstream[1]["response_format"] == schema and "tools" not in upstream[1]
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_1", "get_weather", "{}")
    ]
    assert [(t.token, t.logprob) for t in choice.logprobs.content] == [
        ("Let", -0.5),
        (" me", -0.25),
    ]


def test_a_participants_name_reaches_a_hosted_model_and_text_parts_arrive_joined(client, upstream):
    parts = [{"type": "text", "text": "Who wrote "}, {"type": "text", "text": "Hamlet?"}]
    messages = [{"role": "user", "name": "ada", "content": parts}]
    sdk(client).chat.completions.create(model=HOSTED, messages=messages)
    assert upstream[0]["messages"] == [
        {"role": "user", "content": "Who wrote Hamlet?", "name": "ada"}
    ]


def test_a_streamed_hosted_answer_carries_logprobs_and_its_tool_calls(client, upstream):
    chunks = list(
        sdk(client).chat.completions.create(
            model=HOSTED, messages=MESSAGES, stream=True, logprobs=True, tools=TOOLS
        )
    )
    choices = [c.choices[0] for c in chunks if c.choices]
    assert upstream[0]["stream"] is True and upstream[0]["tools"] == TOOLS
    streamed = [t for c in choices if c.logprobs for t in c.logprobs.content]
    assert [(t.token, t.logprob) for t in streamed] == [("Let", -0.5), (" me", -0.25)]
    assert "".join(c.delta.content or "" for c in choices) == "Let me"
    calls = [call for c in choices for call in c.delta.tool_calls or ()]
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_1", "get_weather", "{}")
    ]
    assert choices[-1].finish_reason == "tool_calls"


def test_anthropic_models_refuse_what_claude_cannot_answer_by_name(client, monkeypatch):
    provider = AnthropicProvider(client=anthropic.Anthropic(api_key="x", max_retries=0))
    monkeypatch.setattr(registry, "get_provider", lambda name, **endpoint: provider)
    api = sdk(client).chat.completions
    for fields in (
        {"logprobs": True},
        {"logit_bias": {"5": 10}},
        {"response_format": {"type": "json_object"}},
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            api.create(model="anthropic/claude-x", messages=MESSAGES, **fields)
        assert caught.value.body["code"] == "unsupported_parameter"
        assert caught.value.body["param"] == next(iter(fields))


def test_the_readme_says_what_becomes_of_every_field():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("Chat completion request fields") :]
    names = {*IGNORED, *NEUTRAL, *REFUSED, *ChatCompletionRequest.model_fields}
    assert not [name for name in names if f"`{name}`" not in table]
    nested = table[table.index("| nested field |") :]
    nested_names = {
        *(name for extra in (MESSAGE, TEXT_PART, STREAM_OPTIONS) for name in extra_names(extra)),
        *UNREADABLE_PARTS,
        *Message.model_fields,
        *ContentPart.model_fields,
        *StreamOptions.model_fields,
    }
    # each as a field of its own or at the end of a path (`stream_options.include_usage`)
    assert not [name for name in nested_names if not re.search(rf"[`.]{name}`", nested)]


def extra_names(extra) -> set[str]:
    return {*extra.ignored, *extra.neutral, *extra.refused}
