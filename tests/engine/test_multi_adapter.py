"""Many LoRA adapters on one base: each row of a mixed batch answers as its adapter alone."""

from __future__ import annotations

import pytest

from tiny import save_tiny_adapter, save_tiny_model
from tunelab.engine.generate import (
    BASE_ROW,
    DecodeSession,
    Sampling,
    encode_chat,
    generate,
    stream_chat,
)
from tunelab.engine.models import add_adapter, load_base, remove_adapter
from tunelab.engine.score import score_answers

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "What do bees make?"]
CHATS = [[{"role": "user", "content": q}] for q in QUESTIONS]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A tiny base and two LoRA outputs of it whose random weights answer differently."""
    root = tmp_path_factory.mktemp("adapters")
    base = save_tiny_model(root / "base")
    return base, save_tiny_adapter(root / "a", base, 1), save_tiny_adapter(root / "b", base, 2)


def alone(directory, **options) -> list[str]:
    """The answers of a model loaded by itself (a LoRA output merged into its own base)."""
    model, tokenizer, _ = load_base(str(directory))
    return [a.text for a in generate(model, tokenizer, CHATS, max_new_tokens=8, **options)]


def shared(outputs):
    base, first, second = outputs
    model, tokenizer, _ = load_base(str(base))
    model = add_adapter(model, first, "first")
    return add_adapter(model, second, "second"), tokenizer


def test_a_mixed_batch_answers_each_row_as_its_adapter_alone(outputs):
    base, first, second = outputs
    expected = {"first": alone(first), "second": alone(second), BASE_ROW: alone(base)}
    assert expected["first"] != expected["second"] != expected[BASE_ROW]  # the test can fail
    model, tokenizer = shared(outputs)
    names = ["first", "second", BASE_ROW, "second", BASE_ROW, "first"]
    # The same prompts under different adapters: the shared prefix is computed per adapter.
    answers = generate(model, tokenizer, CHATS + CHATS, max_new_tokens=8, adapters=names)
    for row, (name, answer) in enumerate(zip(names, answers, strict=True)):
        assert answer.text == expected[name][row % 3], (row, name)


def test_requests_of_different_adapters_prefilled_together_answer_as_alone(outputs):
    base, first, second = outputs
    expected = {"first": alone(first), "second": alone(second), BASE_ROW: alone(base)}
    model, tokenizer = shared(outputs)
    session = DecodeSession(model, tokenizer)
    names = ["second", BASE_ROW, "first"]
    groups = [
        session.add(
            [encode_chat(tokenizer, chat)], Sampling(max_new_tokens=8), adapters=[name]
        )  # one request each, added apart: one prefill from a prefix computed per adapter
        for chat, name in zip(CHATS, names, strict=True)
    ]
    while session.groups:
        session.step()
    for row, (name, group) in enumerate(zip(names, groups, strict=True)):
        assert group.rows[0].text == expected[name][row], (row, name)


def test_streams_and_scores_name_their_adapter(outputs):
    _, first, _ = outputs
    merged, tokenizer, _ = load_base(str(first))
    model, _ = shared(outputs)
    stream = stream_chat(model, tokenizer, CHATS[1], max_new_tokens=8, adapter="first")
    assert "".join(stream) == alone(first)[1]
    labels = ["Paris", "Rome", "Honey"]
    want = score_answers(merged, tokenizer, CHATS, labels)
    got = score_answers(model, tokenizer, CHATS, labels, adapter="first")
    for row_want, row_got in zip(want, got, strict=True):
        want_logprobs = [s.logprob for s in row_want]
        assert [s.logprob for s in row_got] == pytest.approx(want_logprobs, abs=1e-3)


def test_an_adapter_removed_and_added_again_answers_as_before(outputs):
    second = outputs[2]
    model, tokenizer = shared(outputs)
    remove_adapter(model, "first")
    remove_adapter(model, "second")  # none left: a later adapter must still be applied
    model = add_adapter(model, second, "second")
    answers = generate(model, tokenizer, CHATS, max_new_tokens=8, adapters="second")
    assert [a.text for a in answers] == alone(second)
