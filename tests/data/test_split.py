"""Duplicate removal and the stratified split's guarantees."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.data.example import chat
from tunelab.data.split import Duplicates, drop_duplicates, split_indices, train_count


def test_drop_duplicates_keeps_first_copy_and_reports_lines():
    examples = [
        chat("a", "1", source_line=1),
        chat("b", "2", source_line=2),
        chat("a", "1", source_line=3),
        chat("a", "1", "sys", source_line=4),  # a system prompt makes it different
        chat("b", "2", source_line=5),
    ]
    found = Duplicates()
    kept = list(drop_duplicates(examples, found))
    assert [e.source_line for e in kept] == [1, 2, 4]
    assert found.count == 2
    assert found.sample == [{"line": 3, "duplicate_of": 1}, {"line": 5, "duplicate_of": 2}]


def test_duplicate_sample_is_capped():
    found = Duplicates()
    list(drop_duplicates([chat("a", "b", source_line=i) for i in range(1, 21)], found))
    assert found.count == 19
    assert len(found.sample) == 5


def test_ratio_is_respected_per_label():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    train, val = split_indices(labels, 0.8, seed=1)
    train_counts = Counter(labels[i] for i in train)
    assert train_counts == {"a": 40, "b": 24, "c": 16}
    assert len(val) == 20


def test_small_labels_appear_in_train_and_singletons_stay_in_train():
    labels = ["big"] * 20 + ["pair", "pair", "one"]
    train, val = split_indices(labels, 0.9, seed=3)
    train_labels = {labels[i] for i in train}
    val_labels = {labels[i] for i in val}
    assert {"big", "pair", "one"} <= train_labels
    assert "pair" in val_labels  # a label with 2+ examples is in both files
    assert "one" not in val_labels


def test_ratio_one_puts_everything_in_train():
    train, val = split_indices(["x", None, None], 1.0, seed=0)
    assert sorted(train) == [0, 1, 2]
    assert val == []


def test_output_order_is_shuffled_not_grouped_by_label():
    labels = ["a"] * 100 + ["b"] * 100
    train, _ = split_indices(labels, 0.5, seed=0)
    assert [labels[i] for i in train] != sorted(labels[i] for i in train)


@pytest.mark.parametrize("ratio", [0, 1.5, -0.1])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError):
        split_indices(["a"], ratio, seed=0)


def test_train_count_bounds():
    assert train_count(1, 0.5) == 1
    assert train_count(2, 0.99) == 1
    assert train_count(2, 0.01) == 1
    assert train_count(10, 0.8) == 8


labels_lists = st.lists(st.one_of(st.none(), st.sampled_from("abcde")), max_size=200)
ratios = st.floats(min_value=0.05, max_value=1.0)


@settings(max_examples=200, deadline=None)
@given(labels=labels_lists, ratio=ratios, seed=st.integers(0, 2**32))
def test_split_is_a_deterministic_partition_with_every_label_in_train(labels, ratio, seed):
    train, val = split_indices(labels, ratio, seed)
    # A partition: nothing lost, nothing in both files.
    assert sorted(train + val) == list(range(len(labels)))
    assert not set(train) & set(val)
    # Deterministic for a seed.
    assert split_indices(labels, ratio, seed) == (train, val)
    counts = Counter(labels)
    train_labels = Counter(labels[i] for i in train)
    for label, n in counts.items():
        assert train_labels[label] >= 1  # every label appears in train
        if ratio < 1 and n >= 2:
            assert train_labels[label] <= n - 1  # ... and in validation
        # Each label's share is the ratio, up to rounding and those two guarantees.
        assert abs(train_labels[label] - n * ratio) <= 1
    if ratio == 1:
        assert val == []
