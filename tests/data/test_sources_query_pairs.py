"""Question → query pairs: field detection, answers, schema context, bad records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.data.sources import SourceOptions
from tunelab.data.sources.query_pairs import (
    DEFAULT_SQL_SYSTEM,
    DEFAULT_SYSTEM,
    detect_query_fields,
    read_query_pairs,
    render_collections,
)
from tunelab.errors import TunelabError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "format"


def messages(reading) -> list[tuple[dict, ...]]:
    return [example.messages for example in reading.examples]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["question_id", "db_id", "question", "query"], ("question", "query")),
        (["nl", "mql"], ("nl", "mql")),
        (["input", "output"], ("input", "output")),
        (["prompt", "completion"], ("prompt", "completion")),
        (["Question", "Answer"], ("Question", "Answer")),
        (["text", "sql"], ("text", "sql")),
        (["title", "body"], None),
    ],
)
def test_detects_common_field_names(keys, expected):
    assert detect_query_fields(keys) == expected


def test_json_array_with_detected_fields_and_default_system():
    reading = read_query_pairs(FIXTURES / "queries.json")
    assert reading.fields == {"question": "question", "answer": "query"}
    assert reading.detected == ["question", "answer"]
    first = next(reading.examples)
    assert first.messages == (
        {"role": "system", "content": DEFAULT_SYSTEM},
        {"role": "user", "content": "How many farms are there?"},
        {"role": "assistant", "content": "db.farm.countDocuments({})"},
    )
    # Source lines point at where each record starts in the JSON array.
    assert first.source_line == 2


def test_object_answer_is_compact_json_and_string_answer_kept():
    answers = [m[-1]["content"] for m in messages(read_query_pairs(FIXTURES / "queries.json"))]
    assert answers[1] == '{"find":"singer","filter":{"Age":{"$gt":30}},"projection":{"Name":1}}'
    assert answers[2].startswith("db.farm.aggregate([ { $group")


def test_jsonl_and_csv_sources():
    jsonl = read_query_pairs(FIXTURES / "queries.jsonl", SourceOptions(system=""))
    rows = messages(jsonl)
    assert rows[0][0] == {"role": "user", "content": "Count the users."}
    assert rows[0][1]["content"] == '{"aggregate":"users","pipeline":[{"$count":"n"}]}'
    assert [e for e in rows if len(e) != 2] == []  # system "" → no system message
    csv_reading = read_query_pairs(FIXTURES / "queries.csv")
    assert csv_reading.system == DEFAULT_SQL_SYSTEM
    assert messages(csv_reading)[1][1]["content"] == "List the names, in order."


def test_given_fields_are_not_reported_as_detected():
    reading = read_query_pairs(
        FIXTURES / "queries.json",
        SourceOptions(question_field="question", answer_field="db_id", system="S"),
    )
    assert reading.detected == []
    assert messages(reading)[0][2]["content"] == "farm"
    only_one = read_query_pairs(FIXTURES / "queries.json", SourceOptions(answer_field="query"))
    assert only_one.detected == ["question"]


def test_context_from_collections_file_renders_schema():
    reading = read_query_pairs(
        FIXTURES / "queries.json",
        SourceOptions(context_field="db_id", context_file=FIXTURES / "collections.json"),
    )
    user = messages(reading)[0][1]["content"]
    assert user == (
        "Collections: farm(Farm_ID, Total_Horses); city(City_ID, Status)\n\n"
        "How many farms are there?"
    )


def test_context_from_mapping_file_or_field_value():
    mapped = read_query_pairs(
        FIXTURES / "queries.json",
        SourceOptions(context_field="db_id", context_file=FIXTURES / "context_map.json"),
    )
    assert messages(mapped)[1][1]["content"].startswith("Singers and their concerts.\n\n")
    plain = read_query_pairs(FIXTURES / "queries.json", SourceOptions(context_field="db_id"))
    assert messages(plain)[0][1]["content"] == "db_id: farm\n\nHow many farms are there?"


def test_render_collections_skips_star_column():
    entry = {"db_id": "x", "collection_names": ["a"], "column_names": [[-1, "*"], [0, "f"]]}
    assert render_collections(entry) == "Collections: a(f)"


def test_missing_context_entry_names_the_line(tmp_path):
    source = tmp_path / "q.jsonl"
    source.write_text(
        '{"question": "q1", "query": "a", "db_id": "farm"}\n'
        '{"question": "q2", "query": "b", "db_id": "nowhere"}\n'
    )
    reading = read_query_pairs(
        source, SourceOptions(context_field="db_id", context_file=FIXTURES / "collections.json")
    )
    with pytest.raises(TunelabError) as caught:
        list(reading.examples)
    assert (caught.value.path, caught.value.line) == (str(source), 2)
    assert "nowhere" in caught.value.message


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"question": "q"}, "no field `query`"),
        ({"question": "", "query": "a"}, "non-empty"),
        ({"question": "q", "query": None}, "null"),
    ],
)
def test_bad_record_is_an_error_with_file_and_line(tmp_path, record, problem):
    source = tmp_path / "pairs.json"
    good = {"question": "fine", "query": "db.x.find()"}
    source.write_text(json.dumps([good, good, record], indent=1))
    with pytest.raises(TunelabError) as caught:
        list(read_query_pairs(source).examples)
    assert caught.value.code == "invalid_record"
    assert caught.value.path == str(source)
    assert caught.value.line == 10  # the third element starts on line 10
    assert problem in caught.value.message


def test_undetectable_fields_ask_for_flags(tmp_path):
    source = tmp_path / "odd.jsonl"
    source.write_text('{"title": "a", "body": "b"}\n')
    with pytest.raises(TunelabError) as caught:
        read_query_pairs(source)
    assert caught.value.code == "fields_not_detected"
    assert "--question-field" in caught.value.hint


def test_invalid_context_file(tmp_path):
    bad = tmp_path / "ctx.json"
    bad.write_text("[1, 2]")
    with pytest.raises(TunelabError) as caught:
        read_query_pairs(
            FIXTURES / "queries.json", SourceOptions(context_field="db_id", context_file=bad)
        )
    assert caught.value.code == "invalid_context_file"
