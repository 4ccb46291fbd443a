"""Chat JSONL, Alpaca, ShareGPT and prompt/completion sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.data.sources.chat_formats import (
    read_alpaca,
    read_chat,
    read_completion,
    read_sharegpt,
)
from tunelab.errors import TunelabError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "format"


def test_chat_keeps_messages_optional_keys_and_tools_drops_the_rest():
    first, second = read_chat(FIXTURES / "chat.jsonl").examples
    assert first.messages[2] == {"role": "assistant", "content": "Hello.", "weight": 1}
    assert first.extra == {}  # the record's "id" is not part of OpenAI's format
    assert second.messages[0] == {"role": "user", "content": "Weather?", "name": "ann"}
    assert second.messages[1]["content"] is None
    assert second.messages[1]["tool_calls"][0]["id"] == "c1"
    assert second.messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert second.extra["tools"][0]["function"]["name"] == "weather"
    assert b'"tools"' in second.to_json_line()


def test_system_override_replaces_or_removes_system_messages():
    replaced = next(read_chat(FIXTURES / "chat.jsonl", system="Be kind.").examples)
    assert [m["content"] for m in replaced.messages if m["role"] == "system"] == ["Be kind."]
    removed = next(read_chat(FIXTURES / "chat.jsonl", system="").examples)
    assert all(m["role"] != "system" for m in removed.messages)


def test_alpaca_joins_instruction_and_input():
    with_input, without_input = read_alpaca(FIXTURES / "alpaca.json").examples
    assert with_input.messages == (
        {"role": "user", "content": "Translate to French.\n\nGood morning"},
        {"role": "assistant", "content": "Bonjour"},
    )
    assert without_input.messages[0]["content"] == "Name a primary colour."


def test_sharegpt_maps_roles_and_system():
    pirate, maths = read_sharegpt(FIXTURES / "sharegpt.json").examples
    assert [m["role"] for m in pirate.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert pirate.messages[0]["content"] == "You are a pirate."
    assert maths.messages == (
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    )


def test_completion_pairs_with_optional_system():
    first = next(read_completion(FIXTURES / "completion.jsonl", system="Answer briefly.").examples)
    assert first.messages == (
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
    )


GOOD_LINE = {
    read_chat: '{"messages": [{"role": "user", "content": "a"}, '
    '{"role": "assistant", "content": "b"}]}',
    read_alpaca: '{"instruction": "i", "output": "o"}',
    read_sharegpt: '{"conversations": [{"from": "human", "value": "a"}]}',
    read_completion: '{"prompt": "p", "completion": "c"}',
}


@pytest.mark.parametrize(
    ("reader", "line", "problem"),
    [
        (read_chat, '{"messages": [{"role": "robot", "content": "x"}]}', "role 'robot'"),
        (read_chat, '{"messages": []}', "non-empty list"),
        (read_chat, '{"messages": [{"role": "user"}]}', "no text `content`"),
        (read_alpaca, '{"instruction": "x"}', "`output`"),
        (read_sharegpt, '{"conversations": [{"from": "gpt", "value": 3}]}', "no text"),
        (read_completion, '{"prompt": "x", "completion": ""}', "`completion`"),
        (read_chat, "{not json", "invalid JSON"),
        (read_chat, "not json", "the line is not JSON (it begins 'not json')"),
        (read_chat, "[1]", "expected a JSON object"),
    ],
)
def test_bad_record_names_file_and_line(tmp_path, reader, line, problem):
    source = tmp_path / "s.jsonl"
    source.write_text(f"{GOOD_LINE[reader]}\n\n{line}\n")
    with pytest.raises(TunelabError) as caught:
        list(reader(source).examples)
    assert (caught.value.path, caught.value.line) == (str(source), 3)
    assert problem in caught.value.message
