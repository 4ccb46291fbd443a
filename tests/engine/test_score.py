"""Label scoring: each answer's log-likelihood after the prompt, checked against a hand
computation on a tiny model; multi-token answers; answers sharing a prefix."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine.generate import encode_chat
from tunelab.engine.score import answer_tokens, best_answer, score_answers

SYSTEM = "You are a helpful assistant. Answer with the capital only, in one word."
QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Italy?",
    "What is the capital of Spain?",
    "What is the capital of Japan?",
    "Who wrote Hamlet?",
]
# Multi-token answers, two of which share a prefix ("A cow" / "A cow says moo.").
ANSWERS = ["Paris", "Rome", "A cow", "A cow says moo.", "Shakespeare"]


def conversations() -> list[list[dict]]:
    return [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS
    ]


@pytest.fixture
def model(make_model):
    return make_model(seed=3).eval()


def by_hand(model, tokenizer, conversation, answer) -> tuple[float, int]:
    """The answer's log-likelihood from one plain forward pass over prompt + answer."""
    prompt = encode_chat(tokenizer, conversation)
    turn = [*conversation, {"role": "assistant", "content": answer}]
    full = tokenizer.apply_chat_template(turn, tokenize=False).rstrip()
    ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt)] == prompt
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    total = sum(float(logprobs[t - 1, ids[t]]) for t in range(len(prompt), len(ids)))
    return total, len(ids) - len(prompt)


def test_scores_equal_the_hand_computed_log_likelihood_and_pick_its_best(model, tokenizer):
    chats = conversations()
    scores = score_answers(model, tokenizer, chats, ANSWERS, batch_size=4)

    for chat, row in zip(chats, scores, strict=True):
        expected = [by_hand(model, tokenizer, chat, answer) for answer in ANSWERS]
        assert [s.n_tokens for s in row] == [n for _, n in expected]
        assert [s.logprob for s in row] == pytest.approx([t for t, _ in expected], abs=1e-4)
        for normalize in ("sum", "mean"):
            values = [t if normalize == "sum" else t / n for t, n in expected]
            assert best_answer(row, normalize) == values.index(max(values))


def test_answers_are_several_tokens_and_end_with_the_end_of_turn(tokenizer):
    chat = conversations()[0]
    prompt = encode_chat(tokenizer, chat)
    for answer in ANSWERS[2:]:
        tokens = answer_tokens(tokenizer, chat, prompt, answer)
        assert len(tokens) > 2
        assert tokens[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert tokenizer.decode(tokens[:-1]) == answer


def test_answers_sharing_a_prefix_are_told_apart_by_their_end(model, tokenizer):
    chat = conversations()[0]
    prompt = encode_chat(tokenizer, chat)
    short, long = (answer_tokens(tokenizer, chat, prompt, a) for a in ("A cow", "A cow says moo."))
    shared = short[:-1]  # "A cow" before its end-of-turn token
    assert long[: len(shared)] == shared and long[len(shared)] != short[-1]

    [row] = score_answers(model, tokenizer, [chat], ["A cow", "A cow says moo."])
    # The shared tokens count the same in both; the difference is what follows them.
    short_total, _ = by_hand(model, tokenizer, chat, "A cow")
    long_total, _ = by_hand(model, tokenizer, chat, "A cow says moo.")
    assert row[0].logprob == pytest.approx(short_total, abs=1e-4)
    assert row[1].logprob == pytest.approx(long_total, abs=1e-4)
    # Sum: the longer answer pays for every extra token; mean: per token, documented in
    # tunelab.engine.score. Both are what the hand computation gives.
    assert best_answer(row, "sum") == (0 if short_total >= long_total else 1)
    means = [short_total / len(short), long_total / len(long)]
    assert best_answer(row, "mean") == means.index(max(means))


def test_the_shared_prefix_cache_changes_no_score(model, tokenizer):
    chats = conversations()
    cached = score_answers(model, tokenizer, chats, ANSWERS, batch_size=8)
    plain = score_answers(model, tokenizer, chats, ANSWERS, batch_size=1, prefix_cache=False)
    for a, b in zip(cached, plain, strict=True):
        assert [s.logprob for s in a] == pytest.approx([s.logprob for s in b], abs=1e-4)


@pytest.mark.slow
def test_smollm2_label_scores_are_the_same_with_and_without_the_prefix_cache(smollm2_home):
    from tunelab.data.prompts import ClassificationPrompt
    from tunelab.engine.models import load_base

    model, tokenizer, _ = load_base()
    prompt, labels = ClassificationPrompt(), ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    chats = [
        [{"role": "user", "content": prompt.user_message(q, labels)}]
        for q in (
            "What does NASA stand for?",
            "Who wrote Hamlet?",
            "Where is Lima?",
            "How many legs does a spider have?",
        )
    ]
    answers = [prompt.answer(label) for label in labels]
    cached = score_answers(model, tokenizer, chats, answers, batch_size=4)
    plain = score_answers(model, tokenizer, chats, answers, batch_size=1, prefix_cache=False)
    for a, b in zip(cached, plain, strict=True):
        assert [s.logprob for s in a] == pytest.approx([s.logprob for s in b], abs=2e-3)
        assert best_answer(a) == best_answer(b)
