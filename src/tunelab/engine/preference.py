"""Preference pairs for DPO: a prompt, the answer preferred and the one not, as token rows.

The pairs are the data layer's `PreferenceExample`s (OpenAI's preference format, read and
checked by `tunelab.data.preference`). A pair is tokenized as two chat examples through the
model's own template (the prompt with each answer appended), with only the answers trained,
so that each row's trained tokens are exactly its answer. In a batch the chosen rows come
first, then the rejected ones in the same order; both usually share the prompt's tokens,
which `collate` then computes once when every row of the batch starts alike (a system
prompt, a schema).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from tunelab.data.example import ChatExample
from tunelab.data.preference import PreferenceExample
from tunelab.engine.batching import prompt_groups
from tunelab.engine.dataset import Batch, TokenizedExample, collate, tokenize_examples


def chat_examples(example: PreferenceExample) -> tuple[ChatExample, ChatExample]:
    """The prompt followed by each answer; the prompt's own answers are context, not trained."""
    context = tuple(
        {**m, "weight": 0} if m.get("role") == "assistant" else m for m in example.messages
    )
    extra = {"tools": list(example.tools)} if example.tools else {}
    line = example.source_line
    return (
        ChatExample((*context, *example.preferred), source_line=line, extra=extra),
        ChatExample((*context, *example.non_preferred), source_line=line, extra=extra),
    )


@dataclass(frozen=True)
class TokenizedPair:
    chosen: TokenizedExample
    rejected: TokenizedExample

    @property
    def n_tokens(self) -> int:
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)

    @property
    def n_trained(self) -> int:
        return self.chosen.n_trained + self.rejected.n_trained

    @property
    def prompt(self) -> list[int]:
        return self.chosen.prompt


@dataclass
class PairDataset:
    """Tokenized pairs, with what the training loop asks of any data set (see TokenizedDataset)."""

    examples: list[TokenizedPair]
    n_read: int = 0
    n_truncated: int = 0
    # Pairs whose answers truncation cut away entirely (nothing left to compare).
    n_without_trained_tokens: int = 0
    lengths: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = [pair.n_tokens for pair in self.examples]

    def stats(self) -> dict:
        return {
            "n_examples": len(self.examples),
            "n_read": self.n_read,
            "n_truncated": self.n_truncated,
            "n_without_trained_tokens": self.n_without_trained_tokens,
            "total_tokens": sum(self.lengths),
            "trained_tokens": sum(pair.n_trained for pair in self.examples),
        }

    @cached_property
    def prompt_groups(self) -> list[list[int]]:
        return prompt_groups([pair.prompt for pair in self.examples])

    def fingerprint(self) -> str:
        """Identity of the token data: a resumed run must train on the same pairs."""
        digest = hashlib.sha256()
        for pair in self.examples:
            for row in (pair.chosen, pair.rejected):
                digest.update(np.asarray(row.input_ids, dtype=np.int64).tobytes())
                digest.update(np.asarray(row.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


def tokenize_pairs(
    pairs: Sequence[PreferenceExample], tokenizer, max_seq_len: int, path: str | Path | None = None
) -> PairDataset:
    """Render, tokenize and label both answers of every pair; truncate to `max_seq_len`."""
    examples = [example for pair in pairs for example in chat_examples(pair)]
    rows = tokenize_examples(examples, tokenizer, max_seq_len, path, keep_untrained=True)
    kept = [
        TokenizedPair(chosen, rejected)
        for chosen, rejected in zip(rows.examples[::2], rows.examples[1::2], strict=True)
    ]
    usable = [pair for pair in kept if pair.chosen.n_trained and pair.rejected.n_trained]
    truncated = sum(1 for pair in kept if pair.chosen.truncated or pair.rejected.truncated)
    return PairDataset(
        usable,
        n_read=len(pairs),
        n_truncated=truncated,
        n_without_trained_tokens=len(kept) - len(usable),
    )


def collate_pairs(pairs: Sequence[TokenizedPair], pad_id: int, device: torch.device) -> Batch:
    """One batch of 2 × len(pairs) rows: every chosen answer, then every rejected one."""
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, device)
