"""Batch order: length bucketing, prompt grouping, micro-batches."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from tunelab.data.example import ChatExample
from tunelab.engine import train
from tunelab.engine.batching import (
    batches_per_epoch,
    epoch_batches,
    micro_batches,
    prompt_groups,
)


def test_epoch_batches_cover_every_example_once_deterministically():
    lengths = np.random.default_rng(0).integers(5, 300, size=503).tolist()
    batches = epoch_batches(lengths, 8, seed=3, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(503))
    assert len(batches) == 63  # ceil(503 / 8): one step per batch
    assert batches == epoch_batches(lengths, 8, seed=3, epoch=0)
    assert batches != epoch_batches(lengths, 8, seed=3, epoch=1)
    assert max(len(b) for b in batches) == 8


def test_length_bucketing_leaves_little_padding():
    lengths = np.random.default_rng(1).integers(5, 300, size=2000)
    real = int(lengths.sum())

    def padded(batches):
        return sum(len(b) * int(lengths[b].max()) for b in batches)

    bucketed = padded(epoch_batches(lengths.tolist(), 8, seed=0, epoch=0))
    shuffled = padded([list(range(i, min(i + 8, 2000))) for i in range(0, 2000, 8)])
    assert bucketed < 1.05 * real < shuffled


def test_micro_batches_split_a_batch_without_losing_examples():
    lengths = [10, 50, 20, 40, 30]
    parts = micro_batches([0, 1, 2, 3, 4], lengths, 2)
    assert parts == [[1, 3, 4], [2, 0]]
    assert micro_batches([0], lengths, 3) == [[0]]


# Two "schemas" (long prompts that questions follow), as DocSpider's databases are.
SCHEMA_A = list(range(100, 140))
SCHEMA_B = list(range(100, 120)) + list(range(300, 320))  # shares 20 tokens with A


def _question(seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(500, 600, size=6).tolist()


def test_prompt_groups_split_where_prompts_stop_sharing_their_beginning():
    prompts = [(SCHEMA_A if i % 3 else SCHEMA_B) + _question(i) for i in range(30)]
    groups = prompt_groups(prompts)
    assert sorted(sorted(g) for g in groups) == [
        [i for i in range(30) if i % 3 == 0],
        [i for i in range(30) if i % 3],
    ]


def test_prompts_that_differ_after_one_shared_instruction_are_not_grouped():
    """What every prompt shares is computed once in any batch: it makes no group."""
    instruction = list(range(100, 150))
    assert len(prompt_groups([instruction + _question(i) for i in range(10)])) == 10
    assert prompt_groups([]) == []


def test_short_schemas_make_groups_too():
    system = list(range(100, 130))
    short_a, short_b = [200 + i for i in range(20)], [300 + i for i in range(20)]
    prompts = [system + (short_a if i % 2 else short_b) + _question(i) for i in range(12)]
    groups = prompt_groups(prompts)
    assert sorted(sorted(g) for g in groups) == [list(range(0, 12, 2)), list(range(1, 12, 2))]


def test_grouped_batches_cover_every_example_once_and_keep_groups_apart():
    groups = [list(range(0, 20)), list(range(20, 33)), list(range(33, 36)), [36], [37, 38]]
    lengths = np.random.default_rng(2).integers(5, 50, size=39).tolist()
    batches = epoch_batches(lengths, 8, seed=1, epoch=0, groups=groups)
    assert sorted(i for b in batches for i in b) == list(range(39))
    group_of = {i: g for g, members in enumerate(groups) for i in members}
    sizes = {}
    for batch in batches:
        owners = {group_of[i] for i in batch}
        key = "pooled" if owners & {2, 3, 4} else owners.pop()
        sizes.setdefault(key, []).append(len(batch))
    # 20 and 13 do not divide by 8: their leftovers stay in batches of their own group, of
    # nearly equal size; the groups smaller than half a batch (3, 1 and 2) share one batch.
    assert sorted(sizes[0]) == [6, 7, 7] and sorted(sizes[1]) == [6, 7]
    assert sizes["pooled"] == [6]
    assert len(batches) == batches_per_epoch(39, 8, [len(g) for g in groups]) == 6
    assert batches == epoch_batches(lengths, 8, seed=1, epoch=0, groups=groups)
    assert batches != epoch_batches(lengths, 8, seed=1, epoch=1, groups=groups)


def test_a_groups_batches_hold_questions_of_similar_length():
    """The rows after a shared schema are padded to the batch's longest: a group's batches
    are cut from its examples sorted by length, so their lengths do not interleave."""
    lengths = np.random.default_rng(4).integers(20, 200, size=43)
    batches = epoch_batches(lengths.tolist(), 8, seed=2, epoch=0, groups=[list(range(43))])
    assert sorted(len(b) for b in batches) == [7, 7, 7, 7, 7, 8]
    spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in pairwise(spans))


def test_batches_per_epoch_without_groups_rounds_up():
    assert batches_per_epoch(39, 8) == 5 == len(epoch_batches([10] * 39, 8, seed=0, epoch=0))


def _two_schemas(examples):
    """The examples behind one of two long system prompts, alternately."""
    schemas = [
        "Answer briefly. Collections: capitals(country, city); writers(name, work); "
        "animals(name, legs, sound)",
        "Answer briefly. Collections: planets(name, order); foods(name, maker); "
        "colors(thing, color)",
    ]
    return [
        ChatExample(
            ({"role": "system", "content": schemas[i % 2]}, *e.messages), source_line=e.source_line
        )
        for i, e in enumerate(examples)
    ]


@pytest.mark.parametrize("grouping", ["on", "off"])
def test_group_by_prompt_trains_on_batches_that_share_their_schema(
    grouping, tmp_path, monkeypatch, tokenizer, make_model, examples, fast_config
):
    """With grouping, each step's batch holds one schema's questions, whose prompt is then
    computed once (Batch.shared_prefix covers the schema); without it, batches mix them."""
    from tunelab.engine import objectives

    shared = []

    def recording_collate(*args, **kwargs):
        batch = real_collate(*args, **kwargs)
        shared.append(batch.shared_prefix)
        return batch

    real_collate = objectives.collate
    monkeypatch.setattr(objectives, "collate", recording_collate)
    data = _two_schemas(examples * 2)  # 24 examples, 12 behind each schema
    config = fast_config(batch_size=5, n_epochs=1, group_by_prompt=grouping)
    result = train(make_model(), tokenizer, data, None, config, tmp_path / grouping)
    # Grouped, each schema's 12 make batches of 4, 4 and 4 (one epoch: 6 steps); mixed,
    # the 24 make 5 batches of up to 5.
    assert result.status == "succeeded" and result.step == (6 if grouping == "on" else 5)
    assert result.dataset["train"]["n_examples"] == 24
    schema_tokens = len(tokenizer("Answer briefly. Collections: planets(name, order)")["input_ids"])
    if grouping == "on":
        assert min(shared) > schema_tokens
    else:
        assert min(shared) < schema_tokens
