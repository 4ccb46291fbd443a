"""`tunelab eval tools` against hosted models, over hand-built HTTP exchanges in each
service's documented shapes: the example's tools go out in the service's request, the calls
that come back are scored, and a provider that cannot call tools is refused with a
`TunelabError` naming the field (never a TypeError, never the tools silently dropped)."""

from __future__ import annotations

import json

import httpx
import orjson
import pytest

from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.providers.provider import CHAT, Provider
from tunelab.providers.resolve import ChatModel
from tunelab.types import Answer

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CITIES = ["Paris", "Rome"]


def example(city: str) -> dict:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "weather", "arguments": json.dumps({"city": city})},
    }
    return {
        "messages": [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ],
        "tools": [WEATHER],
    }


def openai_completion(city: str) -> dict:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": json.dumps({"city": city})},
    }
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1748779200,
        "model": "served-model",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
    }


def anthropic_message(city: str) -> dict:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-20250514",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": city}}
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 40, "output_tokens": 12},
    }


SERVICES = {
    "openai/gpt-4o-mini": (
        "https://api.openai.com/v1/chat/completions",
        "OPENAI_API_KEY",
        openai_completion,
    ),
    "together/Qwen/Qwen3-8B": (
        "https://api-inference.together.ai/v1/chat/completions",
        "TOGETHER_API_KEY",
        openai_completion,
    ),
    "anthropic/claude-sonnet-4-20250514": (
        "https://api.anthropic.com/v1/messages",
        "ANTHROPIC_API_KEY",
        anthropic_message,
    ),
}


def answering_with_the_asked_city(build):
    """A service that calls `weather` with the city its last question names."""

    def respond(request: httpx.Request) -> httpx.Response:
        asked = orjson.loads(request.content)["messages"][-1]["content"]
        if isinstance(asked, list):  # content blocks
            asked = asked[-1]["text"]
        return httpx.Response(200, json=build(asked.split()[2].rstrip("?")))

    return respond


@pytest.mark.parametrize("model", list(SERVICES))
def test_eval_tools_scores_a_hosted_models_calls(model, api, monkeypatch, tmp_path, capsys):
    url, key_variable, build = SERVICES[model]
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv(key_variable, "sk-test-0123456789")
    route = api.post(url).mock(side_effect=answering_with_the_asked_city(build))
    path = tmp_path / "tools.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(example(city)) for city in CITIES))

    argv = ["eval", "tools", "--data", str(path), "-m", model, "--json"]
    code = main([*argv, "--output-dir", str(tmp_path / "run")])

    out, err = capsys.readouterr()
    assert code == 0, err
    figures = orjson.loads(out)["models"][model]
    assert (figures["function_match"], figures["arguments_valid"], figures["exact_match"]) == (
        1.0,
        1.0,
        1.0,
    )
    assert route.call_count == len(CITIES)
    sent = orjson.loads(route.calls.last.request.content)["tools"]
    assert [tool.get("name") or tool["function"]["name"] for tool in sent] == ["weather"]


class NoToolsProvider(Provider):
    """A plugin's provider that declares no answer fields and whose `chat` takes only the
    sampling settings (tools passed to it would be a TypeError)."""

    name = "no-tools"
    capabilities = frozenset({CHAT})

    def chat(self, model, messages, *, max_tokens=None, temperature=None, **sampling):
        return Answer("It is sunny.", "stop")


def test_tools_for_a_provider_without_them_are_refused_by_name():
    model = ChatModel("plain-1", "no-tools", "plain-1", _client=NoToolsProvider())
    asked = [example("Paris")["messages"][:1]]
    with pytest.raises(TunelabError) as refused:
        model.answer_batch(asked, max_tokens=16, tools=[WEATHER])
    assert refused.value.code == "unsupported_parameter"
    assert "`tools`" in refused.value.message
    assert model.answer_batch(asked, max_tokens=16)[0].text == "It is sunny."


def test_eval_tools_reports_a_refusal_in_one_line(monkeypatch, tmp_path, capsys):
    plain = ChatModel("plain-1", "no-tools", "plain-1", _client=NoToolsProvider())
    monkeypatch.setattr("tunelab.evals.candidates.resolve_chat_model", lambda name, **_: plain)
    monkeypatch.setattr("tunelab.evals.candidates.check_models", lambda names: None)
    path = tmp_path / "tools.jsonl"
    path.write_bytes(orjson.dumps(example("Paris")))

    code = main(["eval", "tools", "--data", str(path), "-m", "plain-1", "--json"])

    err = capsys.readouterr().err
    assert code != 0
    assert "unsupported_parameter" in err and "`tools`" in err
    assert "Traceback" not in err
