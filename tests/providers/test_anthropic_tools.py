"""OpenAI's tools through the anthropic provider, over hand-built Messages API exchanges:
tools, tool_choice and earlier calls and results mapped onto Anthropic's tool use, its
tool_use blocks (whole and streamed in pieces) read back as tool calls, and the fields
Anthropic cannot answer refused by name before any request."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest

from tunelab.errors import TunelabError
from tunelab.providers.registry import get_provider
from tunelab.types import ToolCall

MESSAGES = "https://api.anthropic.com/v1/messages"
MODEL = "claude-sonnet-4-20250514"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA},
    },
    {"type": "function", "function": {"name": "get_time"}},
]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
def claude(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    return get_provider("anthropic")


def message(*content: dict, stop_reason: str = "tool_use") -> dict:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": list(content),
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 12},
    }


def sent(route) -> dict:
    return orjson.loads(route.calls.last.request.content)


def test_tools_and_a_named_choice_become_anthropics_and_tool_use_comes_back(api, claude):
    route = api.post(MESSAGES).mock(
        return_value=httpx.Response(
            200,
            json=message(
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ),
        )
    )
    named = {"type": "function", "function": {"name": "get_weather"}}
    answer = claude.chat(MODEL, ASK, tools=TOOLS, tool_choice=named, parallel_tool_calls=False)

    request = sent(route)
    assert request["tools"] == [
        {"name": "get_weather", "description": "Weather", "input_schema": SCHEMA},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert request["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    assert (answer.text, answer.finish_reason) == ("Checking.", "tool_calls")
    assert answer.tool_calls == (ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),)
    assert json.loads(answer.tool_calls[0].arguments) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
    ],
)
def test_each_tool_choice_has_its_anthropic_word(api, claude, choice, expected):
    route = api.post(MESSAGES).mock(
        return_value=httpx.Response(
            200, json=message({"type": "text", "text": "hi"}, stop_reason="end_turn")
        )
    )
    answer = claude.chat(MODEL, ASK, tools=TOOLS, tool_choice=choice)
    assert sent(route).get("tool_choice") == expected
    assert (answer.finish_reason, answer.tool_calls) == ("stop", ())


def test_earlier_calls_and_their_results_become_tool_use_and_tool_result_blocks(api, claude):
    route = api.post(MESSAGES).mock(
        return_value=httpx.Response(
            200, json=message({"type": "text", "text": "Sunny, 14:00."}, stop_reason="end_turn")
        )
    )
    calls = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    conversation = [
        {"role": "system", "content": "Be brief."},
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "14:00"},
    ]
    claude.chat(MODEL, conversation, tools=TOOLS)

    request = sent(route)
    assert request["system"] == "Be brief."
    assert request["messages"] == [
        *ASK,
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "c2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "14:00"},
            ],
        },
    ]


def stream_of(*events: dict) -> httpx.Response:
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def test_a_streamed_tool_use_is_put_together_from_its_pieces(api, claude):
    start = {**message(), "content": [], "stop_reason": None}
    use = {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}
    pieces = ['{"ci', 'ty": "Pa', 'ris"}']
    api.post(MESSAGES).mock(
        return_value=stream_of(
            {"type": "message_start", "message": start},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Let me check."},
            },
            {"type": "content_block_stop", "index": 0},
            {"type": "content_block_start", "index": 1, "content_block": use},
            *(
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": p},
                }
                for p in pieces
            ),
            {"type": "content_block_stop", "index": 1},
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {**use, "id": "toolu_10", "name": "get_time"},
            },
            {"type": "content_block_stop", "index": 2},
            {
                "type": "message_delta",
                "usage": {"output_tokens": 20},
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            },
            {"type": "message_stop"},
        )
    )
    stream = claude.stream_chat(MODEL, ASK, tools=TOOLS)
    assert list(stream) == ["Let me check."]
    assert stream.result.finish_reason == "tool_calls"
    assert stream.result.tool_calls == (
        ToolCall("toolu_9", "get_weather", '{"city": "Paris"}'),
        ToolCall("toolu_10", "get_time", "{}"),
    )


@pytest.mark.parametrize(
    "setting",
    [
        {"logprobs": True},
        {"top_logprobs": 2},
        {"logit_bias": {"5": 10.0}},
        {"response_format": {"type": "json_object"}},
    ],
)
def test_fields_anthropic_cannot_answer_are_refused_by_name_before_any_request(
    api, claude, setting
):
    route = api.post(MESSAGES)
    for ask in (claude.chat, claude.stream_chat):
        with pytest.raises(TunelabError) as refused:
            ask(MODEL, ASK, **setting)
        assert refused.value.code == "unsupported_parameter"
        assert f"`{next(iter(setting))}`" in refused.value.message
    assert not route.called


def test_a_strict_tool_is_refused_by_name(api, claude):
    route = api.post(MESSAGES)
    strict = [{"type": "function", "function": {"name": "f", "strict": True, "parameters": SCHEMA}}]
    with pytest.raises(TunelabError) as refused:
        claude.chat(MODEL, ASK, tools=strict)
    assert refused.value.code == "unsupported_parameter" and "`strict`" in refused.value.message
    assert not route.called
