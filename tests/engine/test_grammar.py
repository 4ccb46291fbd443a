"""Constrained decoding: a random tiny model's answers always parse and follow the grammar."""

from __future__ import annotations

import json

import pytest

from tunelab.engine.generate import generate, stream_chat
from tunelab.engine.grammar import Constraint
from tunelab.engine.grammar_budget import RESERVE, closing_path, still_open
from tunelab.errors import TunelabError

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "pet": {"enum": ["cat", "dog"]},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        "home": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "pet", "tags", "home"],
    "additionalProperties": False,
}
CHATS = [[{"role": "user", "content": q}] for q in ("Who are you?", "What is two plus two?")]


@pytest.fixture
def model(make_model):
    return make_model().eval()


def check_person(text: str) -> None:
    person = json.loads(text)
    assert set(person) == {"name", "age", "pet", "tags", "home"}
    assert isinstance(person["name"], str) and len(person["name"]) <= 12
    assert isinstance(person["age"], int) and 0 <= person["age"] <= 120
    assert person["pet"] in ("cat", "dog")
    assert all(isinstance(tag, bool) for tag in person["tags"]) and len(person["tags"]) <= 3
    assert list(person["home"]) == ["city"]


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_schema_constrained_answers_always_validate(model, tokenizer, temperature):
    answers = generate(
        model,
        tokenizer,
        CHATS * 3,
        max_new_tokens=120,
        temperature=temperature,
        seed=1,
        constraint=Constraint.json_schema(PERSON),
    )
    for answer in answers:
        assert answer.finish_reason == "stop"
        check_person(answer.text)


def test_each_row_follows_its_own_grammar(model, tokenizer):
    free = generate(model, tokenizer, CHATS * 2, max_new_tokens=120)
    flag = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    flag["additionalProperties"] = False
    rows = [Constraint.json_schema(PERSON), None, Constraint.json_schema(flag), None]
    answers = generate(model, tokenizer, CHATS * 2, max_new_tokens=120, constraint=rows)

    check_person(answers[0].text)
    assert json.loads(answers[2].text) in ({"ok": True}, {"ok": False})
    # Rows without a grammar answer as they would in a batch without any.
    assert [answers[1], answers[3]] == [free[1], free[3]]


def test_any_json_object_starts_as_one(model, tokenizer):
    [answer] = generate(
        model, tokenizer, CHATS[:1], max_new_tokens=6, constraint=Constraint("json_object")
    )
    assert answer.text.startswith("{")


def test_lark_grammar_in_a_stream(model, tokenizer):
    grammar = Constraint.lark('start: "<call>" %json {"enum": ["a", "b"]} "</call>"')
    stream = stream_chat(model, tokenizer, CHATS[0], max_new_tokens=30, constraint=grammar)
    text = "".join(stream)

    assert text in ('<call>"a"</call>', '<call>"b"</call>')
    assert stream.completion is not None and stream.completion.text == text


def test_a_grammar_that_does_not_compile_is_refused(model, tokenizer):
    with pytest.raises(TunelabError) as caught:
        generate(model, tokenizer, CHATS, constraint=Constraint.lark("start: undefined_rule"))
    assert caught.value.code == "invalid_grammar"


@pytest.mark.parametrize("max_new_tokens", [40, 56])
def test_a_small_budget_still_ends_in_a_valid_object(model, tokenizer, max_new_tokens):
    home = PERSON["properties"]["home"]
    schema = {**PERSON, "properties": {"name": {"type": "string"}, "home": home}}
    schema["required"] = ["name", "home"]
    answers = generate(
        model,
        tokenizer,
        CHATS * 2,
        max_new_tokens=max_new_tokens,
        temperature=1.5,
        seed=3,
        constraint=Constraint.json_schema(schema),
    )
    for answer in answers:
        assert answer.finish_reason == "stop", answer.text
        assert answer.usage.completion_tokens <= max_new_tokens
        assert list(json.loads(answer.text)) == ["home", "name"]


def test_a_slash_opens_a_regex_only_where_a_value_starts():
    assert still_open("db.c.find({name: /ab") == "/})"
    assert still_open('<tool_call>\n{"q": [1') == "]}"
    assert still_open('{"a": 1}\n</tool_call>\n<tool_call>\n{"q": "a/b') == '"}'


def test_near_its_budget_a_second_call_ends_with_its_required_arguments(tokenizer):
    from tunelab.data.tool_text import ToolFormat
    from tunelab.engine.grammar import RowGrammars
    from tunelab.engine.tool_format import grammar

    search = {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "filters": {
                        "type": "object",
                        "properties": {"year_from": {"type": "integer"}},
                        "required": ["year_from"],
                        "additionalProperties": False,
                    },
                },
                "required": ["query", "filters"],
                "additionalProperties": False,
            },
        },
    }
    constraint = grammar(ToolFormat("hermes", False), [search])
    rows = RowGrammars(tokenizer, [constraint], len(tokenizer), [200])
    matcher = rows.matchers[0]
    first = (
        '<tool_call>\n{"name": "search", "arguments": {"query": "a", "filters": {"year_from": 1}}}'
    )
    text = first + '\n</tool_call>\n<tool_call>\n{"name": "search", "arguments": {"query": "whales'
    assert all(matcher.consume_token(t) for t in tokenizer.encode(text, add_special_tokens=False))

    plan = closing_path(matcher, rows.view, rows.letters, text, RESERVE)

    assert plan is not None  # ends within the budget a row starts planning at
    calls = (text + rows.view.decode_str(plan)).split("<tool_call>\n")[1:]
    arguments = [json.loads(call.split("\n</tool_call>")[0])["arguments"] for call in calls]
    assert arguments[1]["query"] == "whales" and set(arguments[1]["filters"]) == {"year_from"}
