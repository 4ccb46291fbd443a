"""The classification prompt: what the model sees, and reading its answers back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunelab.data.prompts import (
    ClassificationPrompt,
    label_set_bytes,
    label_set_path,
    read_label_set,
)
from tunelab.errors import TunelabError

LABELS = ["NUM", "ABBR", "HUM"]


def test_user_message_has_instruction_sorted_categories_and_item_in_tags():
    message = ClassificationPrompt().user_message("What does NASA stand for?", LABELS)
    assert message == (
        "Classify the text into one of the categories.\n"
        "Answer with the category only, wrapped in <category></category>.\n\n"
        "<categories>\nABBR\nHUM\nNUM\n</categories>\n\n"
        "<text>\nWhat does NASA stand for?\n</text>"
    )


def test_every_part_is_configurable():
    prompt = ClassificationPrompt(
        instruction="Route the ticket.", category_tag="queues", item_tag="ticket", bare_label=True
    )
    message = prompt.user_message("Refund please", ["billing", "account"])
    assert message.startswith("Route the ticket.\nAnswer with the category only.\n")
    assert "<queues>\naccount\nbilling\n</queues>" in message
    assert "<ticket>\nRefund please\n</ticket>" in message
    assert prompt.answer("billing") == "billing"
    assert ClassificationPrompt(output_tag="label").answer("HUM") == "<label>HUM</label>"


def test_parse_answer_forgives_whitespace_wrapper_and_case():
    prompt = ClassificationPrompt()
    assert prompt.parse_answer("  <category>HUM</category>\n", LABELS) == "HUM"
    assert prompt.parse_answer("<category> HUM </category>", LABELS) == "HUM"
    assert prompt.parse_answer("HUM", LABELS) == "HUM"
    assert prompt.parse_answer("<CATEGORY>hum</CATEGORY>", LABELS) == "HUM"
    assert ClassificationPrompt(bare_label=True).parse_answer("<category>NUM</category>", LABELS)


def test_parse_answer_rejects_anything_else():
    prompt = ClassificationPrompt()
    assert prompt.parse_answer("HUM.", LABELS) is None
    assert prompt.parse_answer("I think it is HUM", LABELS) is None
    assert prompt.parse_answer("<category>LOC</category>", LABELS) is None
    assert prompt.parse_answer("", LABELS) is None
    # Letter case is forgiven only when exactly one label matches without it.
    assert prompt.parse_answer("abc", ["Abc", "ABC"]) is None
    assert prompt.parse_answer("x", ["X", "x2"]) == "X"
    assert prompt.parse_answer("b", ["B", "b"]) == "b"


# Labels as read from a table: stripped, non-empty; some containing the wrapper tags.
label_strategy = st.one_of(
    st.text(min_size=1, max_size=20).map(str.strip).filter(bool),
    st.sampled_from(["<category>x</category>", "a</category>b", "<label>", "x"]),
)
labels_strategy = st.lists(label_strategy, min_size=1, max_size=6)


@given(
    labels=labels_strategy,
    bare=st.booleans(),
    tag=st.sampled_from(["category", "label", "answer"]),
    pick=st.integers(min_value=0),
)
def test_parse_answer_round_trips_every_label(labels, bare, tag, pick):
    prompt = ClassificationPrompt(output_tag=tag, bare_label=bare)
    label = labels[pick % len(labels)]
    assert prompt.parse_answer(prompt.answer(label), labels) == label


def test_the_short_template_leaves_the_categories_out():
    message = ClassificationPrompt(template="short").user_message("Who wrote Hamlet?", LABELS)
    assert message == (
        "Classify the text.\n"
        "Answer with the category only, wrapped in <category></category>.\n\n"
        "<text>\nWho wrote Hamlet?\n</text>"
    )
    given = ClassificationPrompt(template="short", instruction="Name the answer type.")
    assert given.user_message("Who?", LABELS).startswith("Name the answer type.\n")
    assert ClassificationPrompt(template="short").answer("HUM") == "<category>HUM</category>"


def test_an_unknown_template_is_refused():
    with pytest.raises(TunelabError) as err:
        ClassificationPrompt(template="tiny")
    assert err.value.code == "bad_template"


def test_a_label_set_reads_back_and_a_broken_one_is_named(tmp_path):
    data = tmp_path / "val.jsonl"
    assert label_set_path(data) == tmp_path / "val.labels.json"
    assert read_label_set(data) is None
    label_set_path(data).write_bytes(label_set_bytes(LABELS, ClassificationPrompt()))
    assert read_label_set(data) == sorted(LABELS)
    label_set_path(data).write_text("[1, 2]")
    with pytest.raises(TunelabError) as err:
        read_label_set(data)
    assert err.value.code == "bad_label_set" and "val.labels.json" in err.value.message
