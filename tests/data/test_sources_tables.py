"""Classification tables: columns, labels, the prompt in every example, bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunelab.data.prompts import ClassificationPrompt
from tunelab.data.sources import SourceOptions
from tunelab.data.sources.tables import DEFAULT_SYSTEM, read_classification
from tunelab.errors import TunelabError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "format"


def test_tsv_rows_become_prompted_examples_with_labels():
    reading = read_classification(FIXTURES / "classification.tsv")
    assert reading.labels == ["ABBR", "HUM", "LOC", "NUM"]
    assert reading.fields == {"text": "text", "label": "label"}
    examples = list(reading.examples)
    assert [e.label for e in examples] == ["ABBR", "HUM", "LOC", "LOC", "NUM", "HUM"]
    prompt = ClassificationPrompt()
    first = examples[0]
    assert first.messages == (
        {"role": "system", "content": DEFAULT_SYSTEM},
        {
            "role": "user",
            "content": prompt.user_message("What does NASA stand for ?", reading.labels),
        },
        {"role": "assistant", "content": "<category>ABBR</category>"},
    )
    assert first.source_line == 2
    # CSV quoting is honoured: doubled quotes inside a quoted field.
    assert '\nWhere is " the Nile " ?\n' in examples[3].messages[1]["content"]


def test_named_columns_custom_prompt_and_no_system():
    prompt = ClassificationPrompt(instruction="Route it.", bare_label=True)
    reading = read_classification(
        FIXTURES / "classification.csv",
        SourceOptions(text_column="body", label_column="topic", prompt=prompt, system=""),
    )
    examples = list(reading.examples)
    assert reading.labels == ["account", "billing"]
    assert examples[0].messages[0]["content"].startswith("Route it.")
    assert examples[0].messages[1] == {"role": "assistant", "content": "account"}
    assert "Reset my password, please" in examples[0].messages[0]["content"]


def test_missing_column_lists_the_columns():
    with pytest.raises(TunelabError) as caught:
        read_classification(FIXTURES / "classification.csv")
    assert caught.value.code == "missing_column"
    assert "body, topic" in caught.value.message
    assert caught.value.line == 2


@pytest.mark.parametrize(
    ("row", "problem"),
    [("\tHUM", "`text`"), ("Who ?\t  ", "`label`"), ("Who ?\tHUM\textra", "3 fields")],
)
def test_bad_row_names_file_and_line(tmp_path, row, problem):
    source = tmp_path / "t.tsv"
    source.write_text(f"text\tlabel\nFine ?\tNUM\n{row}\n")
    with pytest.raises(TunelabError) as caught:
        read_classification(source)
    assert (caught.value.path, caught.value.line) == (str(source), 3)
    assert problem in caught.value.message


def test_labels_are_stripped_and_numbers_accepted(tmp_path):
    source = tmp_path / "t.jsonl"
    source.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": " spam "}\n')
    reading = read_classification(source)
    assert reading.labels == ["1", "spam"]
    assert [e.label for e in reading.examples] == ["1", "spam"]
