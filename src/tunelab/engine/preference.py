"""Preference pairs for DPO: a prompt, the answer preferred and the one not, as token rows.

A pair is tokenized as two chat examples through the model's own template (the prompt with
each answer appended), with only the final answer trained, so that each row's trained tokens
are exactly its answer. In a batch the chosen rows come first, then the rejected ones in the
same order; both usually share the prompt's tokens, which `collate` then computes once when
every row of the batch starts alike (a system prompt, a schema).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import orjson
import torch

from tunelab.data.example import ROLES, ChatExample
from tunelab.data.jsonl import iter_lines, open_jsonl
from tunelab.engine.batching import prompt_groups
from tunelab.engine.dataset import Batch, TokenizedExample, collate, tokenize_examples
from tunelab.errors import TunelabError


@dataclass(frozen=True)
class PreferencePair:
    """One preference example, as OpenAI's DPO line holds it: `prompt` is the conversation
    before the answer (its `input.messages`), `chosen`/`rejected` the assistant messages of
    `preferred_output`/`non_preferred_output`."""

    prompt: tuple[dict, ...]
    chosen: dict
    rejected: dict
    tools: list | None = None
    source_line: int | None = None

    def as_chat_examples(self) -> tuple[ChatExample, ChatExample]:
        """The conversation ending with each answer; earlier answers are context, not trained."""
        context = tuple(
            {**m, "weight": 0} if m.get("role") == "assistant" else m for m in self.prompt
        )
        extra = {"tools": self.tools} if self.tools else {}
        return (
            ChatExample((*context, self.chosen), source_line=self.source_line, extra=extra),
            ChatExample((*context, self.rejected), source_line=self.source_line, extra=extra),
        )


def read_preference_jsonl(path: str | Path) -> list[PreferencePair]:
    """Pairs from a JSONL file in OpenAI's preference format (errors name file:line):
    `{"input": {"messages": [...], "tools": [...]}, "preferred_output": [assistant message],
    "non_preferred_output": [assistant message]}`."""
    pairs = []
    with open_jsonl(path) as handle:
        for number, line in iter_lines(handle):
            if line.strip():
                pairs.append(_pair_from_line(line, path, number))
    return pairs


def _pair_from_line(line: bytes, path: str | Path, number: int) -> PreferencePair:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise _bad_pair(path, number, "the line is not JSON") from None
    given = record.get("input") if isinstance(record, dict) else None
    if not isinstance(given, dict) or not isinstance(given.get("messages"), list):
        raise _bad_pair(path, number, 'no "input" with a "messages" list')
    messages = given["messages"]
    if not messages:
        raise _bad_pair(path, number, "input.messages is empty")
    if any(not isinstance(m, dict) or m.get("role") not in ROLES for m in messages):
        raise _bad_pair(path, number, "a message of input.messages has no valid role")
    answers = []
    for key in ("preferred_output", "non_preferred_output"):
        output = record.get(key)
        if not (
            isinstance(output, list)
            and len(output) == 1
            and isinstance(output[0], dict)
            and output[0].get("role") == "assistant"
        ):
            raise _bad_pair(path, number, f'"{key}" must be a list of one assistant message')
        answers.append(output[0])
    tools = given["tools"] if isinstance(given.get("tools"), list) else None
    return PreferencePair(tuple(messages), answers[0], answers[1], tools, number)


def _bad_pair(path: str | Path, number: int, problem: str) -> TunelabError:
    return TunelabError(
        "invalid_preference_example",
        f"line is not a preference example: {problem}",
        hint="check the file with `tunelab validate`",
        path=path,
        line=number,
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
    pairs: Sequence[PreferencePair], tokenizer, max_seq_len: int, path: str | Path | None = None
) -> PairDataset:
    """Render, tokenize and label both answers of every pair; truncate to `max_seq_len`."""
    examples = [example for pair in pairs for example in pair.as_chat_examples()]
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
