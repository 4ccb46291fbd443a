from __future__ import annotations

import pytest

from tunelab.data.example import ChatExample, chat
from tunelab.engine.dataset import (
    IGNORE_INDEX,
    collate,
    read_chat_jsonl,
    tokenize_examples,
)
from tunelab.errors import TunelabError


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode(
        [
            t
            for t, label in zip(example.input_ids, example.labels, strict=True)
            if label != IGNORE_INDEX
        ]
    )


def test_only_assistant_answers_and_their_end_of_turn_are_trained(tokenizer):
    conversation = ChatExample(
        (
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Who wrote Hamlet?"},
            {"role": "assistant", "content": "Shakespeare", "weight": 0},
            {"role": "user", "content": "What do bees make?"},
            {"role": "assistant", "content": "Honey"},
        )
    )
    [example] = tokenize_examples([conversation], tokenizer, 512).examples
    assert trained_text(tokenizer, example) == "Honey<|im_end|>"
    text = tokenizer.decode(example.input_ids)
    assert "Shakespeare" in text and "Who wrote Hamlet?" in text  # present as context


def test_every_weighted_answer_of_a_conversation_is_trained(tokenizer):
    conversation = ChatExample(
        (
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": "Four"},
            {"role": "user", "content": "What do bees make?"},
            {"role": "assistant", "content": "Honey", "weight": 1},
        )
    )
    [example] = tokenize_examples([conversation], tokenizer, 512).examples
    assert trained_text(tokenizer, example) == "Four<|im_end|>Honey<|im_end|>"


def test_examples_with_nothing_to_train_are_dropped_and_counted(tokenizer):
    silent = ChatExample(
        ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello", "weight": 0})
    )
    dataset = tokenize_examples([silent, chat("Hi", "Hello")], tokenizer, 512)
    assert len(dataset.examples) == 1
    assert dataset.stats()["n_without_trained_tokens"] == 1


def test_long_examples_are_truncated_and_counted(tokenizer):
    long_answer = chat("Say many words.", " ".join(["capital of France"] * 40))
    dataset = tokenize_examples([long_answer, chat("Hi", "Hello")], tokenizer, 40)
    assert dataset.stats()["n_truncated"] == 1
    assert max(dataset.lengths) == 40
    # The answer starts before the cut, so the truncated example is still trained on.
    assert len(dataset.examples) == 2


def test_a_template_that_rewrites_past_turns_is_refused(make_tokenizer):
    tokenizer = make_tokenizer()
    # Like reasoning-model templates that drop earlier answers' content once a new turn follows.
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{{ '<|im_start|>assistant\n(earlier)<|im_end|>\n' }}{% else %}"
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    two_turns = ChatExample(
        (
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye"},
        ),
        source_line=7,
    )
    with pytest.raises(TunelabError) as caught:
        tokenize_examples([two_turns], tokenizer, 512, path="train.jsonl")
    assert caught.value.code == "chat_template_not_prefix_stable"
    assert caught.value.location() == "train.jsonl:7"


def test_read_chat_jsonl_keeps_lines_and_reports_bad_ones(tmp_path):
    path = tmp_path / "train.jsonl"
    user = '{"role": "user", "content": "Hi"}'
    path.write_text(
        f'{{"messages": [{user}, {{"role": "assistant", "content": "Yo", "weight": 0}}]}}\n'
        "\n"
        f'{{"messages": [{user}, {{"role": "assistant", "content": "Hello"}}]}}\n',
        encoding="utf-8",
    )
    examples = read_chat_jsonl(path)
    assert [e.source_line for e in examples] == [1, 3]
    assert examples[0].messages[1]["weight"] == 0

    path.write_text(
        '{"messages": []}\n{"messages": [{"role": "user", "content": "Hi"}\n', encoding="utf-8"
    )
    with pytest.raises(TunelabError) as caught:
        read_chat_jsonl(path)
    assert (caught.value.code, caught.value.line) == ("invalid_example", 1)
    path.write_text('{"messages": [{"role": "bot", "content": "Hi"}]}\n', encoding="utf-8")
    with pytest.raises(TunelabError) as caught:
        read_chat_jsonl(path)
    assert "valid role" in caught.value.message


def test_collate_shifts_labels_into_next_token_targets(tokenizer):
    dataset = tokenize_examples(
        [chat("Hi", "Hello"), chat("What is two plus two?", "Four")], tokenizer, 512
    )
    batch = collate(dataset.examples, tokenizer.pad_token_id, device="cpu")
    first = dataset.examples[0]
    n = len(first.input_ids)
    assert batch.input_ids[0, :n].tolist() == first.input_ids
    assert batch.targets[0, : n - 1].tolist() == first.labels[1:]
    assert (batch.targets[0, n - 1 :] == IGNORE_INDEX).all()
    assert batch.n_tokens == sum(dataset.lengths)
    assert batch.n_trained == sum(e.n_trained for e in dataset.examples)
