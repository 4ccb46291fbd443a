"""Scoring fixed answers by their log-likelihood: classification without generation.

For each conversation and each candidate answer (e.g. every label, wrapped as the model was
trained to answer), the answer's log-likelihood after the prompt is the sum of the
log-probabilities of its tokens, from the first token of the answer through the chat
template's end-of-turn token. The prompt is computed once per conversation (and the prefix
every prompt shares once per call, see `PrefixCache`); the answers then run against its KV
cache, all of them in one batched forward pass.

Length normalisation: `normalize="sum"` (the default) ranks answers by their total
log-likelihood, the probability of the whole answer, which is what greedy decoding
approximates; because the end-of-turn token is part of every answer, labels that share a
prefix ("NUM" and "NUMBER") are told apart: the shorter one must also end there.
`normalize="mean"` divides by the number of answer tokens instead, which removes the bias
towards answers of fewer tokens that an untrained model can show.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tunelab import cores
from tunelab.engine.generate import (
    Conversation,
    KVBatch,
    PrefixCache,
    _device,
    _pad_id,
    adapter_keywords,
    encode_chat,
)
from tunelab.errors import usage_error
from tunelab.types import NORMALIZATIONS, AnswerScore, best_answer

__all__ = ["NORMALIZATIONS", "AnswerScore", "best_answer", "score_answers"]

# Rows (conversation × answer) per forward pass over the answers: bounds the memory the
# repeated prompt caches take (SmolLM2-135M: about 15 MB per row of a 300-token prompt).
ANSWER_ROWS = 64


def answer_tokens(tokenizer, messages: Conversation, prompt: list[int], answer: str) -> list[int]:
    """The tokens of `answer` as the assistant's turn after `prompt`, end-of-turn included.

    Rendered as training renders it: the conversation with the answer, tokenized whole, so
    the answer's tokens are those training labels (trailing template whitespace dropped).
    """
    turn = [*messages, {"role": "assistant", "content": answer}]
    text = tokenizer.apply_chat_template(turn, tokenize=False).rstrip()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids[: len(prompt)] == prompt and len(ids) > len(prompt):
        return ids[len(prompt) :]
    # The prompt's last token merged with the answer's first: tokenize the answer alone.
    prompt_text = tokenizer.decode(prompt, skip_special_tokens=False)
    rest = text[len(prompt_text) :] if text.startswith(prompt_text) else answer
    return tokenizer(rest, add_special_tokens=False)["input_ids"]


def score_answers(
    model: torch.nn.Module,
    tokenizer,
    conversations: Sequence[Conversation],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    prefix_cache: bool = True,
    adapter: str | None = None,
) -> list[list[AnswerScore]]:
    """Every answer's score after every conversation: `[conversation][answer]`; `adapter`:
    the LoRA adapter of a peft `model` that scores (see `tunelab.engine.generate`)."""
    if not answers:
        raise usage_error("invalid_scoring", "there are no answers to score.")
    prompts = [encode_chat(tokenizer, conversation) for conversation in conversations]
    per_batch = max(1, min(batch_size, ANSWER_ROWS // len(answers)))
    was_training = model.training
    model.eval()
    scores: list[list[AnswerScore]] = []
    try:
        with cores.computing() as share:
            names = None if adapter is None else [adapter] * len(prompts)
            prefix = PrefixCache.of(model, prompts, names) if prefix_cache else None
            for begin in range(0, len(prompts), per_batch):
                share.rebalance()
                group = range(begin, min(begin + per_batch, len(prompts)))
                continuations = [
                    [answer_tokens(tokenizer, conversations[i], prompts[i], a) for a in answers]
                    for i in group
                ]
                batch = KVBatch(
                    model,
                    _pad_id(tokenizer),
                    None if names is None else names[begin:][: len(group)],
                )
                last = batch.start([prompts[i] for i in group], prefix)
                scores += _score_group(batch, last, continuations)
    finally:
        model.train(was_training)
    return scores


def _repeated(adapters: list[str] | None, times: int) -> list[str] | None:
    """Each row's adapter for its `times` answers."""
    return None if adapters is None else [name for name in adapters for _ in range(times)]


@torch.inference_mode()
def _score_group(
    batch: KVBatch, last: torch.Tensor, continuations: list[list[list[int]]]
) -> list[list[AnswerScore]]:
    """Score every conversation's answers against the batch's prompt caches at once."""
    n_answers = len(continuations[0])
    rows = [tokens for per_item in continuations for tokens in per_item]
    width = max(len(tokens) for tokens in rows)
    device = _device(batch.model)
    ids = torch.full((len(rows), width), batch.pad_id, dtype=torch.long)
    own_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        own_mask[row, : len(tokens)] = 1
    ids, own_mask = ids.to(device), own_mask.to(device)
    batch.cache.batch_repeat_interleave(n_answers)
    mask = torch.cat([batch.mask.repeat_interleave(n_answers, dim=0), own_mask], dim=-1)
    start = batch.positions[:, -1:].repeat_interleave(n_answers, dim=0) + 1
    positions = start + torch.arange(width, device=device)
    output = batch.model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{batch.cache_keyword: batch.cache},
        **adapter_keywords(_repeated(batch.adapters, n_answers)),
    )
    # Token t of an answer is predicted by the prompt's last position (t = 0) or by the
    # answer's own position t - 1.
    logits = torch.cat(
        [last.repeat_interleave(n_answers, dim=0)[:, None], output.logits[:, :-1].float()], dim=1
    )
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[..., None]).squeeze(-1)
    totals = (logprobs * own_mask).sum(-1).tolist()
    flat = [AnswerScore(total, len(tokens)) for total, tokens in zip(totals, rows, strict=True)]
    return [flat[i : i + n_answers] for i in range(0, len(flat), n_answers)]
