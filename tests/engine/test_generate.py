"""Batched generation: identical to one-by-one greedy decoding, stops, limits, streaming."""

from __future__ import annotations

import pytest
import torch

from tunelab.engine.generate import _settled, encode_chat, generate, stream_chat
from tunelab.engine.models import load_base
from tunelab.errors import TunelabError

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "What is the capital of Spain?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "What is two plus two?",
    "Which planet is closest to the sun?",
    "What do bees make?",
]


def conversations() -> list[list[dict]]:
    """Prompts of different lengths, with and without system prompts and earlier turns."""
    found = [[{"role": "user", "content": q}] for q in QUESTIONS]
    found.append([{"role": "system", "content": "Answer briefly."}, found[0][0]])
    found.append([found[1][0], {"role": "assistant", "content": "Rome"}, found[2][0]])
    return found


@pytest.fixture
def model(make_model):
    return make_model().eval()


def test_batched_greedy_equals_one_by_one_greedy(model, tokenizer):
    chats = conversations()
    alone = [generate(model, tokenizer, [c], max_new_tokens=16)[0] for c in chats]

    for batch_size in (3, len(chats)):
        batched = generate(model, tokenizer, chats, max_new_tokens=16, batch_size=batch_size)
        assert batched == alone
    assert len({c.text for c in alone}) > 1  # the prompts really lead to different answers


def test_greedy_matches_transformers_generate(model, tokenizer):
    chat = conversations()[8]
    ours = generate(model, tokenizer, [chat], max_new_tokens=16)[0]

    prompt = torch.tensor([encode_chat(tokenizer, chat)])
    reference = model.generate(
        prompt, max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )[0, prompt.shape[1] :]

    assert ours.text == tokenizer.decode(reference, skip_special_tokens=True)
    assert ours.prompt_tokens == prompt.shape[1] and ours.completion_tokens == 16


def test_max_tokens_ends_with_length(model, tokenizer):
    [completion] = generate(model, tokenizer, conversations()[:1], max_new_tokens=5)
    assert (completion.finish_reason, completion.completion_tokens) == ("length", 5)


def test_a_stop_string_cuts_the_answer_before_it(model, tokenizer):
    chat = conversations()[:1]
    full = generate(model, tokenizer, chat, max_new_tokens=24)[0].text
    stop = full[8:11]
    expected = full[: full.index(stop)]

    [completion] = generate(model, tokenizer, chat, max_new_tokens=24, stop=["zzzz", stop])

    assert (completion.text, completion.finish_reason) == (expected, "stop")
    assert completion.completion_tokens < 24


def test_the_end_of_sequence_token_stops_one_row_only(model, tokenizer):
    chats = conversations()[:4]
    prompt = torch.tensor([encode_chat(tokenizer, chats[0])])
    ids = model.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1] :]
    ids = ids.tolist()
    # Make the 4th token of the first answer the end of sequence: that row stops there.
    eos = ids[3]
    model.generation_config.eos_token_id = eos
    chats_alone = [generate(model, tokenizer, [c], max_new_tokens=12)[0] for c in chats]

    batched = generate(model, tokenizer, chats, max_new_tokens=12, batch_size=4)

    assert batched == chats_alone
    first = batched[0]
    assert first.finish_reason == "stop" and first.completion_tokens == ids.index(eos) + 1
    assert first.text == tokenizer.decode(ids[: ids.index(eos)], skip_special_tokens=True)
    assert any(c.finish_reason == "length" for c in batched[1:])


def test_streaming_yields_the_same_text_and_never_the_stop_string(model, tokenizer):
    chat = conversations()[3]
    full = generate(model, tokenizer, [chat], max_new_tokens=20)[0]
    stop = full.text[10:13]

    for stops, expected in (((), full), ((stop,), None)):
        stream = stream_chat(model, tokenizer, chat, max_new_tokens=20, stop=stops)
        deltas = list(stream)
        if expected is None:
            expected = generate(model, tokenizer, [chat], max_new_tokens=20, stop=stops)[0]
        assert "".join(deltas) == expected.text
        assert stream.completion == expected
        assert len(deltas) > 1


