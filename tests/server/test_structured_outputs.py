"""Structured outputs and tools through the unmodified `openai` SDK against `tunelab serve`,
with a random tiny model: whatever it would say, the grammar makes the answer valid."""

from __future__ import annotations

import json

import openai
import pytest
from fastapi.testclient import TestClient

from tiny import save_tiny_model
from tunelab.server.app import ServerConfig, create_app

MESSAGES = [{"role": "user", "content": "Who wrote Hamlet?"}]
BOOK = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 10},
        "year": {"type": "integer", "minimum": 1500, "maximum": 2030},
        "genre": {"enum": ["play", "novel"]},
        "authors": {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 8}},
                "required": ["name"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["title", "year", "genre", "authors"],
    "additionalProperties": False,
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"isbn": {"type": "string", "pattern": "^[0-9]{4}$"}},
            "required": ["isbn"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")
    config = json.loads((directory / "config.json").read_text())
    config["max_position_embeddings"] = 1024  # room for the tools' description in tiny tokens
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


@pytest.fixture
def sdk():
    config = ServerConfig(allowed_hosts=("testserver",), start_worker=False, allow_any_model=True)
    with TestClient(create_app(config)) as running:
        yield openai.OpenAI(
            base_url="http://testserver/v1", api_key="unused", http_client=running, max_retries=0
        )


def check_book(text: str) -> None:
    book = json.loads(text)
    assert set(book) == {"title", "year", "genre", "authors"}
    assert 1500 <= book["year"] <= 2030 and book["genre"] in ("play", "novel")
    assert all(set(author) == {"name"} for author in book["authors"])


def test_json_schema_answers_validate_whole_and_streamed(sdk, model_dir):
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "book", "schema": BOOK, "strict": True},
    }
    fields = dict(
        model=model_dir, messages=MESSAGES, max_tokens=200, response_format=response_format
    )
    whole = sdk.chat.completions.create(**fields, n=3, temperature=1.0)
    for choice in whole.choices:
        assert choice.finish_reason == "stop"
        check_book(choice.message.content)

    chunks = list(sdk.chat.completions.create(**fields, stream=True))
    check_book("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))


def test_required_tool_choice_always_calls_a_declared_tool(sdk, model_dir):
    fields = dict(
        model=model_dir,
        messages=MESSAGES,
        max_tokens=200,
        tools=[LOOKUP],
        tool_choice="required",
        parallel_tool_calls=False,
    )
    whole = sdk.chat.completions.create(**fields, n=2, temperature=1.0)
    for choice in whole.choices:
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.function.name == "lookup" and call.id.startswith("call_")
        assert len(json.loads(call.function.arguments)["isbn"]) == 4

    chunks = list(sdk.chat.completions.create(**fields, stream=True))
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
    assert [call.function.name for call in calls] == ["lookup"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_earlier_calls_and_their_results_render_in_the_conversation(sdk, model_dir):
    conversation = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"isbn": "1234"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Hamlet, 1603"},
    ]
    answer = sdk.chat.completions.create(
        model=model_dir, messages=conversation, tools=[LOOKUP], tool_choice="none", max_tokens=3
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.usage.completion_tokens == 3
