"""Per-token log-probabilities of generated answers, as OpenAI's chat completions report them.

Each generated token gets its log-probability and, when asked, the `k` most likely tokens at
its position. They are the model's own log-probabilities: `log_softmax` of the raw logits,
before temperature, top-p and `logit_bias` change what is sampled (as OpenAI reports them),
so an answer's token log-probabilities sum to its log-likelihood as `score` computes it.

A token's bytes are its exact UTF-8 bytes, which for a byte-level BPE (GPT-2, Llama 3,
SmolLM2) can be half a character, and its text those bytes decoded (U+FFFD for half a
character): joining the bytes of an answer's tokens gives its text. A special token (the end
of turn) is named by its own string and has no bytes (`None`): it is no part of the text.
"""

from __future__ import annotations

from functools import cache

import torch

from tunelab.types import TokenLogprob, TopLogprob

MAX_TOP_LOGPROBS = 20  # OpenAI's limit on `top_logprobs`


@cache
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: each printable stand-in character → its byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:  # bytes that print badly are shifted past 255, in order
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


class TokenTexts:
    """Token ids → (text, UTF-8 bytes), remembered per id; one per generation call."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        self._special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        self._known: dict[int, tuple[str, tuple[int, ...] | None]] = {}

    def __call__(self, token_id: int) -> tuple[str, tuple[int, ...] | None]:
        known = self._known.get(token_id)
        if known is None:
            known = self._known[token_id] = self._text_and_bytes(token_id)
        return known

    def _text_and_bytes(self, token_id: int) -> tuple[str, tuple[int, ...] | None]:
        raw = self._tokenizer.convert_ids_to_tokens(token_id)
        if token_id in self._special:  # an end of turn: named, but no bytes of the text
            return str(raw), None
        alphabet = _byte_level_alphabet()
        if self._byte_level and isinstance(raw, str) and all(c in alphabet for c in raw):
            data = bytes(alphabet[c] for c in raw)
        elif isinstance(raw, str) and len(raw) == 6 and raw.startswith("<0x") and raw[-1] == ">":
            data = bytes([int(raw[3:5], 16)])  # SentencePiece's byte fallback
        else:
            data = self._tokenizer.decode([token_id], skip_special_tokens=True).encode()
        return data.decode("utf-8", errors="replace"), tuple(data)


@torch.inference_mode()
def token_logprobs(
    logits: torch.Tensor, tokens: list[int], top: int, texts: TokenTexts
) -> list[TokenLogprob]:
    """Each row's chosen token with its log-probability and the `top` most likely tokens,
    from the raw next-token `logits` (rows × vocabulary)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    chosen = logprobs.gather(-1, torch.tensor(tokens, device=logits.device)[:, None])
    chosen_values = chosen.squeeze(-1).tolist()
    if top > 0:
        best = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
        best_values, best_ids = best.values.tolist(), best.indices.tolist()
    else:
        best_values = best_ids = [[] for _ in tokens]
    return [
        TokenLogprob(
            *texts(token),
            logprob,
            tuple(TopLogprob(*texts(i), v) for i, v in zip(ids, values, strict=True)),
        )
        for token, logprob, ids, values in zip(
            tokens, chosen_values, best_ids, best_values, strict=True
        )
    ]


def bias_matrix(
    biases: list[dict[int, float]], vocabulary: int, device: torch.device
) -> torch.Tensor | None:
    """One row of additive logit biases per sequence (None when no row has any)."""
    if not any(biases):
        return None
    matrix = torch.zeros((len(biases), vocabulary), device=device)
    for row, bias in enumerate(biases):
        for token, value in bias.items():
            matrix[row, token] = value
    return matrix