def test_held_back_text_is_a_possible_stop_prefix_or_half_a_character():
    assert _settled("Answer: yes\n\n###", ("\n\n### End",)) == len("Answer: yes")
    assert _settled("Answer: yes", ("STOP",)) == len("Answer: yes")
    assert _settled("caf\ufffd", ()) == 3


def test_sampling_is_reproducible_and_top_p_near_zero_is_greedy(model, tokenizer):
    chats = conversations()[:3]
    greedy = generate(model, tokenizer, chats, max_new_tokens=12)
    sampled = [
        generate(model, tokenizer, chats, max_new_tokens=12, temperature=1.0, seed=7)
        for _ in range(2)
    ]
    narrow = generate(model, tokenizer, chats, max_new_tokens=12, temperature=1.0, top_p=1e-6)

    assert sampled[0] == sampled[1]
    assert sampled[0] != greedy
    assert narrow == greedy


def test_generation_leaves_a_training_model_in_training_mode(make_model, tokenizer):
    model = make_model().train()
    generate(model, tokenizer, conversations()[:1], max_new_tokens=3)
    assert model.training


def test_a_prompt_longer_than_the_context_is_refused(model, tokenizer):
    long = [{"role": "user", "content": "What is the capital of France? " * 40}]
    with pytest.raises(TunelabError) as raised:
        generate(model, tokenizer, [long], max_new_tokens=4)
    assert raised.value.code == "prompt_too_long"


@pytest.mark.parametrize(
    "settings", [{"max_new_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"stop": [""]}]
)
def test_invalid_settings_are_refused(model, tokenizer, settings):
    with pytest.raises(TunelabError) as raised:
        generate(model, tokenizer, conversations()[:1], **{"max_new_tokens": 4, **settings})
    assert raised.value.code == "invalid_generation_settings"


@pytest.mark.slow
def test_smollm2_batched_greedy_equals_one_by_one(smollm2_home):
    model, tokenizer, _ = load_base()
    chats = [
        [{"role": "user", "content": question}]
        for question in (
            "What is the capital of France?",
            "Name three primary colors.",
            "How many legs does a spider have?",
            "What is 12 times 7?",
            "Who wrote Romeo and Juliet?",
            "Translate 'good morning' into Spanish.",
        )
    ]
    alone = [generate(model, tokenizer, [c], max_new_tokens=16)[0] for c in chats]
    batched = generate(model, tokenizer, chats, max_new_tokens=16, batch_size=6)

    assert batched == alone
    assert "Paris" in alone[0].text


LONG_SYSTEM = (
    "You are a helpful assistant. Answer the question in a few words. What is the capital of "
    "France? Paris. What is the capital of Italy? Rome."
)


def test_the_shared_prefix_is_computed_once_and_answers_stay_identical(model, tokenizer):
    from tunelab.engine.generate import PrefixCache, shared_prefix_length

    chats = [
        [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": q}]
        for q in QUESTIONS
    ]
    prompts = [encode_chat(tokenizer, c) for c in chats]
    assert shared_prefix_length(prompts) >= PrefixCache.MIN_TOKENS  # the cache is used
    alone = [
        generate(model, tokenizer, [c], max_new_tokens=16, prefix_cache=False)[0] for c in chats
    ]

    for batch_size in (1, 3, len(chats)):
        cached = generate(model, tokenizer, chats, max_new_tokens=16, batch_size=batch_size)
        assert cached == alone
    assert len({c.text for c in alone}) > 1


def test_shared_prefix_length_leaves_every_prompt_a_token_of_its_own():
    from tunelab.engine.generate import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert shared_prefix_length([[7], [1]]) == 0
