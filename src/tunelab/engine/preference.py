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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tunelab.data.example import ChatExample
from tunelab.data.preference import PreferenceExample
from tunelab.engine.dataset import (
    Batch,
    TokenizedExample,
    TrainingSet,
    collate,
    tokenize_examples,
)


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

    def identity(self) -> Iterator[bytes]:
        yield from self.chosen.identity()
        yield from self.rejected.identity()


class PairDataset(TrainingSet[TokenizedPair]):
    """Tokenized pairs for DPO (`n_without_trained_tokens`: pairs whose answers truncation
    cut away entirely, nothing left to compare)."""


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
