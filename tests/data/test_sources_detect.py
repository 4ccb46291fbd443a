"""Detecting the kind of a source, and reading records with their line numbers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tunelab.data.sources import SourceOptions
from tunelab.data.sources.detect import detect_kind
from tunelab.data.sources.records import iter_records
from tunelab.errors import TunelabError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "format"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("queries.json", "queries"),
        ("queries.jsonl", "queries"),
        ("queries.csv", "queries"),
        ("classification.tsv", "classification"),
        ("chat.jsonl", "chat"),
        ("alpaca.json", "alpaca"),
        ("sharegpt.json", "sharegpt"),
        ("completion.jsonl", "completion"),
    ],
)
def test_detects_each_fixture(name, kind):
    detection = detect_kind(FIXTURES / name)
    assert detection.kind == kind
    assert detection.reason


def test_detects_sqlite_by_header_whatever_the_name(tmp_path):
    db = tmp_path / "export.data"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.close()
    assert detect_kind(db).kind == "conversations"


def test_flags_decide_the_kind():
    assert detect_kind(FIXTURES / "classification.csv", SourceOptions(text_column="body")).kind == (
        "classification"
    )
    assert detect_kind(FIXTURES / "chat.jsonl", SourceOptions(question_field="q")).kind == "queries"


def test_unknown_shape_asks_for_kind(tmp_path):
    source = tmp_path / "x.jsonl"
    source.write_text('{"title": "a", "body": "b"}\n')
    with pytest.raises(TunelabError) as caught:
        detect_kind(source)
    assert caught.value.code == "unknown_source_kind"
    assert caught.value.exit_code == 2
    assert "--kind" in caught.value.hint


def test_missing_source(tmp_path):
    with pytest.raises(TunelabError) as caught:
        detect_kind(tmp_path / "nope.json")
    assert caught.value.code == "source_not_found"


def test_records_from_json_array_carry_their_start_lines(tmp_path):
    source = tmp_path / "a.json"
    source.write_text('[\n  {"a": 1},\n\n  {"a": "x\\ny"}, {"a": 3}\n]\n')
    assert list(iter_records(source)) == [(2, {"a": 1}), (4, {"a": "x\ny"}), (4, {"a": 3})]
    (tmp_path / "empty.json").write_text("[ ]")
    assert list(iter_records(tmp_path / "empty.json")) == []


def test_json_syntax_error_points_at_its_line(tmp_path):
    source = tmp_path / "a.json"
    source.write_text('[\n {"a": 1},\n {"a": }\n]')
    with pytest.raises(TunelabError) as caught:
        list(iter_records(source))
    assert (caught.value.code, caught.value.line) == ("invalid_json", 3)


def test_csv_with_byte_order_mark_and_tsv_without_extension(tmp_path):
    bom = tmp_path / "b.csv"
    bom.write_bytes("\ufefftext,label\nhi,x\n".encode())
    assert list(iter_records(bom)) == [(2, {"text": "hi", "label": "x"})]
    tsv = tmp_path / "data.txt"
    tsv.write_text("text\tlabel\nhi\tx\n")
    assert list(iter_records(tsv)) == [(2, {"text": "hi", "label": "x"})]


def test_non_utf8_is_an_error(tmp_path):
    source = tmp_path / "latin.csv"
    source.write_bytes("text,label\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(TunelabError) as caught:
        list(iter_records(source))
    assert caught.value.code == "not_utf8"
