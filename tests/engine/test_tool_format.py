"""Tool calls: the default format in the prompt, grammar-forced calls that always parse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiny import build_tokenizer
from tunelab.data.tool_text import write_call
from tunelab.engine.generate import encode_chat, generate
from tunelab.engine.tool_format import ToolFormat, grammar, parse

TEMPLATES = Path(__file__).parents[1] / "fixtures" / "chat_templates"
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "unit": {"enum": ["C", "F"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}
TIME = {"type": "function", "function": {"name": "time", "parameters": NO_ARGUMENTS}}
CHAT = [{"role": "user", "content": "Weather in Paris?"}]


def test_templates_say_their_format():
    assert ToolFormat.of(build_tokenizer()) == ToolFormat("hermes", native=False)
    qwen = build_tokenizer(chat_template=(TEMPLATES / "qwen3.jinja").read_text())
    assert ToolFormat.of(qwen) == ToolFormat("hermes", native=True)
    llama = build_tokenizer(chat_template=(TEMPLATES / "llama3.jinja").read_text())
    assert ToolFormat.of(llama).style == "llama3"


def test_default_format_describes_tools_and_earlier_calls(tokenizer):
    earlier = [
        *CHAT,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris", "unit": "C"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 degrees"},
    ]
    text = tokenizer.decode(encode_chat(tokenizer, earlier, [WEATHER]))

    assert '"name": "weather"' in text and "<tool_call>" in text
    assert write_call("weather", '{"city": "Paris", "unit": "C"}') in text
    assert "<tool_response>\n18 degrees\n</tool_response>" in text


@pytest.mark.parametrize("parallel", [False, True])
def test_forced_calls_always_name_a_tool_with_valid_arguments(make_model, tokenizer, parallel):
    form = ToolFormat.of(tokenizer)
    constraint = grammar(form, [WEATHER, TIME], parallel=parallel)
    model = make_model().eval()
    model.config.max_position_embeddings = 1024  # the tools' description is long in tiny tokens
    answers = generate(
        model,
        tokenizer,
        [CHAT] * 4,
        max_new_tokens=300,
        temperature=1.0,
        seed=3,
        constraint=constraint,
        tools=[WEATHER, TIME],
    )
    for answer in answers:
        assert answer.finish_reason == "stop"
        _, calls = parse(form, answer.text)
        assert calls and (parallel or len(calls) == 1)
        for call in calls:
            arguments = json.loads(call.arguments)
            assert call.name in ("weather", "time")
            if call.name == "weather":
                assert set(arguments) == {"city", "unit"} and arguments["unit"] in "CF"


def test_parse_keeps_the_text_before_the_calls():
    form = ToolFormat("hermes", native=False)
    text = (
        "Let me look.\n" + write_call("time", {}) + "\n" + write_call("weather", {"city": "Oslo"})
    )
    head, calls = parse(form, text)

    assert head == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("time", {}),
        ("weather", {"city": "Oslo"}),
    ]
    assert parse(form, "No call here.") == ("No call here.", [])
