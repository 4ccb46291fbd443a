"""A decode session that rows join and leave between steps: a row that joins a running batch
computes what it computes alone (logits and greedy tokens), whatever its batch mates' lengths,
sampling settings or departures."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from tunelab.engine.generate import DecodeSession, KVBatch, Sampling, encode_chat, generate
from tunelab.engine.kv_merge import decode_cache, join_caches, joinable, left_pad, trim_unused

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Hamlet and when did he write it, and where?",
    "Hi",
    "What do bees make?",
]


@pytest.fixture
def model(make_model):
    return make_model().eval()


def prompts(tokenizer) -> list[list[int]]:
    return [encode_chat(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


def alone(model, tokenizer, prompt: list[int], steps: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens of `prompt` decoded by itself, and the logits of each step."""
    session = DecodeSession(model, tokenizer)
    logits = []
    group = session.add([prompt], Sampling(max_new_tokens=steps))
    session.prefill()
    while not group.done:
        logits.append(session._logits.clone())
        session.step()
    return group.rows[0].tokens, torch.cat(logits)


def step_keeping_logits(session: DecodeSession, logits: dict[int, list[torch.Tensor]]) -> None:
    """Keep each group's next-token logits (by owner), then step the session."""
    offset = 0
    for group in session.groups:
        logits.setdefault(group.owner, []).append(session._logits[offset].clone())
        offset += len(group.active)
    session.step()


def test_left_pad_and_join_stack_rows_at_a_common_length():
    short, long = DynamicCache(), DynamicCache()
    short.update(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4), 0)
    long.update(torch.full((2, 2, 5, 4), 2.0), torch.full((2, 2, 5, 4), 2.0), 0)
    mask = join_caches(short, torch.ones(1, 3, dtype=torch.long), long, torch.ones(2, 5))
    assert short.layers[0].keys.shape == (3, 2, 5, 4)
    assert mask.tolist() == [[0, 0, 1, 1, 1], [1] * 5, [1] * 5]
    assert short.layers[0].keys[0, :, :2].abs().sum() == 0  # the padding is zeros
    assert left_pad(torch.ones(2, 2), 2, -1).shape == (2, 2)


def test_trim_unused_drops_positions_no_row_attends_to():
    cache = DynamicCache()
    cache.update(torch.randn(2, 1, 4, 2), torch.randn(2, 1, 4, 2), 0)
    mask = trim_unused(cache, torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]]))
    assert mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert cache.layers[0].keys.shape[-2] == 3


def test_a_decode_cache_appends_in_place_and_holds_what_concatenation_would():
    cache, plain = decode_cache(), DynamicCache()
    steps = [torch.randn(2, 3, 5, 4), *(torch.randn(2, 3, 1, 4) for _ in range(70))]
    storages = set()
    for index, states in enumerate(steps):
        keys, values = cache.update(states, -states, 0)
        expected, _ = plain.update(states, -states, 0)
        torch.testing.assert_close(keys, expected, rtol=0, atol=0)
        torch.testing.assert_close(values, -expected, rtol=0, atol=0)
        storages.add(keys.data_ptr())
        if index == 30:  # a row leaves: new tensors, copied into new room at the next step
            cache.batch_select_indices(torch.tensor([1]))
            plain.batch_select_indices(torch.tensor([1]))
            steps[31:] = [s[1:] for s in steps[31:]]
    assert len(storages) <= 3  # made at the prefill, after the departure, when the room ran out
    assert joinable(cache)


def test_a_row_joining_mid_decode_computes_what_it_computes_alone(model, tokenizer):
    rows = prompts(tokenizer)
    expected = [alone(model, tokenizer, prompt, 12) for prompt in rows]
    session = DecodeSession(model, tokenizer)
    groups, logits = [], {}
    for index, prompt in enumerate(rows):  # each joins two steps after the one before
        groups.append(session.add([prompt], Sampling(max_new_tokens=12), owner=index))
        session.prefill()
        for _ in range(2):
            step_keeping_logits(session, logits)
    while session.groups:
        step_keeping_logits(session, logits)
    for index, (tokens, steps) in enumerate(expected):
        assert groups[index].rows[0].tokens == tokens
        torch.testing.assert_close(torch.stack(logits[index]), steps, atol=1e-4, rtol=1e-4)


def test_rows_added_between_two_steps_are_prefilled_together_and_compute_what_alone(
    model, tokenizer, monkeypatch
):
    rows = prompts(tokenizer)  # different lengths, one system prompt: a shared prefix
    expected = [alone(model, tokenizer, prompt, 10) for prompt in rows]
    starts, real_start = [], KVBatch.start
    monkeypatch.setattr(
        KVBatch,
        "start",
        lambda self, ps, prefix=None: starts.append((ps, prefix)) or real_start(self, ps, prefix),
    )
    session = DecodeSession(model, tokenizer)
    first = session.add([rows[0]], Sampling(max_new_tokens=10), owner=0)
    session.step()
    later = [
        session.add([p], Sampling(max_new_tokens=10), owner=i) for i, p in enumerate(rows[1:], 1)
    ]
    logits: dict[int, list[torch.Tensor]] = {}
    session.prefill()
    while session.groups:
        step_keeping_logits(session, logits)
    assert [len(ps) for ps, _ in starts] == [1, 3]  # the three later rows in one forward
    assert starts[1][1] is not None and len(starts[1][1]) >= 8  # from their shared prefix
    assert first.rows[0].tokens == expected[0][0]
    for index, group in enumerate(later, 1):
        tokens, steps = expected[index]
        assert group.rows[0].tokens == tokens
        torch.testing.assert_close(torch.stack(logits[index]), steps, atol=1e-4, rtol=1e-4)


def test_a_group_dropped_before_its_prefill_never_runs(model, tokenizer):
    rows = prompts(tokenizer)
    [expected] = generate(model, tokenizer, [[{"role": "user", "content": QUESTIONS[0]}]])
    session = DecodeSession(model, tokenizer)
    kept = session.add(rows[:1], Sampling(max_new_tokens=256))
    gone = session.add(rows[1:3], Sampling(max_new_tokens=256))
    session.drop(gone)
    assert session.rows == 1 and gone.done
    while not kept.done:
        session.step()
    assert kept.rows[0].completion() == expected and gone.rows[0].tokens == []


def test_batch_mates_sampling_and_departures_leave_a_greedy_row_unchanged(model, tokenizer):
    rows = prompts(tokenizer)
    [expected] = generate(model, tokenizer, [[{"role": "user", "content": QUESTIONS[1]}]])
    session = DecodeSession(model, tokenizer)
    sampled = session.add(rows[:1], Sampling(max_new_tokens=3, temperature=1.5, seed=4))
    session.step()
    greedy = session.add(rows[1:2], Sampling(max_new_tokens=256))
    noisy = session.add(rows[2:], Sampling(max_new_tokens=40, temperature=0.9, top_p=0.5))
    session.step()
    session.drop(noisy)  # a client that went away
    while not greedy.done:
        session.step()
    assert sampled.done and greedy.rows[0].completion() == expected


def test_join_refuses_rows_with_and_without_adapters(model):
    with pytest.raises(ValueError):
        KVBatch(model, 0, ["a"]).join(KVBatch(model, 0))
