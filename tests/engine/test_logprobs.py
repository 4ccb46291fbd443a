"""Token log-probabilities and logit biases in generation: the log-probabilities are the
model's own (they sum to the answer's log-likelihood as `score_answers` computes it), the
biases change what is generated, row by row."""

from __future__ import annotations

import pytest

from tunelab.engine.generate import generate, stream_chat
from tunelab.engine.score import score_answers
from tunelab.errors import TunelabError

CHAT = [{"role": "user", "content": "What do bees make?"}]
CHATS = [CHAT, [{"role": "user", "content": "Who wrote Hamlet?"}]]


@pytest.fixture
def model(make_model):
    return make_model().eval()


def end_of_turn(tokenizer) -> int:
    return tokenizer.convert_tokens_to_ids("<|im_end|>")


def answer_ending_its_turn(model, tokenizer):
    """A greedy answer of a few tokens that ends with the end of turn, and the bias of the
    end of turn's logit that makes it end there (found by raising it a little at a time; the
    log-probs stay the unbiased model's)."""
    for bias in range(12):
        [answer] = generate(
            model,
            tokenizer,
            [CHAT],
            max_new_tokens=12,
            logprobs=2,
            logit_bias={end_of_turn(tokenizer): bias},
        )
        if answer.finish_reason == "stop" and answer.completion_tokens >= 3:
            return answer, bias
    raise AssertionError("no bias made the answer end its turn")


def test_logprobs_sum_to_the_answers_log_likelihood_as_scored(model, tokenizer):
    answer, _ = answer_ending_its_turn(model, tokenizer)
    [[score]] = score_answers(model, tokenizer, [CHAT], [answer.text])

    assert score.n_tokens == answer.completion_tokens == len(answer.logprobs)
    assert sum(t.logprob for t in answer.logprobs) == pytest.approx(score.logprob, abs=1e-4)
    last = answer.logprobs[-1]
    assert (last.token, last.bytes) == ("<|im_end|>", None)


def test_each_token_has_its_top_alternatives_and_its_bytes(model, tokenizer):
    [answer] = generate(model, tokenizer, [CHATS[1]], max_new_tokens=10, logprobs=5)

    assert answer.finish_reason == "length" and len(answer.logprobs) == 10
    for token in answer.logprobs:
        values = [top.logprob for top in token.top_logprobs]
        assert len(values) == 5 and values == sorted(values, reverse=True)
        assert token.top_logprobs[0].token == token.token  # greedy takes the likeliest
        assert token.logprob == pytest.approx(values[0]) and token.logprob <= 0
    joined = bytes(b for token in answer.logprobs for b in token.bytes)
    assert joined.decode(errors="replace") == answer.text


def test_without_logprobs_answers_carry_none_and_top_zero_lists_none(model, tokenizer):
    plain = generate(model, tokenizer, CHATS, max_new_tokens=6)
    chosen_only = generate(model, tokenizer, CHATS, max_new_tokens=6, logprobs=0)

    assert all(answer.logprobs is None for answer in plain)
    assert [a.text for a in chosen_only] == [a.text for a in plain]
    assert all(not t.top_logprobs for a in chosen_only for t in a.logprobs)


def test_streamed_deltas_carry_the_logprobs_of_their_tokens(model, tokenizer):
    answer, bias = answer_ending_its_turn(model, tokenizer)
    stream = stream_chat(
        model,
        tokenizer,
        CHAT,
        max_new_tokens=12,
        logprobs=2,
        logit_bias={end_of_turn(tokenizer): bias},
    )
    deltas = list(stream)

    assert "".join(deltas) == answer.text
    assert tuple(t for delta in deltas for t in delta.logprobs) == answer.logprobs
    assert deltas[-1] == "" and deltas[-1].logprobs[-1].token == "<|im_end|>"
    assert stream.completion == answer


def test_a_banned_token_never_comes_and_a_forced_one_always_does(model, tokenizer):
    [plain] = generate(model, tokenizer, [CHAT], max_new_tokens=8, logprobs=0)
    first = tokenizer.encode(plain.text)[0]

    [banned] = generate(model, tokenizer, [CHAT], max_new_tokens=8, logit_bias={first: -100})
    forced_id = tokenizer.convert_tokens_to_ids("Ġcow")
    [forced] = generate(
        model, tokenizer, [CHAT], max_new_tokens=4, logprobs=0, logit_bias={forced_id: 100}
    )

    assert banned.text != plain.text and first not in tokenizer.encode(banned.text)
    assert forced.text == " cow" * 4
    # the log-probs stay the model's own: a forced token is not made certain
    assert all(t.logprob < -0.5 for t in forced.logprobs)


def test_rows_of_one_batch_keep_their_own_biases(model, tokenizer):
    biases = [{tokenizer.convert_tokens_to_ids("Ġcow"): 100}, {}]
    alone = [
        generate(model, tokenizer, [chat], max_new_tokens=5, logit_bias=bias)[0]
        for chat, bias in zip(CHATS, biases, strict=True)
    ]

    together = generate(model, tokenizer, CHATS, max_new_tokens=5, logit_bias=biases)

    assert together == alone and together[0].text != together[1].text


@pytest.mark.parametrize(
    "settings",
    [{"logprobs": 21}, {"logprobs": -1}, {"logit_bias": {3: 101}}, {"logit_bias": {10**6: 1}}],
)
def test_out_of_range_logprobs_and_biases_are_refused(model, tokenizer, settings):
    with pytest.raises(TunelabError) as caught:
        generate(model, tokenizer, [CHAT], max_new_tokens=2, **settings)
    assert caught.value.code == "invalid_generation_settings"
