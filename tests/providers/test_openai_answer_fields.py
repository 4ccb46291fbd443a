"""The answer fields (logprobs, logit_bias, structured outputs, tools) through the openai
and openai-compatible providers, against hand-built exchanges in OpenAI's documented shapes:
sent as the caller wrote them, and the answer's log-probabilities and tool calls read back,
whole and streamed (tool calls in fragments)."""

from __future__ import annotations

import json

import httpx
import pytest

from tunelab.providers.base import ChatOptions
from tunelab.providers.hosted.compatible import OpenAICompatibleProvider
from tunelab.providers.hosted.openai import OpenAIProvider
from tunelab.types import TextDelta, TokenLogprob, ToolCall, TopLogprob

OPENAI = "https://api.openai.com/v1"
LOCAL = "http://127.0.0.1:8765/v1"
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "strict": True,
        "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
    },
}


@pytest.fixture(params=["openai", "compatible"])
def endpoint(request, monkeypatch, tmp_path):
    """The provider and its base URL: OpenAI itself, and an OpenAI-compatible server."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    if request.param == "openai":
        return OpenAIProvider(), OPENAI
    return OpenAICompatibleProvider(base_url=LOCAL), LOCAL


def token(text: str, logprob: float, tops: tuple = ()) -> dict:
    return {
        "token": text,
        "bytes": list(text.encode()),
        "logprob": logprob,
        "top_logprobs": [{"token": t, "bytes": list(t.encode()), "logprob": lp} for t, lp in tops],
    }


def completion(message: dict, finish: str, logprobs: list | None = None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1721764800,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "logprobs": None if logprobs is None else {"content": logprobs, "refusal": None},
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22},
    }


def chunk(delta: dict, finish: str | None = None, logprobs: list | None = None) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs, "refusal": None}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1721764800,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [choice],
    }


def sse(*chunks: dict) -> httpx.Response:
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def test_every_answer_field_is_sent_as_the_caller_wrote_it(api, endpoint):
    provider, url = endpoint
    route = api.post(f"{url}/chat/completions").respond(
        200, json=completion({"content": '{"name": "Paris"}'}, "stop")
    )
    options = ChatOptions(
        max_tokens=8,
        logprobs=True,
        top_logprobs=2,
        logit_bias=((1734, -100.0),),
        tools=tuple(TOOLS),
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    provider.chat("gpt-4o-mini", MESSAGES, **options.settings())
    provider.chat("gpt-4o-mini", MESSAGES, **ChatOptions(response_format=SCHEMA_FORMAT).settings())

    with_tools, with_schema = (json.loads(call.request.content) for call in route.calls)
    assert (with_tools["logprobs"], with_tools["top_logprobs"]) == (True, 2)
    assert with_tools["logit_bias"] == {"1734": -100.0}
    assert with_tools["tools"] == TOOLS
    assert with_tools["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert with_tools["parallel_tool_calls"] is False
    assert with_schema["response_format"] == SCHEMA_FORMAT
    assert "tools" not in with_schema and "logprobs" not in with_schema


def test_a_whole_answer_carries_its_logprobs_and_tool_calls(api, endpoint):
    provider, url = endpoint
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    tokens = [token("Let", -0.25, (("Let", -0.25), ("I", -1.5))), token(" me", -0.5)]
    api.post(f"{url}/chat/completions").respond(
        200, json=completion({"content": "Let me", "tool_calls": [call]}, "tool_calls", tokens)
    )
    answer = provider.chat(
        "gpt-4o-mini", MESSAGES, logprobs=True, top_logprobs=2, tools=TOOLS, tool_choice="auto"
    )

    assert answer.finish_reason == "tool_calls"
    assert answer.tool_calls == (ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)
    assert answer.logprobs == (
        TokenLogprob(
            "Let",
            tuple(b"Let"),
            -0.25,
            (TopLogprob("Let", tuple(b"Let"), -0.25), TopLogprob("I", (73,), -1.5)),
        ),
        TokenLogprob(" me", tuple(b" me"), -0.5),
    )


def test_an_answer_without_them_has_none(api, endpoint):
    provider, url = endpoint
    api.post(f"{url}/chat/completions").respond(200, json=completion({"content": "hi"}, "stop"))
    answer = provider.chat("gpt-4o-mini", MESSAGES)
    assert (answer.text, answer.logprobs, answer.tool_calls) == ("hi", None, ())


def test_a_stream_carries_each_chunks_logprobs_and_puts_tool_calls_together(api, endpoint):
    provider, url = endpoint
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather"}}
    second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_time"}}
    api.post(f"{url}/chat/completions").mock(
        return_value=sse(
            chunk({"role": "assistant", "content": "Ok"}, logprobs=[token("Ok", -0.1)]),
            chunk({"content": "."}, logprobs=[token(".", -0.2)]),
            chunk({"tool_calls": [{**first, "function": {**first["function"], "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
            chunk({"tool_calls": [second]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
            chunk({}, finish="tool_calls"),
        )
    )
    stream = provider.stream_chat(
        "gpt-4o-mini", MESSAGES, logprobs=True, top_logprobs=0, tools=TOOLS
    )
    deltas = list(stream)

    assert deltas == ["Ok", "."]
    assert all(isinstance(delta, TextDelta) for delta in deltas)
    assert [[t.token for t in delta.logprobs] for delta in deltas] == [["Ok"], ["."]]
    answer = stream.result
    assert (answer.text, answer.finish_reason) == ("Ok.", "tool_calls")
    assert [t.logprob for t in answer.logprobs] == [-0.1, -0.2]
    assert answer.tool_calls == (
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "get_time", "{}"),
    )


def test_a_server_answering_a_stream_whole_keeps_its_tool_calls(api, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    api.post(f"{LOCAL}/chat/completions").respond(
        200, json=completion({"content": None, "tool_calls": [call]}, "tool_calls")
    )
    stream = OpenAICompatibleProvider(base_url=LOCAL).stream_chat("m", MESSAGES, tools=TOOLS)
    assert list(stream) == []
    assert stream.result.tool_calls == (ToolCall("c", "get_weather", "{}"),)
    assert stream.result.finish_reason == "tool_calls"
